"""PSNR and SSIM on the Y channel of YCbCr (BT.601), defined exactly as the paper's
evaluation code (pyiqa, ``test_y_channel=True, color_space='ycbcr'``; docs/reference.md §evaluation).

Both take what :class:`~osdhuman.iqa.batch.ImageBatch` takes (numpy (N, H, W, 3) uint8 or
float RGB in [0, 1], torch (N, 3, H, W)) and return (N,) float64; higher is better. numpy and
OpenCV on the CPU: no torch.
"""

from __future__ import annotations

import cv2
import numpy as np

from osdhuman.iqa.batch import ImageBatch
from osdhuman.iqa.color import y_bt601
from osdhuman.iqa.filters import gaussian_window

__all__ = ["psnr_y", "ssim_y"]


def psnr_y(images, reference, eps: float = 1e-8) -> np.ndarray:
    """PSNR = 10 log10(1 / (MSE + eps)) on the unrounded Y / 255 (so in [16/255, 235/255]).

    ``eps`` is added to the MSE on that [0, 1] scale (pyiqa's default), capping identical
    images at 80 dB instead of infinity.
    """
    # Y in float32 (as the reference code; ~1e-6 dB from float64), the mean accumulated in float64
    y1 = y_bt601(ImageBatch.of(images).rgb()) / np.float32(255.0)  # (N, H, W)
    y2 = y_bt601(ImageBatch.of(reference, "reference").rgb()) / np.float32(255.0)
    mse = ((y1 - y2) ** 2).astype(np.float64).mean(axis=(1, 2))  # (N,)
    return 10.0 * np.log10(1.0 / (mse + eps))


def ssim_y(images, reference, window_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
           k2: float = 0.03) -> np.ndarray:
    """SSIM (Wang et al. 2004) on Y rounded to integer 0-255 levels, Gaussian window
    (11x11, sigma 1.5), valid region only, C1 = (k1 255)^2, C2 = (k2 255)^2, the
    contrast-structure term clamped at 0 before the product, mean of the map per image."""
    # Y rounded from its float32 value, as the reference code (ties at .5 depend on it)
    y1 = np.rint(y_bt601(ImageBatch.of(images).rgb())).astype(np.float64)  # (N, H, W)
    y2 = np.rint(y_bt601(ImageBatch.of(reference, "reference").rgb())).astype(np.float64)
    g = gaussian_window(window_size, sigma).astype(np.float32).astype(np.float64)
    g1 = g.sum(axis=1) / g.sum()  # 1-D factor of the separable window
    lo, hi = (window_size - 1) // 2, window_size // 2

    def blur(t: np.ndarray) -> np.ndarray:  # valid correlation with the 2-D window: (H, W) -> (H', W')
        full = cv2.sepFilter2D(t, cv2.CV_64F, g1, g1, anchor=(lo, lo), borderType=cv2.BORDER_CONSTANT)
        return full[lo:t.shape[0] - hi, lo:t.shape[1] - hi]

    c1, c2 = (k1 * 255.0) ** 2, (k2 * 255.0) ** 2
    out = np.empty(len(y1))
    for i, (a, b) in enumerate(zip(y1, y2)):
        mu1, mu2 = blur(a), blur(b)
        s11 = blur(a * a) - mu1 * mu1
        s22 = blur(b * b) - mu2 * mu2
        s12 = blur(a * b) - mu1 * mu2
        cs = np.maximum((2 * s12 + c2) / (s11 + s22 + c2), 0)
        lum = (2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1)
        out[i] = (lum * cs).mean()
    return out
