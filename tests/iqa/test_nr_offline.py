"""BRISQUE and PIQE offline, Laplacian variance."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from osdhuman.iqa import get_metric


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
        ours = m(tools.to_tensor(arr)).item()
        theirs = float(ref.score(arr))
        assert ours == pytest.approx(theirs, abs=tol), (ours, theirs)
    s = m(tools.to_tensor(sharp, blurred))
    assert s[0] < s[1] - 10  # sharper is better (lower)


def test_brisque_model_ranges_are_read_without_executing_pickles(tmp_path):
    from osdhuman.iqa.brisque import _NoGlobals

    evil = pickle.dumps(print)  # a global reference: refused
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NoGlobals(io.BytesIO(evil)).load()
    ok = pickle.dumps({"min_": [0.1, 0.2], "max_": [1.0, 2.0]})
    assert _NoGlobals(io.BytesIO(ok)).load()["max_"] == [1.0, 2.0]


def test_piqe_agrees_with_pyiqa(photos, tools):
    """PIQE thresholds block statistics (variance > 0.1, segment std < 0.1); computing in
    float32 as pyiqa does keeps every block on the same side of them: agreement to 1e-3."""
    pyiqa = pytest.importorskip("pyiqa")
    ref = pyiqa.create_metric("piqe", device="cpu")
    m = get_metric("piqe", backend="offline")
    diffs = []
    for img in photos.values():
        for arr in (img, tools.degrade(img, 2.0, 90), tools.degrade(img, 0, 30)):
            x = tools.to_tensor(arr)
            diffs.append(abs(m(x).item() - ref(x).item()))
    assert max(diffs) < 1e-3, diffs


def test_piqe_pads_like_pyiqa_on_sizes_that_are_not_whole_blocks(photos, tools):
    """pyiqa pads right and bottom by ``size % 16`` (symmetric), not up to a multiple of 16:
    a 100x75 image is padded to 104x86 and scored on its 6x5 whole blocks."""
    pyiqa = pytest.importorskip("pyiqa")
    import torch

    from osdhuman.iqa.piqe import symmetric_pad

    x = torch.arange(12.0).view(1, 1, 3, 4)
    assert symmetric_pad(x, 3, 2)[0, 0, -1].tolist() == [4, 5, 6, 7, 7, 6, 5]  # edge repeated, rows mirrored
    assert symmetric_pad(x, 9, 0)[0, 0, 0].tolist() == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 3]
    ref = pyiqa.create_metric("piqe", device="cpu")
    m = get_metric("piqe", backend="offline")
    img = photos["astronaut"]
    diffs = []
    for h, w in ((75, 100), (61, 130), (200, 211), (47, 33), (512, 509)):
        src = np.ascontiguousarray(np.resize(img, (max(h, 1), max(w, 1), 3))) if h > 384 or w > 384 else img[:h, :w]
        for arr in (src, tools.degrade(np.ascontiguousarray(src), 0, 30)):
            xt = tools.to_tensor(np.ascontiguousarray(arr))
            diffs.append(abs(m(xt).item() - ref(xt).item()))
    assert max(diffs) < 1e-3, diffs


def test_laplacian_var_is_opencvs(photos, tools):
    cv2 = pytest.importorskip("cv2")
    arrs = [photos["coffee"], tools.degrade(photos["coffee"], 2.0, 90)]
    from osdhuman.iqa.sharpness import laplacian_var_torch

    x = tools.to_tensor(*arrs)
    got = get_metric("laplacian_var")(x)
    for g, t, arr in zip(got, laplacian_var_torch(x), arrs):  # the accelerator path, run on CPU
        want = cv2.Laplacian(cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
        assert g.item() == pytest.approx(want, rel=1e-9)
        assert t.item() == pytest.approx(want, rel=1e-9)
    assert got[1] < got[0] / 4  # blur removes most of the Laplacian energy


def test_brisque_without_its_model_package_is_unavailable(monkeypatch, tmp_path):
    import importlib.util

    from osdhuman.iqa import MetricUnavailable

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no pyiqa weights either
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "brisque" else real(name, *a))
    with pytest.raises(MetricUnavailable, match="pip install brisque") as e:
        get_metric("brisque")
    assert "brisque_svm_weights.pth" in str(e.value)  # and what pyiqa would need instead
