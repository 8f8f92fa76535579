"""Laplacian variance, the blur measure of the HQ-ACF filter (paper 3.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from osdhuman.iqa.color import rgb_to_gray_cv2

__all__ = ["laplacian_var", "laplacian_var_torch"]

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


def laplacian_var(images: torch.Tensor) -> torch.Tensor:
    """Variance of the 3x3 Laplacian of the 8-bit grayscale image (0-255 scale), per image:
    ``cv2.Laplacian(cv2.cvtColor(img, COLOR_RGB2GRAY), CV_64F).var()``.

    images: (N, 3, H, W) in [0, 1] -> (N,) float64; higher is sharper. CPU tensors go through
    OpenCV itself; tensors on an accelerator use :func:`laplacian_var_torch` (bit-compatible).
    """
    if images.device.type != "cpu":
        return laplacian_var_torch(images)
    import cv2

    q = (images.clamp(0, 1) * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    out = [cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for a in q]
    return torch.tensor(out, dtype=torch.float64)


def laplacian_var_torch(images: torch.Tensor) -> torch.Tensor:
    """The same on any device: OpenCV's fixed-point gray conversion and its default
    BORDER_REFLECT_101 border, in float64."""
    gray = rgb_to_gray_cv2(images)  # (N, 1, H, W) float64
    lap = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="reflect"), _LAPLACIAN.to(gray).view(1, 1, 3, 3))
    return lap.flatten(1).var(dim=1, unbiased=False)
