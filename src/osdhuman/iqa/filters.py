"""Small image-processing primitives shared by the metrics, written as pure tensor functions.

All functions take batched single-channel tensors (N, 1, H, W) and keep their dtype.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "aggd_fit",
    "aggd_from_sums",
    "filter2d",
    "filter2d_separable",
    "gaussian_window",
    "imresize_matlab",
    "mscn",
]


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``: normalised (size, size) Gaussian."""
    half = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float64) - half
    h = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2.0 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    return h / h.sum()


def filter2d(x: torch.Tensor, window: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """Correlate (N, 1, H, W) with a (kh, kw) window; padding 'replicate' | 'zeros' | 'valid'.

    float64: a sum of shifted slices (kh * kw fused multiply-adds), several times faster than
    ``conv2d`` in float64 on CPU; other dtypes: ``conv2d``.
    """
    kh, kw = window.shape[-2:]
    if padding == "replicate":
        x = F.pad(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), mode="replicate")
    elif padding == "zeros":
        x = F.pad(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2))
    elif padding != "valid":
        raise ValueError(f"unknown padding {padding!r}")
    if x.dtype != torch.float64:
        return F.conv2d(x, window.to(x).reshape(1, 1, kh, kw))
    h, w = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    weights = window.detach().to("cpu", torch.float64).tolist()
    out = torch.zeros(*x.shape[:-2], h, w, dtype=x.dtype, device=x.device)
    for i in range(kh):
        for j in range(kw):
            if weights[i][j] != 0.0:
                out.add_(x[..., i:i + h, j:j + w], alpha=weights[i][j])
    return out  # (N, 1, H', W')


def filter2d_separable(x: torch.Tensor, k: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """Correlate (N, 1, H, W) with the separable window outer(k, k) (k: (K,)), as two 1-D passes
    of shifted-slice multiply-adds; same paddings as :func:`filter2d`. float64 on CPU: the
    same passes, in the same order, compiled (numba)."""
    n = k.numel()
    lo, hi = (n - 1) // 2, n // 2
    if padding not in ("replicate", "zeros", "valid"):
        raise ValueError(f"unknown padding {padding!r}")
    if _kernels() and x.dtype == torch.float64 and x.device.type == "cpu":
        xp = _pad_np(x.reshape(-1, *x.shape[-2:]).numpy(), lo, hi, padding)
        out = np.empty((xp.shape[0], xp.shape[1] - n + 1, xp.shape[2] - n + 1))
        _sep_numba(xp, np.ascontiguousarray(k.detach().to("cpu", torch.float64).numpy()), out)
        return torch.from_numpy(out).reshape(*x.shape[:-2], *out.shape[-2:])
    if padding == "replicate":
        x = F.pad(x, (lo, hi, lo, hi), mode="replicate")
    elif padding == "zeros":
        x = F.pad(x, (lo, hi, lo, hi))
    w = k.detach().to("cpu", torch.float64).tolist()
    h = x.shape[-2] - n + 1
    rows = torch.zeros(*x.shape[:-2], h, x.shape[-1], dtype=x.dtype, device=x.device)
    for i in range(n):
        rows.add_(x[..., i:i + h, :], alpha=w[i])
    wd = x.shape[-1] - n + 1
    out = torch.zeros(*x.shape[:-2], h, wd, dtype=x.dtype, device=x.device)
    for j in range(n):
        out.add_(rows[..., j:j + wd], alpha=w[j])
    return out


def _pad_np(x: np.ndarray, lo: int, hi: int, padding: str) -> np.ndarray:
    """(B, H, W) -> (B, H + lo + hi, W + lo + hi) C-contiguous, padded as :func:`filter2d`
    (numpy: several times faster than ``F.pad`` on float64 CPU tensors)."""
    if padding == "valid":
        return np.ascontiguousarray(x)
    b, h, w = x.shape
    out = np.empty((b, h + lo + hi, w + lo + hi), dtype=x.dtype)  # every cell is written below
    out[:, lo:lo + h, lo:lo + w] = x
    if padding == "replicate":
        out[:, lo:lo + h, :lo] = x[:, :, :1]
        out[:, lo:lo + h, lo + w:] = x[:, :, -1:]
        out[:, :lo] = out[:, lo:lo + 1]
        out[:, lo + h:] = out[:, lo + h - 1:lo + h]
    else:
        out[:, lo:lo + h, :lo] = 0
        out[:, lo:lo + h, lo + w:] = 0
        out[:, :lo] = 0
        out[:, lo + h:] = 0
    return out


def _kernels() -> bool:
    from osdhuman.iqa.moments import use_kernels

    return use_kernels()


def mscn(x: torch.Tensor, window: torch.Tensor, c: float = 1.0, padding: str = "replicate") -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients (Mittal et al. 2012, Eq. 1):
    (I - mu) / (sigma + C), mu and sigma^2 the window-weighted local mean and variance.

    float64 on CPU with numba: one fused pass (:func:`_mscn_numba`) with the same per-pixel
    summation order as the torch path, so both give the same numbers."""
    # float32 input stays on conv2d (PIQE has its own float32 kernels, in piqe.py)
    if _kernels() and x.dtype == torch.float64 and x.device.type == "cpu" and padding == "replicate":
        kh, kw = window.shape[-2:]
        if kh != kw:
            raise ValueError(f"mscn kernels take square windows, got {kh}x{kw}")
        xp = _pad_np(x.reshape(-1, *x.shape[-2:]).numpy(), (kh - 1) // 2, kh // 2, "replicate")
        out = np.empty((xp.shape[0], x.shape[-2], x.shape[-1]), dtype=xp.dtype)
        win = np.ascontiguousarray(window.detach().to("cpu", x.dtype).numpy())
        _mscn_numba(xp, win, np.array([c], dtype=xp.dtype), out)
        return torch.from_numpy(out).reshape(x.shape)
    mu = filter2d(x, window, padding)
    var = (filter2d(x * x, window, padding) - mu * mu).abs()
    return (x - mu) / (var.sqrt() + c)


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _resize_matrix(n_in: int, n_out: int, scale: float, dtype, device) -> torch.Tensor:
    """(n_out, n_in) matrix of MATLAB imresize bicubic weights, antialiased when shrinking,
    with MATLAB's symmetric (edge-repeating) boundary."""
    width = 4.0 / scale if scale < 1 else 4.0
    kscale = scale if scale < 1 else 1.0
    x = torch.arange(1, n_out + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinate of each output pixel
    left = torch.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # (n_out, taps), 1-based
    w = kscale * _cubic(kscale * (u[:, None] - idx))
    w = w / w.sum(dim=1, keepdim=True)
    mirror = torch.cat([torch.arange(n_in), torch.arange(n_in - 1, -1, -1)])
    src = mirror[torch.remainder(idx.long() - 1, 2 * n_in)]  # (n_out, taps), 0-based
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.scatter_add_(1, src, w)
    return m.to(dtype=dtype, device=device)


def imresize_matlab(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB ``imresize(I, scale)`` (bicubic, antialiasing on) for (N, C, H, W) tensors."""
    h, w = x.shape[-2:]
    oh, ow = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    mh = _resize_matrix(h, oh, scale, x.dtype, x.device)  # (oh, h)
    mw = _resize_matrix(w, ow, scale, x.dtype, x.device)  # (ow, w)
    if _kernels() and x.dtype == torch.float64 and x.device.type == "cpu":
        # the matrices are banded (<= 10 taps a row): apply only their non-zero taps
        xb = np.ascontiguousarray(x.reshape(-1, h, w).numpy())
        out = np.empty((xb.shape[0], oh, ow))
        _banded_resize(xb, *_taps(h, oh, scale), *_taps(w, ow, scale), out)
        return torch.from_numpy(out).reshape(*x.shape[:-2], oh, ow)
    return mh @ x @ mw.T  # (N, C, oh, ow)


@functools.lru_cache(maxsize=32)
def _taps(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The banded :func:`_resize_matrix` as column indices and weights of each row's
    non-zero entries, (n_out, K) each, in increasing column order (zeros pad short rows)."""
    a = _resize_matrix(n_in, n_out, scale, torch.float64, "cpu").numpy()
    nz = a != 0
    k = int(nz.sum(1).max())
    idx = np.zeros((a.shape[0], k), np.int64)
    wts = np.zeros((a.shape[0], k))
    for r in range(a.shape[0]):
        cols = np.flatnonzero(nz[r])
        idx[r, :len(cols)], wts[r, :len(cols)] = cols, a[r, cols]
    return idx, wts


_GAMMA_GRID: dict = {}


def _aggd_table(dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The published search grid alpha = 0.2:0.001:10 and r(alpha) = G(2/a)^2 / (G(1/a) G(3/a))."""
    key = (dtype, device)
    if key not in _GAMMA_GRID:
        gam = torch.arange(0.2, 10 + 0.001, 0.001, dtype=torch.float64)
        r = torch.exp(2 * torch.lgamma(2 / gam) - torch.lgamma(1 / gam) - torch.lgamma(3 / gam))
        _GAMMA_GRID[key] = (gam.to(dtype=dtype, device=device), r.to(dtype=dtype, device=device))
    return _GAMMA_GRID[key]


def aggd_fit(x: torch.Tensor, right_inclusive: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moment-matching fit of an asymmetric generalised Gaussian (Lasmar et al. 2009).

    ``x``: (..., M) samples per row. Returns (alpha, sigma_left, sigma_right), each (...).
    See :func:`aggd_from_sums`."""
    from osdhuman.iqa.moments import sums_torch

    return aggd_from_sums(sums_torch(x), right_inclusive)


def aggd_from_sums(s: torch.Tensor, right_inclusive: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The AGGD fit from the moment sums of :mod:`osdhuman.iqa.moments` (..., 6).

    alpha is the grid value (0.2:0.001:10) whose r(alpha) is nearest to the corrected
    moment ratio, as the MATLAB reference code picks it; r is monotone on the grid, so a
    binary search replaces the (rows x 9801) table scan. ``right_inclusive``: zeros count
    on the right (x >= 0), as BRISQUE's reference; NIQE's counts x > 0.
    """
    s_neg, n_neg, s_pos, n_pos, n_zero, s_abs = s.unbind(-1)
    m = n_neg + n_pos + n_zero
    left = s_neg / n_neg
    right = s_pos / (n_pos + n_zero if right_inclusive else n_pos)
    sl, sr = left.sqrt(), right.sqrt()
    g = sl / sr
    rhat = (s_abs / m) ** 2 / ((s_neg + s_pos) / m)
    rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    gam, r = _aggd_table(s.dtype, s.device)
    i = torch.searchsorted(r, rnorm.nan_to_num(nan=0.0).contiguous()).clamp(1, r.numel() - 1)
    pick_lo = (rnorm - r[i - 1]).abs() <= (r[i] - rnorm).abs()
    alpha = gam[torch.where(pick_lo, i - 1, i)]
    # an undefined ratio (flat block: no negative or no positive samples) gives the first grid
    # value, as MATLAB's min() over an all-NaN vector does; sigma_left/right stay NaN.
    alpha = torch.where(torch.isnan(rnorm), gam[0].expand_as(alpha), alpha)
    return alpha, sl, sr


@numba.njit(inline="always")
def add_window_row(row, wrow, mu, sq):  # row (W + K - 1,), wrow (K,), mu / sq (W,) accumulated in place
    """One row of a window's taps: mu[j] += wrow[t] * row[j + t] and sq[j] += wrow[t] * row[j + t]^2,
    taps in order, a multiply then an add per tap. Inlined into its caller, so the caller's
    fastmath flags decide whether LLVM fuses them (PIQE's float32 sums do, to repeat pyiqa)."""
    w = mu.shape[0]
    if wrow.shape[0] == 7:  # the 7 taps per pixel in registers, same order (vectorises over j)
        w0, w1, w2, w3, w4, w5, w6 = wrow[0], wrow[1], wrow[2], wrow[3], wrow[4], wrow[5], wrow[6]
        for j in range(w):
            v0, v1, v2, v3 = row[j], row[j + 1], row[j + 2], row[j + 3]
            v4, v5, v6 = row[j + 4], row[j + 5], row[j + 6]
            a = mu[j] + w0 * v0
            a = a + w1 * v1
            a = a + w2 * v2
            a = a + w3 * v3
            a = a + w4 * v4
            a = a + w5 * v5
            mu[j] = a + w6 * v6
            q = sq[j] + w0 * (v0 * v0)
            q = q + w1 * (v1 * v1)
            q = q + w2 * (v2 * v2)
            q = q + w3 * (v3 * v3)
            q = q + w4 * (v4 * v4)
            q = q + w5 * (v5 * v5)
            sq[j] = q + w6 * (v6 * v6)
        return
    for t in range(wrow.shape[0]):
        wt = wrow[t]
        for j in range(w):
            v = row[j + t]
            mu[j] = mu[j] + wt * v
            sq[j] = sq[j] + wt * (v * v)


@numba.njit(cache=True, nogil=True)
def _mscn_numba(xp, win, c_arr, out):  # xp (B, H + kh - 1, W + kw - 1) padded, out (B, H, W)
    nb, h, w = out.shape
    kh, kw = win.shape
    c = c_arr[0]
    mu = np.empty(w, dtype=xp.dtype)
    sq = np.empty(w, dtype=xp.dtype)
    for b in range(nb):
        for i in range(h):
            mu[:] = 0
            sq[:] = 0
            for di in range(kh):  # taps in the torch path's order: row, then column
                add_window_row(xp[b, i + di], win[di], mu, sq)
            for j in range(w):
                var = abs(sq[j] - mu[j] * mu[j])
                out[b, i, j] = (xp[b, i + (kh - 1) // 2, j + (kw - 1) // 2] - mu[j]) / (np.sqrt(var) + c)


@numba.njit(cache=True, nogil=True)
def _sep_numba(xp, k, out):  # xp (B, H + K - 1, W + K - 1) padded -> out (B, H, W)
    nb, h, w = out.shape
    n = k.shape[0]
    wp = xp.shape[2]
    row = np.empty(wp)
    for b in range(nb):
        for i in range(h):  # one output row at a time (its K source rows stay in cache)
            row[:] = 0.0
            for t in range(n):  # vertical pass, taps in order (as the torch path)
                kt = k[t]
                src = xp[b, i + t]
                for j in range(wp):
                    row[j] = row[j] + kt * src[j]
            dst = out[b, i]
            dst[:] = 0.0
            for t in range(n):  # then the horizontal pass
                kt = k[t]
                for j in range(w):
                    dst[j] = dst[j] + kt * row[j + t]


@numba.njit(cache=True, nogil=True)
def _banded_resize(x, ih, wh, iw, ww, out):  # x (B, H, W) -> out (B, oh, ow): (mh @ x) @ mw.T
    nb, oh, ow = out.shape
    w = x.shape[2]
    tmp = np.empty((oh, w))
    for b in range(nb):
        for o in range(oh):  # vertical pass: rows of mh @ x
            t = tmp[o]
            t[:] = 0.0
            for k in range(ih.shape[1]):
                wt = wh[o, k]
                if wt != 0.0:
                    src = x[b, ih[o, k]]
                    for j in range(w):
                        t[j] += wt * src[j]
        for o in range(oh):  # horizontal pass: (.) @ mw.T
            t = tmp[o]
            for p in range(ow):
                acc = 0.0
                for k in range(iw.shape[1]):
                    acc += ww[p, k] * t[iw[p, k]]
                out[b, o, p] = acc
