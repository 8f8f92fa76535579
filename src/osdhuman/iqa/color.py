"""The BT.601 luma of PSNR-Y / SSIM-Y (numpy; the other planes are in :mod:`osdhuman.iqa.batch`)."""

from __future__ import annotations

import numpy as np

__all__ = ["y_bt601"]


def y_bt601(rgb: np.ndarray) -> np.ndarray:
    """Y of YCbCr, ITU-R BT.601 studio swing, on the 0-255 scale (16..235), unrounded:
    (N, H, W, 3) float32 RGB in [0, 1] -> (N, H, W) float32.

    Y = 16 + 65.481 R + 128.553 G + 24.966 B (docs/reference.md §evaluation), evaluated in
    float32 left to right, one rounding per operation (the reference code's arithmetic).
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    f = np.float32
    return ((f(16.0) + f(65.481) * r) + f(128.553) * g) + f(24.966) * b
