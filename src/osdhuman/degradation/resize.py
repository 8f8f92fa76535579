"""Per-image resizing of a ragged batch, each image with its own size, scale and mode.

The three modes are those of ``torch.nn.functional.interpolate`` without antialiasing (what
Real-ESRGAN uses): "area" (adaptive average pooling), "bilinear" and "bicubic" (A = -0.75,
border-clamped taps), both with align_corners=False. All three are separable, so an image is
resized by two weighted gathers (rows, then columns) whose taps and weights follow PyTorch's
CPU formulas (float32 source positions), with per-image sizes and modes in one batched op.
With ``use_scale_factor`` the sampling step is 1/s (F.interpolate(scale_factor=s)), else in/out.

This is the batched torch path (CUDA, and ``Degrader(batched=True)``); one image on a CPU is
resized by cpu_resize.py, without torch (the taps come from there, numpy on the host).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from osdhuman.degradation.cpu_resize import MODE_CODES, resize_taps

__all__ = ["MODE_CODES", "resample_axis", "resize_ragged", "resize_taps"]


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
    # PyTorch's bilinear keeps an axis whose size does not change (step 1, whatever the scale)
    rs = [None if m == "bilinear" and s[0] == o[0] else f for s, o, m, f in zip(sizes, out_sizes, modes, scales)]
    cs = [None if m == "bilinear" and s[1] == o[1] else f for s, o, m, f in zip(sizes, out_sizes, modes, scales)]
    ri, rw = resize_taps([s[0] for s in sizes], [o[0] for o in out_sizes], modes, rs)
    ci, cw = resize_taps([s[1] for s in sizes], [o[1] for o in out_sizes], modes, cs)
    y = resample_axis(x, torch.from_numpy(ri).to(dev), torch.from_numpy(rw).to(dev), 2, _used(rw))  # (B, C, Ho, Wc)
    return resample_axis(y, torch.from_numpy(ci).to(dev), torch.from_numpy(cw).to(dev), 3, _used(cw))  # (B, C, Ho, Wo)


def _used(w) -> list[int]:
    """Tap positions that carry weight anywhere in w (B, O, T)."""
    return [t for t in range(w.shape[2]) if (w[:, :, t] != 0).any()]
