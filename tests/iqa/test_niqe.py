"""NIQE offline: the published algorithm with the official pristine parameters."""

from __future__ import annotations

import numpy as np
import pytest

from osdhuman.iqa import get_metric
from osdhuman.iqa.filters import aggd_fit, imresize_matlab
from osdhuman.iqa.niqe import load_pristine_params, niqe_window


def test_bundled_parameters_are_the_official_ones():
    p = load_pristine_params()
    assert p["mu"].shape == (36,) and p["cov"].shape == (36, 36) and p["window"].shape == (7, 7)
    assert np.allclose(p["cov"], p["cov"].T)
    assert np.linalg.eigvalsh(p["cov"]).min() > 0  # a proper covariance
    assert np.isclose(p["window"].sum(), 1.0)
    # the official window is fspecial('gaussian', 7, 7/6); 'pyiqa' is it rounded to float32
    assert np.abs(niqe_window("pyiqa") - p["window"]).max() < 1e-8


def test_niqe_agrees_with_pyiqa_given_the_same_parameters(photos, tools, tmp_path):
    """pyiqa's NIQE loads its parameters from a .mat (``pretrained_model_path``); we write that
    file from our bundled npz so both run on identical parameters, with the float32-rounded
    window pyiqa builds (our default, ``window='pyiqa'``)."""
    pyiqa = pytest.importorskip("pyiqa")
    scipy_io = pytest.importorskip("scipy.io")
    p = load_pristine_params()
    mat = tmp_path / "niqe_modelparameters.mat"
    scipy_io.savemat(mat, {"mu_prisparam": p["mu"][None], "cov_prisparam": p["cov"]})
    ref = pyiqa.create_metric("niqe", device="cpu", pretrained_model_path=str(mat))
    ours = get_metric("niqe", backend="offline")
    assert ours.record.settings["window"] == "pyiqa"
    cases = [("astronaut", 0, 50), ("coffee", 1.0, 75), ("chelsea", None, None)]
    for name, blur, q in cases:
        arr = photos[name] if q is None else tools.degrade(photos[name], blur, q)
        x = tools.to_tensor(arr)
        a, b = ours(arr[None]).item(), ref(x).item()  # ours reads the 8-bit array, pyiqa the tensor
        assert ours(x).item() == pytest.approx(a, abs=1e-12)  # and the same tensor
        assert abs(a - b) < 1e-3, (name, a, b)


def test_niqe_ranks_degradations_and_batches(photos, tools):
    m = get_metric("niqe", backend="offline")
    img = photos["astronaut"]
    x = np.stack([img, tools.degrade(img, 1.0, 95), tools.degrade(img, 2.5, 95)])  # (3, H, W, 3) uint8
    s = m(x)
    assert s.shape == (3,) and s.dtype == np.float64 and np.isfinite(s).all()
    assert s[0] < s[1] < s[2]  # more blur, less natural
    # batching does not change an image's score
    np.testing.assert_allclose(m(x[1:2]), s[1:2], rtol=0, atol=1e-9)
    # float input in [0, 1] is the same image
    np.testing.assert_allclose(m(x.astype(np.float32) / 255), s, rtol=0, atol=1e-12)
    # too small for one 96x96 block: NaN, not an exception
    assert np.isnan(m(np.random.default_rng(0).random((1, 64, 200, 3)))).all()
    # the BT.601 luma is another plane of the same photos: close to, not equal to, the YIQ one
    b = get_metric("niqe", backend="offline", luma="bt601")(x)
    assert b[0] < b[1] < b[2] and 0 < np.abs(b - s).max() < 0.5
    with pytest.raises(ValueError, match="luma"):
        get_metric("niqe", backend="offline", luma="lab")


def test_aggd_fit_recovers_known_shapes():
    """Moment matching on samples of generalised Gaussians of known shape (symmetric:
    sigma_left == sigma_right) and of an asymmetric Laplacian."""
    stats = pytest.importorskip("scipy.stats")
    rows, truth = [], []
    for alpha in (0.6, 1.0, 2.0, 3.0):
        rows.append(stats.gennorm.rvs(alpha, size=200_000, random_state=3))
        truth.append(alpha)
    a, sl, sr = aggd_fit(np.stack(rows))
    np.testing.assert_allclose(a, truth, rtol=0.05)
    np.testing.assert_allclose(sl / sr, np.ones(4), atol=0.02)
    rng = np.random.default_rng(0)
    asym = np.where(rng.random(200_000) < 0.5, -rng.exponential(1.0, 200_000), rng.exponential(3.0, 200_000))
    _, sl, sr = aggd_fit(asym[None])
    assert (sr / sl).item() == pytest.approx(3.0, rel=0.05)


def test_imresize_matlab_half():
    """MATLAB imresize(I, 0.5): constants stay constant, a linear ramp stays linear away from
    the border, and the result matches pyiqa's port of MATLAB's imresize."""
    c = np.full((1, 40, 60), 7.5)
    np.testing.assert_allclose(imresize_matlab(c, 0.5), np.full((1, 20, 30), 7.5))
    ramp = np.tile(np.arange(64, dtype=np.float64), (1, 16, 1))  # value = column index
    out = imresize_matlab(ramp, 0.5)[0, 0]
    # output pixel j covers input columns 2j, 2j+1: centre 2j + 0.5
    np.testing.assert_allclose(out[3:-3], np.arange(3, 29) * 2 + 0.5, atol=1e-9)
    torch = pytest.importorskip("torch")
    matlab_utils = pytest.importorskip("pyiqa.matlab_utils")
    x = np.random.default_rng(0).random((2, 50, 70)) * 255
    ref = matlab_utils.imresize(torch.from_numpy(x)[:, None], scale=0.5, antialiasing=True)[:, 0]
    np.testing.assert_allclose(imresize_matlab(x, 0.5), ref.to(torch.float64).numpy(), rtol=0, atol=1e-3)
