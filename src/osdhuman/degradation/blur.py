"""Per-image blur of a ragged batch: reflect padding + correlation with the image's own kernel.

Real-ESRGAN's ``filter2D`` reflect-pads by half the (21x21) kernel and cross-correlates. We
compute the same correlation by FFT (about 10x faster than direct 21x21 convolution on a CPU):
the padded image sits at the top-left of a zero canvas of an FFT-friendly size N >= h + 2 pad,
so the circular correlation never wraps into the pixels we keep. N is chosen from the image's
own size (smallest 5-smooth multiple of ``size_multiple``), and images sharing N are
transformed together, so a result never depends on the batch the image travels in.

One image on a CPU (:func:`blur_one`, no gradient) takes the cheapest exact route instead,
measured on one thread at 512x512 (OpenCV, BORDER_REFLECT_101 = torch's "reflect"):
  * the kernel is cropped to its support: all-zero outer rings (the zero padding of a
    ``size`` < 21 kernel) exactly, and outer rings whose total |weight| is at most
    ``NEGLIGIBLE`` (1e-8: far below float32 rounding of the result, e.g. the tails of a
    sigma 0.5 Gaussian); the reflect padding shrinks with it (same values, reflect is nested);
  * a separable kernel (isotropic Gaussian, identity, any k = outer(rows, cols) up to a total
    residual of ``NEGLIGIBLE``) runs as two 1-D passes (cv2.sepFilter2D: 0.5-2 ms vs ~4.5 ms);
  * a small one (at most 11x11 after cropping) as direct correlation (cv2.filter2D,
    1.1-2.8 ms: OpenCV's own direct route below 130 taps);
  * anything larger by FFT as above.
All routes compute the same correlation; they differ from one another by float rounding
(< 1e-6), are deterministic, and each image's route depends on its kernel alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from osdhuman.degradation.ragged import gather_rows_cols, reflect_index

__all__ = ["NEGLIGIBLE", "blur_one", "blur_ragged", "crop_kernel", "fft_length", "kernel_rfft2", "separable_factors"]

NEGLIGIBLE = 1e-8  # total |kernel weight| a CPU route may drop (outputs are in [0, 1] or near)
_DIRECT_TAPS = 130  # below this many taps cv2.filter2D correlates directly (above: its own DFT)


def _smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def fft_length(n: int, multiple: int = 32) -> int:
    """Smallest 5-smooth multiple of ``multiple`` that is >= n."""
    m = max(1, int(multiple))
    k = max(1, -(-n // m))
    while not _smooth(k * m):
        k += 1
    return k * m


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


def crop_kernel(k: np.ndarray, tol: float = NEGLIGIBLE) -> np.ndarray:
    """The centred (m, m) part of an odd (M, M) kernel outside which the total |weight| <= tol."""
    M = k.shape[0]
    c = M // 2
    a = np.abs(k)
    r = c
    dropped = 0.0
    while r > 0:
        ring = a[c - r:c + r + 1, c - r:c + r + 1].sum() - a[c - r + 1:c + r, c - r + 1:c + r].sum()
        if dropped + ring > tol:
            break
        dropped += ring
        r -= 1
    return k[c - r:c + r + 1, c - r:c + r + 1]


def separable_factors(k: np.ndarray, tol: float = NEGLIGIBLE) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, cols) 1-D kernels with outer(rows, cols) = k up to a total |residual| <= tol, else None."""
    s = k.sum()
    if s == 0:
        return None
    rows, cols = k.sum(1), k.sum(0) / s
    if np.abs(k - np.outer(rows, cols)).sum() > tol:
        return None
    return rows, cols


def _blur_cpu(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor | None:
    """The CPU routes of the module docstring for x (1, C, h, w) float32; None = use the FFT."""
    k = crop_kernel(kernel.detach().to("cpu", torch.float64).numpy())
    m = k.shape[0]
    pad = m // 2
    _, C, h, w = x.shape
    if h <= pad or w <= pad:
        return None
    sep = separable_factors(k)
    if sep is None and m * m >= _DIRECT_TAPS:
        return None
    src = x[0].contiguous().numpy()  # (C, h, w)
    out = torch.empty((1, C, h, w), dtype=torch.float32)
    dst = out[0].numpy()
    border = cv2.BORDER_REFLECT_101
    if sep is not None:
        ky, kx = (np.ascontiguousarray(v, dtype=np.float32) for v in sep)
        for c in range(C):
            cv2.sepFilter2D(src[c], -1, kx, ky, dst=dst[c], borderType=border)
    else:
        k32 = np.ascontiguousarray(k, dtype=np.float32)
        for c in range(C):
            cv2.filter2D(src[c], -1, k32, dst=dst[c], borderType=border)
    return out


def blur_one(x: torch.Tensor, kernel: torch.Tensor, fft: bool = True, size_multiple: int = 1) -> torch.Tensor:
    """One image x (1, C, h, w) correlated with kernel (M, M), reflect padding M // 2.

    On a CPU without gradient (and ``fft``), the cheapest exact route of the module docstring;
    else by FFT (on one CPU thread about 4.5 ms at 512x512 against ~60 ms for oneDNN's direct
    21x21). ``kernel`` may be float64 (it is cast to x's dtype for the FFT).
    """
    _, C, h, w = x.shape
    if fft and x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad:
        y = _blur_cpu(x, kernel)
        if y is not None:
            return y
        k = crop_kernel(kernel.detach().to("cpu", torch.float64).numpy())  # smaller pad, same result
        kernel = torch.from_numpy(np.ascontiguousarray(k))
    M = kernel.shape[-1]
    pad = M // 2
    if h <= pad or w <= pad:  # too small for F.pad's reflect: the general path
        return blur_ragged(x, [(h, w)], kernel[None], [0], fft, size_multiple)
    k = kernel.to(x.device, x.dtype)
    p = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (1, C, h + 2 pad, w + 2 pad)
    if not fft:
        return F.conv2d(p, k.expand(C, 1, M, M), groups=C)
    nh, nw = fft_length(h + 2 * pad, size_multiple), fft_length(w + 2 * pad, size_multiple)
    spec = torch.fft.rfft2(p, s=(nh, nw))
    spec.mul_(torch.conj(kernel_rfft2(k[None], nh, nw)))  # correlation
    return torch.fft.irfft2(spec, s=(nh, nw))[..., :h, :w]  # (1, C, h, w)


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
