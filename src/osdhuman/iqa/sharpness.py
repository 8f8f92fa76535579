"""Laplacian variance, the blur measure of the HQ-ACF filter (paper 3.1), through OpenCV."""

from __future__ import annotations

import cv2
import numpy as np

from osdhuman.iqa.batch import ImageBatch

__all__ = ["laplacian_var"]


def laplacian_var(images) -> np.ndarray:
    """Variance of the 3x3 Laplacian of the 8-bit grayscale image (0-255 scale), per image:
    ``cv2.Laplacian(cv2.cvtColor(img, COLOR_RGB2GRAY), CV_64F).var()``.

    images: what :class:`~osdhuman.iqa.batch.ImageBatch` takes (float input is rounded to
    8-bit levels first) -> (N,) float64; higher is sharper.
    """
    u8 = ImageBatch.of(images).u8()  # (N, H, W, 3)
    return np.array([cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for a in u8],
                    dtype=np.float64)
