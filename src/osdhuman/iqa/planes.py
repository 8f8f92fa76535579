"""The grayscale planes the offline no-reference metrics read, computed once per crop.

NIQE and PIQE both start from the Y of YIQ in float32, exactly as pyiqa's ``to_y_channel``
computes it (``R*0.299 + G*0.587 + B*0.114`` in float32, left to right, no fused multiply-add:
bit-equal to its ``matmul`` on CPU); NIQE then rounds ``255 * Y`` to 8-bit levels, PIQE
stretches Y to the full range. BRISQUE reads scikit-image's ``rgb2gray`` (float64, [0, 1]),
the definition its SVR was trained on. One pass over the 8-bit crop (numba) writes both, so
the float (N, 3, H, W) tensor each metric used to build for itself is never made.

    p = planes_from_uint8(crops)        # crops (N, H, W, 3) uint8
    p.yiq  # (N, H, W) float32 in [0, 1]; p.gray  # (N, H, W) float64 in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

__all__ = ["Planes", "planes_from_tensor", "planes_from_uint8"]

_YIQ = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SKIMAGE = np.array([0.2125, 0.7154, 0.0721], dtype=np.float64)


@dataclass
class Planes:
    yiq: np.ndarray  # (N, H, W) float32, Y of YIQ in [0, 1] (pyiqa's arithmetic)
    gray: np.ndarray  # (N, H, W) float64, scikit-image rgb2gray in [0, 1]




def _available() -> bool:
    from osdhuman.iqa.moments import use_kernels

    return use_kernels()


def planes_from_uint8(crops: np.ndarray) -> Planes:
    """(N, H, W, 3) uint8 RGB -> both planes; the values are those of ``x = u8 / 255`` (float32)."""
    crops = np.ascontiguousarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 crops, got {crops.shape} {crops.dtype}")
    n, h, w, _ = crops.shape
    yiq, gray = np.empty((n, h, w), np.float32), np.empty((n, h, w), np.float64)
    if _available():
        _planes_u8(crops, *_tables(), yiq, gray)
        return Planes(yiq, gray)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
    return planes_from_tensor(x)


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-bit level: the products of ``float32(u) / 255`` with each channel's weight, as
    float32 (luma) and float64 (gray) - the exact values the per-pixel arithmetic gives."""
    global _LUT
    if _LUT is None:
        x = np.arange(256, dtype=np.float32) / np.float32(255.0)  # (256,) float32, as u8 / 255
        _LUT = (np.stack([x * w for w in _YIQ]), np.stack([w * x.astype(np.float64) for w in _SKIMAGE]))
    return _LUT


_LUT: tuple[np.ndarray, np.ndarray] | None = None


def planes_from_tensor(images: torch.Tensor) -> Planes:
    """(N, 3, H, W) float RGB in [0, 1] (any device) -> both planes on the CPU."""
    x = images.detach().to("cpu", torch.float32)
    if _available():
        rgb = np.ascontiguousarray(x.numpy())
        n, _, h, w = rgb.shape
        yiq, gray = np.empty((n, h, w), np.float32), np.empty((n, h, w), np.float64)
        _planes_f32(rgb, _YIQ, _SKIMAGE, yiq, gray)
        return Planes(yiq, gray)
    from osdhuman.iqa.color import rgb_to_gray_skimage

    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    yiq = r * float(_YIQ[0]) + g * float(_YIQ[1]) + b * float(_YIQ[2])  # float32, the same order
    return Planes(yiq.numpy(), rgb_to_gray_skimage(x.to(torch.float64))[:, 0].numpy())


@numba.njit(cache=True, nogil=True)
def _planes_u8(u, ty, tg, yiq, gray):  # u (N, H, W, 3) uint8 -> yiq (N, H, W) f32, gray f64
    n, h, w, _ = u.shape  # ty (3, 256) f32, tg (3, 256) f64: weight * (u / 255) per level
    for b in range(n):
        for i in range(h):
            for j in range(w):
                r, g, bl = u[b, i, j, 0], u[b, i, j, 1], u[b, i, j, 2]
                yiq[b, i, j] = ty[0, r] + ty[1, g] + ty[2, bl]
                gray[b, i, j] = tg[0, r] + tg[1, g] + tg[2, bl]


@numba.njit(cache=True, nogil=True)
def _planes_f32(x, wy, wg, yiq, gray):  # x (N, 3, H, W) float32
    n, _, h, w = x.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                r, g, bl = x[b, 0, i, j], x[b, 1, i, j], x[b, 2, i, j]
                yiq[b, i, j] = r * wy[0] + g * wy[1] + bl * wy[2]
                gray[b, i, j] = wg[0] * np.float64(r) + wg[1] * np.float64(g) + wg[2] * np.float64(bl)
