"""Resizing one image on a CPU, in numpy / OpenCV, with the semantics of
``torch.nn.functional.interpolate`` without antialiasing (what Real-ESRGAN calls): "area"
(adaptive average pooling), "bilinear" and "bicubic" (A = -0.75, border-clamped taps), both
with align_corners=False; with a scale factor s the sampling step is 1 / s, else in / out.

Why not torch (resize.py holds the batched torch resize): ``osdhuman degrade`` on a CPU must not
import torch, and one image at a time these routes are 2-15x faster on one thread:
  * bilinear and bicubic through cv2.resize (the same half-pixel taps, A = -0.75 and clamped
    borders, to a given size or with step 1 / s; OpenCV's source positions are float64, so it
    differs from PyTorch's float32 positions by < 1e-4 at non-integer ratios);
  * area upsampled by an integer factor as pixel replication (exactly what the pooling
    computes then), else as two sparse averaging matrices, rows then columns (PyTorch's
    windows; OpenCV's INTER_AREA weights fractional pixels instead, which is not what
    Real-ESRGAN uses);
  * a scale factor that leaves an axis's size unchanged (s close to 1): PyTorch's bilinear
    then leaves that axis untouched whatever s, OpenCV does not, so those take the taps of
    :func:`resize_taps` (PyTorch's own float32 formulas) summed in numpy.
:func:`resize_taps` (the taps of PyTorch's CPU formulas for a batch of axes) also feeds the
batched torch resize.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["MODE_CODES", "resize_image", "resize_taps"]

MODE_CODES = {"area": 0, "bilinear": 1, "bicubic": 2}
_A = -0.75


def _cubic1(x: np.ndarray) -> np.ndarray:  # |x| <= 1
    return ((_A + 2) * x - (_A + 3)) * x * x + 1


def _cubic2(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
    return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A


def resize_taps(in_size: Sequence[int], out_size: Sequence[int], modes: Sequence[str],
                scale: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """Taps of one axis for B images: index (B, O, T) int64 and weight (B, O, T) float32.

    O = max(out_size). Rows i >= out_size[b] have zero weights. ``scale[b]``: the
    F.interpolate scale factor (sampling step 1/s) or None for in/out. (numpy: these are
    small arrays, built on the host for every resize.)
    """
    B = len(in_size)
    f32 = np.float32
    n_in = np.asarray(in_size, dtype=np.int64).reshape(B, 1)
    n_out = np.asarray(out_size, dtype=np.int64).reshape(B, 1)
    code = np.asarray([MODE_CODES[m] for m in modes]).reshape(B, 1, 1)
    O = int(n_out.max())
    i = np.arange(O, dtype=np.int64).reshape(1, O)
    # float32 sampling step, as PyTorch's area_pixel_compute_scale
    step = np.asarray([1.0 / s if (s is not None and s > 0) else float(a) / float(b)
                       for s, a, b in zip(scale, in_size, out_size)], dtype=np.float64).astype(f32)
    src = step.reshape(B, 1) * (i.astype(f32) + f32(0.5)) - f32(0.5)  # (B, O) float32
    last = n_in - 1

    # bilinear: src clamped at 0, two taps
    src_l = np.maximum(src, f32(0))
    i0 = np.minimum(np.floor(src_l).astype(np.int64), last)
    lam = np.clip(src_l - i0.astype(f32), 0, 1).astype(f32)
    i1 = i0 + (i0 < last)
    lin_idx = np.stack([i0, i1], -1)  # (B, O, 2)
    lin_w = np.stack([f32(1) - lam, lam], -1)

    # bicubic: four border-clamped taps around floor(src)
    c0 = np.minimum(np.floor(src).astype(np.int64), last)
    t = np.clip(src - c0.astype(f32), 0, 1).astype(f32)
    cub_idx = np.stack([np.minimum(np.maximum(c0 - 1 + k, 0), last) for k in range(4)], -1)  # (B, O, 4)
    cub_w = np.stack([_cubic2(t + 1), _cubic1(t), _cubic1(1 - t), _cubic2(2 - t)], -1).astype(f32)

    # area: mean over [floor(i in / out), ceil((i + 1) in / out))
    start = (i * n_in) // n_out  # (B, O)
    end = ((i + 1) * n_in + n_out - 1) // n_out
    count = np.maximum(end - start, 1)
    Ta = int(count[np.broadcast_to(i < n_out, count.shape)].max()) if B else 1
    k = np.arange(Ta).reshape(1, 1, Ta)
    area_idx = np.minimum(start[..., None] + k, last[..., None])
    area_w = np.where(k < count[..., None], f32(1) / count[..., None].astype(f32), f32(0)).astype(f32)

    T = max(4, Ta)

    def padT(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, 0), (0, T - a.shape[-1])))

    idx = np.where(code == 0, padT(area_idx), np.where(code == 1, padT(lin_idx), padT(cub_idx)))
    w = np.where(code == 0, padT(area_w), np.where(code == 1, padT(lin_w), padT(cub_w)))
    valid = (i < n_out)[..., None]  # (B, O, 1)
    return np.where(valid, idx, 0), np.where(valid, w, f32(0)).astype(f32)


_CV2_MODES = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def resize_image(x: np.ndarray, size: tuple[int, int], mode: str, scale: float | None = None) -> np.ndarray:
    """F.interpolate(scale_factor=scale) (when ``scale``: output ``size`` = floor(in * scale)) or
    F.interpolate(size=size) of one image's planes x (C, h, w) float32 -> (C, *size) float32
    (plane by plane: OpenCV's interleaved-channel routes round differently)."""
    C, h, w = x.shape
    oh, ow = int(size[0]), int(size[1])
    if mode == "area":
        if oh % h == 0 and ow % w == 0:  # every pooling window is one source pixel
            return np.repeat(np.repeat(x, oh // h, axis=1), ow // w, axis=2)
        ah, aw = _area_matrix(h, oh), _area_matrix(w, ow)
        return np.stack([(aw @ (ah @ x[c]).T).T for c in range(C)]).astype(np.float32, copy=False)
    flag = _CV2_MODES[mode]
    out = np.empty((C, oh, ow), np.float32)
    if scale is None:
        for c in range(C):
            cv2.resize(x[c], (ow, oh), dst=out[c], interpolation=flag)
        return out
    if oh == h or ow == w:
        return _by_taps(x, (oh, ow), mode, scale)
    for c in range(C):
        # fx = fy = scale: OpenCV samples with step 1 / scale, as F.interpolate(scale_factor=
        # scale), over round(in * scale) >= floor(in * scale) pixels; the extra one is cut off
        y = cv2.resize(x[c], None, fx=float(scale), fy=float(scale), interpolation=flag)
        if y.shape[0] == h or y.shape[1] == w or y.shape[0] < oh or y.shape[1] < ow:
            return _by_taps(x, (oh, ow), mode, scale)
        out[c] = y[:oh, :ow]
    return out


def _by_taps(x: np.ndarray, size: tuple[int, int], mode: str, scale: float | None) -> np.ndarray:
    """PyTorch's formulas: the taps of each axis, summed in a fixed order (rows, then columns).
    PyTorch's bilinear keeps an axis whose size does not change as it is (step 1, whatever the
    scale factor); its bicubic samples it with step 1 / s all the same."""
    C, h, w = x.shape
    keep = mode == "bilinear"
    ri, rw = resize_taps([h], [size[0]], [mode], [None if keep and size[0] == h else scale])  # (1, oh, T)
    ci, cw = resize_taps([w], [size[1]], [mode], [None if keep and size[1] == w else scale])
    y = np.zeros((C, size[0], w), np.float32)
    for t in range(ri.shape[2]):
        y += x[:, ri[0, :, t]] * rw[0, :, t, None]
    out = np.zeros((C, size[0], size[1]), np.float32)
    for t in range(ci.shape[2]):
        out += y[:, :, ci[0, :, t]] * cw[0, :, t]
    return out


def _area_matrix(n_in: int, n_out: int):
    """(n_out, n_in) sparse float32 matrix of adaptive average pooling along one axis: row i
    averages [floor(i n_in / n_out), ceil((i + 1) n_in / n_out)), PyTorch's "area" windows."""
    # imported on first use: scipy.sparse is slow to import
    from scipy.sparse import csr_matrix

    i = np.arange(n_out, dtype=np.int64)
    start = (i * n_in) // n_out
    count = ((i + 1) * n_in + n_out - 1) // n_out - start
    indptr = np.concatenate([[0], np.cumsum(count)])
    indices = np.repeat(start, count) + np.arange(indptr[-1]) - np.repeat(indptr[:-1], count)
    data = np.repeat((1.0 / count).astype(np.float32), count)
    return csr_matrix((data, indices, indptr), shape=(n_out, n_in))
