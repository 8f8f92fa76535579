"""Per-image resizing of a ragged batch, each image with its own size, scale and mode.

The three modes are those of ``torch.nn.functional.interpolate`` without antialiasing (what
Real-ESRGAN uses): "area" (adaptive average pooling), "bilinear" and "bicubic" (A = -0.75,
border-clamped taps), both with align_corners=False. All three are separable, so an image is
resized by two weighted gathers (rows, then columns) whose taps and weights follow PyTorch's
CPU formulas (float32 source positions), with per-image sizes and modes in one batched op.
With ``use_scale_factor`` the sampling step is 1/s (F.interpolate(scale_factor=s)), else in/out.

One image on a CPU (:func:`resize_one`, no gradient) takes faster routes with the same
semantics: bilinear and bicubic through cv2.resize (the same half-pixel taps, A = -0.75 and
clamped borders, to a given size or with step 1 / s for a scale factor s; source positions
in float64, so it differs from PyTorch's float32 positions by < 1e-4 at non-integer ratios;
5-15x faster on one thread); area (PyTorch's adaptive average pooling, which Real-ESRGAN
uses, not OpenCV's INTER_AREA, which weights fractional pixels) upsampled by an integer
factor as pixel replication (exactly what the pooling computes then), else as two sparse
averaging matrices, rows then columns (the same windows; the mean as a sum of x / count,
so it differs by float rounding; 2-3.5x faster).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MODE_CODES", "resample_axis", "resize_one", "resize_ragged", "resize_taps"]

MODE_CODES = {"area": 0, "bilinear": 1, "bicubic": 2}
_A = -0.75


def _cubic1(x: np.ndarray) -> np.ndarray:  # |x| <= 1
    return ((_A + 2) * x - (_A + 3)) * x * x + 1


def _cubic2(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
    return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A


def resize_taps(in_size: Sequence[int], out_size: Sequence[int], modes: Sequence[str],
                scale: Sequence[float | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Taps of one axis for B images: index (B, O, T) long and weight (B, O, T) float32 (CPU).

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
    return torch.from_numpy(np.where(valid, idx, 0)), torch.from_numpy(np.where(valid, w, f32(0)).astype(f32))


def resample_axis(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, dim: int,
                  taps: Sequence[int] | None = None) -> torch.Tensor:
    """out = sum_t w[b, o, t] * x.select(dim, idx[b, o, t]) along ``dim`` (2 = rows, 3 = cols).

    x (B, C, H, W); idx, w (B, O, T) on x's device. Taps are summed in a fixed order, one
    multiply and one add per tap, so each output pixel is the same whatever the canvas size.
    ``taps``: the tap positions that carry weight anywhere (default: all T).
    """
    B, C, H, W = x.shape
    O, T = idx.shape[1], idx.shape[2]
    out_shape = (B, C, O, W) if dim == 2 else (B, C, H, O)
    view = (B, 1, O, 1) if dim == 2 else (B, 1, 1, O)
    out = torch.zeros(out_shape, dtype=x.dtype, device=x.device)
    for t in range(T) if taps is None else taps:
        g = x.gather(dim, idx[:, :, t].view(view).expand(out_shape))
        out.add_(g * w[:, :, t].view(view))
    return out


def resize_ragged(x: torch.Tensor, sizes: Sequence[tuple[int, int]], out_sizes: Sequence[tuple[int, int]],
                  modes: Sequence[str], scales: Sequence[float | None]) -> torch.Tensor:
    """Resize image b of canvas x (B, C, Hc, Wc) from sizes[b] to out_sizes[b] with modes[b].

    Returns the new canvas (B, C, max h_out, max w_out), zeros outside each image.
    """
    dev = x.device
    ri, rw = resize_taps([s[0] for s in sizes], [o[0] for o in out_sizes], modes, scales)
    ci, cw = resize_taps([s[1] for s in sizes], [o[1] for o in out_sizes], modes, scales)
    y = resample_axis(x, ri.to(dev), rw.to(dev), 2, _used(rw))  # (B, C, Ho, Wc)
    return resample_axis(y, ci.to(dev), cw.to(dev), 3, _used(cw))  # (B, C, Ho, Wo)


def _used(w: torch.Tensor) -> list[int]:
    return [t for t, u in enumerate((w != 0).flatten(0, 1).any(0).tolist()) if u]


_CV2_MODES = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def resize_one(x: torch.Tensor, size: tuple[int, int], mode: str, scale: float | None = None) -> torch.Tensor:
    """F.interpolate(x, scale_factor=scale) (when ``scale``; output ``size`` = floor(in * scale))
    or F.interpolate(x, size=size), mode as given, for one image x (1, C, h, w).

    On a CPU without gradient by the routes of the module docstring; else F.interpolate.
    """
    _, C, h, w = x.shape
    oh, ow = int(size[0]), int(size[1])
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.requires_grad:
        return _interpolate(x, (oh, ow), mode, scale)
    if mode == "area":
        if oh % h == 0 and ow % w == 0:  # every pooling window is one source pixel
            fh, fw = oh // h, ow // w
            return x[:, :, :, None, :, None].expand(1, C, h, fh, w, fw).reshape(1, C, oh, ow)
        ah, aw = _area_matrix(h, oh), _area_matrix(w, ow)
        src = x[0].contiguous().numpy()  # (C, h, w)
        out = torch.empty((1, C, oh, ow), dtype=torch.float32)
        dst = out[0].numpy()
        for c in range(C):
            dst[c] = (aw @ (ah @ src[c]).T).T  # (oh, w) -> (oh, ow)
        return out
    if scale is not None and (oh == h or ow == w):
        # an axis whose size does not change: PyTorch's bilinear leaves it untouched whatever
        # the scale factor, OpenCV does not; keep F.interpolate (both modes; s close to 1 only)
        return _interpolate(x, (oh, ow), mode, scale)
    src = x[0].contiguous().numpy()  # (C, h, w)
    out = torch.empty((1, C, oh, ow), dtype=torch.float32)
    dst = out[0].numpy()
    flag = _CV2_MODES[mode]
    for c in range(C):
        if scale is None:
            cv2.resize(src[c], (ow, oh), dst=dst[c], interpolation=flag)
            continue
        # fx = fy = scale: OpenCV samples with step 1 / scale, as F.interpolate(scale_factor=
        # scale), over round(in * scale) >= floor(in * scale) pixels; the extra one is cut off.
        # An unchanged size along an axis makes OpenCV copy instead: keep F.interpolate then.
        y = cv2.resize(src[c], None, fx=float(scale), fy=float(scale), interpolation=flag)
        if y.shape[0] == h or y.shape[1] == w or y.shape[0] < oh or y.shape[1] < ow:
            return _interpolate(x, (oh, ow), mode, scale)
        dst[c] = y[:oh, :ow]
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


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str, scale: float | None) -> torch.Tensor:
    if scale is not None and mode != "area":
        return F.interpolate(x, scale_factor=scale, mode=mode)
    return F.interpolate(x, size=size, mode=mode)
