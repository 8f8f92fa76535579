"""Image-processing primitives shared by the offline metrics: numpy arrays in, numpy out,
the loops compiled by numba (CPU).

    mscn(y, window)            # (N, H, W) float64 -> MSCN coefficients, one fused pass
    imresize_matlab(y, 0.5)    # MATLAB imresize, bicubic with antialiasing, banded taps
    aggd_from_sums(sums)       # AGGD fit from osdhuman.iqa.moments' one-pass sums
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from osdhuman.iqa.moments import row_sums

__all__ = ["aggd_fit", "aggd_from_sums", "gaussian_window", "imresize_matlab", "lgamma", "mscn", "pad"]


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``: normalised (size, size) Gaussian."""
    half = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float64) - half
    h = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2.0 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    return h / h.sum()


@numba.vectorize(["float64(float64)"], cache=True)
def lgamma(v):  # the C library's lgamma, elementwise
    return math.lgamma(v)


def pad(x: np.ndarray, lo: int, hi: int, padding: str) -> np.ndarray:
    """(B, H, W) -> (B, H + lo + hi, W + lo + hi) C-contiguous; padding 'replicate' (edge
    repeated), 'zeros' or 'valid' (none)."""
    if padding == "valid":
        return np.ascontiguousarray(x)
    if padding not in ("replicate", "zeros"):
        raise ValueError(f"unknown padding {padding!r}")
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


def mscn(x: np.ndarray, window: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (Mittal et al. 2012, Eq. 1) of (N, H, W)
    float64 planes: (I - mu) / (sigma + C), mu and sigma^2 the window-weighted local mean and
    variance (|E[x^2] - mu^2|), replicate padding; one fused pass per row (:func:`_mscn_numba`),
    taps summed row by row, left to right."""
    kh, kw = window.shape
    if kh != kw:
        raise ValueError(f"mscn takes square windows, got {kh}x{kw}")
    xp = pad(np.asarray(x, dtype=np.float64), (kh - 1) // 2, kh // 2, "replicate")
    out = np.empty(x.shape, dtype=np.float64)
    _mscn_numba(xp, np.ascontiguousarray(window, dtype=np.float64), np.array([c]), out)
    return out


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _resize_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """(n_out, n_in) float64 matrix of MATLAB imresize bicubic weights, antialiased when
    shrinking, with MATLAB's symmetric (edge-repeating) boundary."""
    width = 4.0 / scale if scale < 1 else 4.0
    kscale = scale if scale < 1 else 1.0
    x = np.arange(1, n_out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinate of each output pixel
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # (n_out, taps), 1-based
    w = kscale * _cubic(kscale * (u[:, None] - idx))
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    src = mirror[np.remainder(idx.astype(np.int64) - 1, 2 * n_in)]  # (n_out, taps), 0-based
    m = np.zeros((n_out, n_in))
    for t in range(taps):  # in tap order, as a scatter-add over each row
        np.add.at(m, (np.arange(n_out), src[:, t]), w[:, t])
    return m


def imresize_matlab(x: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(I, scale)`` (bicubic, antialiasing on) of (..., H, W) float64 planes."""
    h, w = x.shape[-2:]
    oh, ow = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    # the matrices are banded (<= 10 taps a row): apply only their non-zero taps
    xb = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1, h, w))
    out = np.empty((xb.shape[0], oh, ow))
    _banded_resize(xb, *_taps(h, oh, scale), *_taps(w, ow, scale), out)
    return out.reshape(*x.shape[:-2], oh, ow)


@functools.lru_cache(maxsize=32)
def _taps(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The banded :func:`_resize_matrix` as column indices and weights of each row's
    non-zero entries, (n_out, K) each, in increasing column order (zeros pad short rows)."""
    a = _resize_matrix(n_in, n_out, scale)
    nz = a != 0
    k = int(nz.sum(1).max())
    idx = np.zeros((a.shape[0], k), np.int64)
    wts = np.zeros((a.shape[0], k))
    for r in range(a.shape[0]):
        cols = np.flatnonzero(nz[r])
        idx[r, :len(cols)], wts[r, :len(cols)] = cols, a[r, cols]
    return idx, wts


@functools.lru_cache(maxsize=1)
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    """The published search grid alpha = 0.2:0.001:10 and r(alpha) = G(2/a)^2 / (G(1/a) G(3/a))."""
    gam = np.arange(0.2, 10 + 0.001, 0.001, dtype=np.float64)
    r = np.exp(2 * lgamma(2 / gam) - lgamma(1 / gam) - lgamma(3 / gam))
    return gam, r


def aggd_fit(x: np.ndarray, right_inclusive: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching fit of an asymmetric generalised Gaussian (Lasmar et al. 2009).

    ``x``: (B, M) samples per row. Returns (alpha, sigma_left, sigma_right), each (B,).
    See :func:`aggd_from_sums`."""

    return aggd_from_sums(row_sums(x), right_inclusive)


def aggd_from_sums(s: np.ndarray, right_inclusive: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The AGGD fit from the moment sums of :mod:`osdhuman.iqa.moments` (..., 6).

    alpha is the grid value (0.2:0.001:10) whose r(alpha) is nearest to the corrected
    moment ratio, as the MATLAB reference code picks it; r is monotone on the grid, so a
    binary search replaces the (rows x 9801) table scan. ``right_inclusive``: zeros count
    on the right (x >= 0), as BRISQUE's reference; NIQE's counts x > 0.
    """
    s_neg, n_neg, s_pos, n_pos, n_zero, s_abs = np.moveaxis(s, -1, 0)
    m = n_neg + n_pos + n_zero
    with np.errstate(divide="ignore", invalid="ignore"):  # a flat block: 0 / 0 -> NaN, as below
        left = s_neg / n_neg
        right = s_pos / (n_pos + n_zero if right_inclusive else n_pos)
        sl, sr = np.sqrt(left), np.sqrt(right)
        g = sl / sr
        rhat = (s_abs / m) ** 2 / ((s_neg + s_pos) / m)
        rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    gam, r = _aggd_table()
    i = np.clip(np.searchsorted(r, np.nan_to_num(rnorm, nan=0.0)), 1, r.size - 1)
    pick_lo = np.abs(rnorm - r[i - 1]) <= np.abs(r[i] - rnorm)
    alpha = gam[np.where(pick_lo, i - 1, i)]
    # an undefined ratio (flat block: no negative or no positive samples) gives the first grid
    # value, as MATLAB's min() over an all-NaN vector does; sigma_left/right stay NaN.
    alpha = np.where(np.isnan(rnorm), gam[0], alpha)
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
            for di in range(kh):  # taps row by row, then column
                add_window_row(xp[b, i + di], win[di], mu, sq)
            for j in range(w):
                var = abs(sq[j] - mu[j] * mu[j])
                out[b, i, j] = (xp[b, i + (kh - 1) // 2, j + (kw - 1) // 2] - mu[j]) / (np.sqrt(var) + c)


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
