"""PSNR-Y and SSIM-Y: the paper's definitions (pyiqa, test_y_channel=True, color_space='ycbcr')."""

from __future__ import annotations

import numpy as np
import pytest

from osdhuman.iqa import get_metric
from osdhuman.iqa.color import y_bt601


def test_psnr_ssim_y_agree_with_pyiqa_on_real_photo_pairs(photos, tools):
    """Ours agrees with pyiqa's ``psnr`` / ``ssim`` to 1e-4 on real photos vs blur+JPEG copies.

    Where these definitions depart from textbook SSIM (Wang et al. 2004) and PSNR, on purpose,
    because the paper's numbers were produced this way (docs/reference.md §evaluation):
      - Y is BT.601 studio-swing luma 16 + 65.481 R + 128.553 G + 24.966 B, not the RGB mean;
      - SSIM rounds Y to integer 0-255 levels first (PSNR does not round);
      - SSIM keeps only the 'valid' region of the 11x11 Gaussian filter (no padding), and does
        not downsample large images as the original MATLAB code does;
      - the contrast-structure term is clamped at 0 before multiplying by the luminance term,
        so anti-correlated images score 0, not a negative SSIM;
      - PSNR adds eps = 1e-8 to the MSE on the [0, 1] scale (identical images give 80 dB).
    """
    pyiqa = pytest.importorskip("pyiqa")
    kw = dict(test_y_channel=True, color_space="ycbcr")
    ref_psnr = pyiqa.create_metric("psnr", device="cpu", **kw)
    ref_ssim = pyiqa.create_metric("ssim", device="cpu", **kw)
    psnr, ssim = get_metric("psnr_y"), get_metric("ssim_y")
    assert psnr.record.backend == ssim.record.backend == "offline"
    for name, q in (("astronaut", 30), ("coffee", 75)):
        img = photos[name]
        if True:
            x, r = tools.to_tensor(tools.degrade(img, 1.5, q)), tools.to_tensor(img)
            p_ours, s_ours = psnr(x, r).item(), ssim(x, r).item()
            u8 = tools.degrade(img, 1.5, q)[None], img[None]  # the same pair as 8-bit arrays
            assert (psnr(*u8).item(), ssim(*u8).item()) == (p_ours, s_ours)
            p_ref, s_ref = ref_psnr(x, r).item(), ref_ssim(x, r).item()
            assert abs(p_ours - p_ref) < 1e-4, (name, q, p_ours, p_ref)
            assert abs(s_ours - s_ref) < 1e-4, (name, q, s_ours, s_ref)
            assert 15 < p_ours < 40 and 0.3 < s_ours < 1.0


def test_psnr_y_closed_form():
    """A constant RGB offset d shifts Y by (65.481 + 128.553 + 24.966) d everywhere."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 0.7, (2, 32, 40, 3)).astype(np.float32)
    d = 0.05
    x = ref + d
    dy = (65.481 + 128.553 + 24.966) * d / 255.0  # on the [0, 1] scale of Y / 255
    expected = 10 * np.log10(1.0 / (dy**2 + 1e-8))
    got = get_metric("psnr_y")(x, ref)
    assert got.shape == (2,) and got.dtype == np.float64
    np.testing.assert_allclose(got, np.full(2, expected), rtol=0, atol=1e-4)
    assert get_metric("psnr_y")(ref, ref)[0].item() == pytest.approx(80.0)


def test_ssim_y_properties(photos, tools):
    img = tools.to_tensor(photos["astronaut"])
    ssim = get_metric("ssim_y")
    assert ssim(img, img).item() == pytest.approx(1.0, abs=1e-12)
    # a textured image and its negative are anti-correlated: cs ~ -1 everywhere, textbook SSIM
    # is about -1, the clamped cs gives ~0
    noise = np.random.default_rng(1).uniform(0.2, 0.8, (1, 64, 64, 3)).astype(np.float32)
    assert 0.0 <= ssim(1.0 - noise, noise).item() < 0.01
    # rounding Y to 8-bit levels: a change that moves no Y across a rounding boundary is invisible
    y = y_bt601(img.permute(0, 2, 3, 1).numpy())
    safe = (np.abs(y - np.floor(y) - 0.5) > 0.02).all()
    if safe:
        assert ssim(img + 0.001 / 255, img).item() == pytest.approx(1.0, abs=1e-12)
    blurred = tools.to_tensor(tools.degrade(photos["astronaut"], 2.0, 95))
    assert ssim(blurred, img).item() < ssim(tools.to_tensor(tools.degrade(photos["astronaut"], 0.5, 95)), img).item()


def test_full_reference_needs_matching_reference():
    m = get_metric("ssim_y")
    x = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="reference"):
        m(x)
    with pytest.raises(ValueError, match="shape"):
        m(x, np.zeros((1, 32, 31, 3), np.uint8))
    with pytest.raises(ValueError, match=r"ssim_y: images: expected an array \(N, H, W, 3\)"):
        m(x[0], x[0])
