"""Luma conversions used by the metrics (images: float tensors (N, 3, H, W), RGB in [0, 1])."""

from __future__ import annotations

import torch

__all__ = ["rgb_to_gray_cv2", "rgb_to_gray_skimage", "rgb_to_luma_yiq", "rgb_to_y_bt601"]


def rgb_to_y_bt601(x: torch.Tensor) -> torch.Tensor:
    """Y of YCbCr, ITU-R BT.601 studio swing, on the 0-255 scale (16..235), unrounded.

    Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1] (docs/reference.md §evaluation).
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]  # (N, 1, H, W) each
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def rgb_to_luma_yiq(x: torch.Tensor) -> torch.Tensor:
    """Y of YIQ (0.299 R + 0.587 G + 0.114 B) on the 0-255 scale, unrounded."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (0.299 * r + 0.587 * g + 0.114 * b) * 255.0


def rgb_to_gray_cv2(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's COLOR_RGB2GRAY on 8-bit input, bit-exact (OpenCV 4.x fixed point):
    (9798 R + 19235 G + 3735 B + 2^14) >> 15."""
    q = torch.round(x.clamp(0, 1) * 255.0).to(torch.int32)  # (N, 3, H, W) uint8 levels
    y = (q[:, 0:1] * 9798 + q[:, 1:2] * 19235 + q[:, 2:3] * 3735 + 16384) >> 15
    return y.to(torch.float64)  # (N, 1, H, W) in 0..255


def rgb_to_gray_skimage(x: torch.Tensor) -> torch.Tensor:
    """scikit-image's rgb2gray (0.2125 R + 0.7154 G + 0.0721 B) on the [0, 1] scale."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.2125 * r + 0.7154 * g + 0.0721 * b
