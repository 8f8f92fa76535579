"""BRISQUE and PIQE offline, Laplacian variance."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from osdhuman.iqa import ImageBatch, get_metric


def _package_brisque():
    """The `brisque` package's own scorer. Its scale_features breaks on NumPy 2 (features are
    1-element arrays); this shim flattens them and changes nothing else."""
    brisque = pytest.importorskip("brisque")

    class Ref(brisque.BRISQUE):
        def scale_features(self, features):
            return super().scale_features(np.array([np.ravel(v)[0] for v in features], dtype=np.float64))

    return Ref(url=False)


def test_brisque_offline_matches_the_brisque_package(photos, tools):
    """Same features, same SVR as the `brisque` package's own scorer. On heavy JPEG the
    package's MSCN in flat 8x8 blocks is rounding noise whose sign drives the AGGD fits; ours
    sets it to exactly 0 there, so JPEG images agree less closely."""
    ref = _package_brisque()
    m = get_metric("brisque", backend="offline")
    assert m.record.lower_better and m.record.settings == {"model": "brisque-package"}
    sharp, blurred = photos["astronaut"], tools.degrade(photos["astronaut"], 2.0, 95)
    jpeg = tools.degrade(photos["chelsea"], 0, 30)
    for arr, tol in ((sharp, 0.02), (blurred, 0.02), (jpeg, 0.5)):
        ours = m(arr[None]).item()
        theirs = float(ref.score(arr))
        assert ours == pytest.approx(theirs, abs=tol), (ours, theirs)
    s = m(np.stack([sharp, blurred]))
    assert s[0] < s[1] - 10  # sharper is better (lower)


def test_brisque_model_ranges_are_read_without_executing_pickles(tmp_path):
    from osdhuman.iqa.brisque import _NoGlobals

    evil = pickle.dumps(print)  # a global reference: refused
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NoGlobals(io.BytesIO(evil)).load()
    ok = pickle.dumps({"min_": [0.1, 0.2], "max_": [1.0, 2.0]})
    assert _NoGlobals(io.BytesIO(ok)).load()["max_"] == [1.0, 2.0]


def _pyiqa_piqe_blocks(ref, x):
    """pyiqa's score and its block flags (activity, noticeable distortion, noise), read from
    its per-pixel masks at one pixel per 16x16 block."""
    score = ref(x).item()
    masks = ref.net.get_masks()
    grid = [masks[k][0, 0, ::16, ::16].numpy() > 0.5
            for k in ("activity_mask", "noticeable_artifacts_mask", "noise_mask")]
    return score, grid


def _piqe_cases(photos, tools):
    """Real photos, JPEG q30 and blurred copies, at whole-block sizes and at sizes that are
    not multiples of 16 (pyiqa pads right / bottom by ``size % 16``, symmetric)."""
    img = photos["astronaut"]
    for arr in photos.values():
        yield arr
        yield tools.degrade(arr, 2.0, 90)
        yield tools.degrade(arr, 0, 30)
    for h, w in ((75, 100), (61, 130), (200, 211), (47, 33), (384, 381)):
        src = np.ascontiguousarray(img[:h, :w])
        yield src
        yield tools.degrade(src, 0, 30)


def test_piqe_equals_pyiqa_block_for_block(photos, tools):
    """Our float32 MSCN repeats pyiqa's bit for bit, so every block lands on the same side of
    every threshold: all block flags equal, scores within 1e-4 (only the float32 vs float64
    block statistics and pooling differ)."""
    pyiqa = pytest.importorskip("pyiqa")
    from osdhuman.iqa.piqe import piqe_blocks

    ref = pyiqa.create_metric("piqe", device="cpu")
    m = get_metric("piqe", backend="offline")
    diffs = []
    for arr in _piqe_cases(photos, tools):
        arr = np.ascontiguousarray(arr)
        theirs, grid = _pyiqa_piqe_blocks(ref, tools.to_tensor(arr))
        diffs.append(abs(m(arr[None]).item() - theirs))
        blocks = piqe_blocks(ImageBatch.of(arr[None]).yiq())
        bh, bw = grid[0].shape
        for ours, want in zip((blocks.active, blocks.impaired, blocks.noisy), grid):
            assert np.array_equal(ours[0, :bh, :bw], want), arr.shape
    assert max(diffs) < 1e-4, diffs


def test_piqe_scores_blocking_and_odd_sizes(photos, tools):
    m = get_metric("piqe", backend="offline")
    s = m(np.stack([photos["coffee"], tools.degrade(photos["coffee"], 0, 30)]))
    assert s[1] > s[0]  # JPEG blocking is distortion (higher = worse)
    odd = np.ascontiguousarray(photos["chelsea"][:203, :117])[None]  # padded to whole blocks
    assert 0 <= m(odd).item() <= 100
    assert m(odd).item() == m(odd.astype(np.float32) / 255).item()  # the same image as float


def test_piqe_symmetric_pad_repeats_the_edge_and_reflects_again():
    from osdhuman.iqa.piqe import _mirror_index

    assert _mirror_index(4, 3).tolist() == [0, 1, 2, 3, 3, 2, 1]  # edge repeated, then mirrored
    assert _mirror_index(4, 9).tolist() == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 3]  # and reflected again


def test_laplacian_var_is_opencvs(photos, tools):
    cv2 = pytest.importorskip("cv2")
    arrs = [photos["coffee"], tools.degrade(photos["coffee"], 2.0, 90)]
    m = get_metric("laplacian_var")
    got = m(np.stack(arrs))
    for g, arr in zip(got, arrs):
        want = cv2.Laplacian(cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
        assert g == pytest.approx(want, rel=1e-9)
    assert got[1] < got[0] / 4  # blur removes most of the Laplacian energy
    assert np.array_equal(m(tools.to_tensor(*arrs)), got)  # float input is rounded to the same 8-bit levels


def test_brisque_without_its_model_package_is_unavailable(monkeypatch, tmp_path):
    import importlib.util

    from osdhuman.iqa import MetricUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no pyiqa weights either
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "brisque" else real(name, *a))
    with pytest.raises(MetricUnavailable, match="pip install brisque") as e:
        get_metric("brisque")
    assert "brisque_svm_weights.pth" in str(e.value)  # and what pyiqa would need instead
