"""Per-image blur of a ragged batch: reflect padding + correlation with the image's own kernel.

Real-ESRGAN's ``filter2D`` reflect-pads by half the (21x21) kernel and cross-correlates. We
compute the same correlation by FFT (about 10x faster than direct 21x21 convolution on a CPU):
the padded image sits at the top-left of a zero canvas of an FFT-friendly size N >= h + 2 pad,
so the circular correlation never wraps into the pixels we keep. N is chosen from the image's
own size (smallest 5-smooth multiple of ``size_multiple``), and images sharing N are
transformed together, so a result never depends on the batch the image travels in.

This is the batched torch path (CUDA, and ``Degrader(batched=True)``); one image on a CPU is
blurred by cpu_blur.py, without torch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from osdhuman.degradation.cpu_blur import fft_length
from osdhuman.degradation.ragged import gather_rows_cols, reflect_index

__all__ = ["blur_ragged", "fft_length", "kernel_rfft2"]


_DFT: dict[tuple, torch.Tensor] = {}


def _dft_rows(n: int, m: int, device, half: bool) -> torch.Tensor:
    """(n or n // 2 + 1, m) complex64 DFT rows exp(-2 pi i u j / n), j < m (float64 angles)."""
    key = (n, m, str(device), half)
    if key not in _DFT:
        u = torch.arange(n // 2 + 1 if half else n, dtype=torch.float64).view(-1, 1)
        j = torch.arange(m, dtype=torch.float64).view(1, -1)
        ang = -2 * torch.pi * torch.remainder(u * j, n) / n
        _DFT[key] = torch.polar(torch.ones_like(ang), ang).to(device, torch.complex64)
    return _DFT[key]


def kernel_rfft2(k: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """rfft2 of kernels k (G, M, M) zero-padded to (nh, nw), by two small DFT matmuls.

    Same values as torch.fft.rfft2 of the padded kernel (to float rounding), at
    O(nh M nw) instead of a full-size FFT of a canvas that is almost all zeros.
    """
    M = k.shape[-1]
    Fr = _dft_rows(nh, M, k.device, half=False)  # (nh, M)
    Fc = _dft_rows(nw, M, k.device, half=True)  # (nw // 2 + 1, M)
    return Fr @ k.to(torch.complex64) @ Fc.T  # (G, nh, nw // 2 + 1)


def _pad_reflect(x: torch.Tensor, hw: torch.Tensor, pad: int, nh: int, nw: int) -> torch.Tensor:
    """x (G, C, Hc, Wc) -> (G, C, nh, nw): each image reflect-padded by ``pad``, zeros beyond."""
    h, w = int(hw[:, 0].min()), int(hw[:, 1].min())
    if len(hw) == 1 and h > pad and w > pad:  # one image: the same copy by F.pad, faster
        p = F.pad(x[:, :, :h, :w], (pad, pad, pad, pad), mode="reflect")
        return F.pad(p, (0, nw - w - 2 * pad, 0, nh - h - 2 * pad))
    rows, rv = reflect_index(nh, hw[:, 0], pad)  # (G, nh)
    cols, cv = reflect_index(nw, hw[:, 1], pad)
    dev = x.device
    p = gather_rows_cols(x, rows.to(dev), cols.to(dev))  # (G, C, nh, nw)
    mask = (rv.view(-1, 1, nh, 1) & cv.view(-1, 1, 1, nw)).to(dev)
    return p * mask


def blur_ragged(x: torch.Tensor, sizes: Sequence[tuple[int, int]], kernels: torch.Tensor,
                index: Sequence[int], fft: bool = True, size_multiple: int = 32) -> torch.Tensor:
    """Correlate image b = index[k] of canvas x (B, C, Hc, Wc) with kernels[k] (M, M), M odd.

    Returns a new canvas; images not in ``index`` are copied unchanged.
    """
    out = x.clone()
    if len(index) == 0:
        return out
    M = kernels.shape[-1]
    pad = M // 2
    C = x.shape[1]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, b in enumerate(index):
        h, w = sizes[b]
        key = (fft_length(h + 2 * pad, size_multiple), fft_length(w + 2 * pad, size_multiple)) if fft else (h, w)
        groups[key].append(k)
    dev = x.device
    kern = kernels.to(dev, x.dtype)
    for (nh, nw), ks in groups.items():
        bs = [index[k] for k in ks]
        hw = torch.tensor([sizes[b] for b in bs])  # (G, 2)
        hmax, wmax = int(hw[:, 0].max()), int(hw[:, 1].max())
        bt = torch.tensor(bs, device=dev)
        xg = x.index_select(0, bt)  # (G, C, Hc, Wc)
        kg = kern.index_select(0, torch.tensor(ks, device=dev))  # (G, M, M)
        if fft:
            p = _pad_reflect(xg, hw, pad, nh, nw)  # (G, C, nh, nw)
            spec = torch.fft.rfft2(p) * torch.conj(kernel_rfft2(kg, nh, nw)).unsqueeze(1)  # correlation
            y = torch.fft.irfft2(spec, s=(nh, nw))[..., :hmax, :wmax]  # (G, C, hmax, wmax)
        else:  # direct correlation; images in a group share their size
            p = _pad_reflect(xg, hw, pad, nh + 2 * pad, nw + 2 * pad)  # (G, C, h + 2 pad, w + 2 pad)
            G = len(ks)
            wgt = kg.unsqueeze(1).expand(G, C, M, M).reshape(G * C, 1, M, M)
            y = F.conv2d(p.reshape(1, G * C, nh + 2 * pad, nw + 2 * pad), wgt, groups=G * C).view(G, C, nh, nw)
        rows = torch.arange(hmax, device=dev).view(1, 1, -1, 1) < hw[:, 0].to(dev).view(-1, 1, 1, 1)
        cols = torch.arange(wmax, device=dev).view(1, 1, 1, -1) < hw[:, 1].to(dev).view(-1, 1, 1, 1)
        y = y * (rows & cols)
        out[bt, :, :hmax, :wmax] = y
    return out
