"""get_metric: the table drives backends, records, and 'unavailable' messages."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from osdhuman.iqa import METRICS, PRESETS, MetricRecord, MetricUnavailable, get_metric
from osdhuman.iqa.fid import frechet_distance


@pytest.fixture()
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    return tmp_path / "th" / "hub"


def test_offline_metrics_follow_the_table(empty_torch_home):
    x = np.random.default_rng(0).random((3, 112, 120, 3), dtype=np.float32)  # (N, H, W, 3) in [0, 1]
    t = torch.from_numpy(x).permute(0, 3, 1, 2)  # the same images as a torch (N, 3, H, W)
    for name, spec in METRICS.items():
        if spec.offline is None:
            continue
        m = get_metric(name, backend="offline")
        r = m.record
        assert isinstance(r, MetricRecord) and r.backend == "offline"
        assert (r.name, r.reference, r.lower_better) == (name, spec.reference, spec.lower_better)
        assert r.settings == spec.offline_settings
        out = m(x, x[:, :, ::-1]) if r.reference == "fr" else m(x)
        assert isinstance(out, np.ndarray) and out.shape == (3,) and out.dtype == np.float64
        same = m(t, t.flip(-1)) if r.reference == "fr" else m(t)
        np.testing.assert_array_equal(same, out, err_msg=name)
        # asked for a GPU, the offline backend still runs on the CPU and its record says so
        assert get_metric(name, backend="offline", device="cuda").record.device == r.device == "cpu"
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.name = "other"  # frozen
    for preset in PRESETS.values():
        assert set(preset) <= set(METRICS)


def test_unavailable_names_the_exact_file_and_place(empty_torch_home):
    with pytest.raises(MetricUnavailable) as e:
        get_metric("musiq")
    msg = str(e.value)
    assert "musiq_koniq_ckpt-e95806b9.pth" in msg and str(empty_torch_home / "pyiqa") in msg
    with pytest.raises(MetricUnavailable, match="alexnet-owt-7be5be79.pth"):
        get_metric("lpips", backend="pyiqa")
    with pytest.raises(MetricUnavailable, match="no offline implementation"):
        get_metric("clipiqa", backend="offline")
    with pytest.raises(KeyError):
        get_metric("nosuch")
    with pytest.raises(ValueError, match="unknown settings"):
        get_metric("niqe", backend="offline", bogus=1)
    # auto falls back to ours where pyiqa's weights are missing, and says so in the record
    assert get_metric("niqe").record.backend == "offline"
    assert get_metric("brisque").record.backend == "offline"


def test_auto_uses_pyiqa_when_its_weights_are_on_disk(empty_torch_home, photos, tools):
    """With pyiqa's NIQE parameter file in pyiqa's cache, backend='auto' runs pyiqa (and only
    reads that local file); both backends agree."""
    pytest.importorskip("pyiqa")
    scipy_io = pytest.importorskip("scipy.io")
    from osdhuman.iqa.niqe import load_pristine_params

    p = load_pristine_params()
    (empty_torch_home / "pyiqa").mkdir(parents=True)
    mat = empty_torch_home / "pyiqa" / "niqe_modelparameters.mat"
    scipy_io.savemat(mat, {"mu_prisparam": p["mu"][None], "cov_prisparam": p["cov"]})
    m = get_metric("niqe")
    assert m.record.backend == "pyiqa" and m.record.settings["weights"] == str(mat)
    x = photos["chelsea"][None]  # numpy uint8: pyiqa gets it as a tensor
    assert m(x).item() == pytest.approx(get_metric("niqe", backend="offline")(x).item(), abs=1e-3)


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    shift = np.arange(8) / 4.0
    # same covariance, shifted mean: the trace term vanishes, FID = |shift|^2
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), abs=1e-6)
    # scaled copy: FID = Tr(S) (1 - s)^2 for b = s a (zero-mean part)
    s = 2.0
    a0 = a - a.mean(0)
    expected = np.trace(np.cov(a0, rowvar=False)) * (1 - s) ** 2
    assert frechet_distance(a0, s * a0) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], a)
    # both ways to the matrix square root's trace agree with SciPy's sqrtm
    linalg = pytest.importorskip("scipy.linalg")
    x, y = rng.normal(size=(30, 12)), rng.normal(size=(25, 12)) * 1.5 + 0.3
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    d = x.mean(0) - y.mean(0)
    ref = d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(linalg.sqrtm(s1 @ s2)))
    for method in ("gram", "eigh", "auto"):
        assert frechet_distance(x, y, method) == pytest.approx(ref, rel=1e-8)
    # fewer images than dimensions (rank-deficient covariances): the two ways still agree
    x, y = rng.normal(size=(5, 40)), rng.normal(size=(7, 40))
    assert frechet_distance(x, y, "gram") == pytest.approx(frechet_distance(x, y, "eigh"), rel=1e-6)

