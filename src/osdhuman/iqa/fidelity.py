"""PSNR and SSIM on the Y channel of YCbCr (BT.601), defined exactly as the paper's
evaluation code (pyiqa, ``test_y_channel=True, color_space='ycbcr'``; docs/reference.md §evaluation).

Both take RGB float tensors (N, 3, H, W) in [0, 1] and return (N,) float64; higher is better.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from osdhuman.iqa.color import rgb_to_y_bt601
from osdhuman.iqa.filters import gaussian_window

__all__ = ["psnr_y", "ssim_y"]


def psnr_y(images: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """PSNR = 10 log10(1 / (MSE + eps)) on the unrounded Y / 255 (so in [16/255, 235/255]).

    ``eps`` is added to the MSE on that [0, 1] scale (pyiqa's default), capping identical
    images at 80 dB instead of infinity.
    """
    # Y in float32 (as the reference code; ~1e-6 dB from float64), the mean accumulated in float64
    y1 = rgb_to_y_bt601(images.to(torch.float32)) / 255.0  # (N, 1, H, W)
    y2 = rgb_to_y_bt601(reference.to(torch.float32)) / 255.0
    mse = ((y1 - y2) ** 2).mean(dim=(1, 2, 3), dtype=torch.float64)  # (N,)
    return 10.0 * torch.log10(1.0 / (mse + eps))


def ssim_y(
    images: torch.Tensor,
    reference: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """SSIM (Wang et al. 2004) on Y rounded to integer 0-255 levels, Gaussian window
    (11x11, sigma 1.5), valid region only, C1 = (k1 255)^2, C2 = (k2 255)^2, the
    contrast-structure term clamped at 0 before the product, mean of the map per image."""
    # Y rounded on the input's float32, as the reference code (ties at .5 depend on it)
    y1 = torch.round(rgb_to_y_bt601(images.to(torch.float32))).to(torch.float64)  # (N, 1, H, W)
    y2 = torch.round(rgb_to_y_bt601(reference.to(torch.float32))).to(torch.float64)
    g = gaussian_window(window_size, sigma).astype(np.float32).astype(np.float64)
    g1 = torch.from_numpy(g.sum(axis=1) / g.sum()).to(y1)  # 1-D factor of the separable window

    def blur(t: torch.Tensor) -> torch.Tensor:  # valid correlation with the 2-D window
        t = F.conv2d(t, g1.view(1, 1, -1, 1))
        return F.conv2d(t, g1.view(1, 1, 1, -1))

    c1, c2 = (k1 * 255.0) ** 2, (k2 * 255.0) ** 2
    mu1, mu2 = blur(y1), blur(y2)
    s11 = blur(y1 * y1) - mu1 * mu1
    s22 = blur(y2 * y2) - mu2 * mu2
    s12 = blur(y1 * y2) - mu1 * mu2
    cs = ((2 * s12 + c2) / (s11 + s22 + c2)).clamp(min=0)
    lum = (2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1)
    return (lum * cs).mean(dim=(1, 2, 3))
