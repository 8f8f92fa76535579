"""OpenCV's ``INTER_LANCZOS4`` upscaling of 8-bit images, bit for bit, about 2-3x faster.

Square crops of people are upscaled to 512 with Lanczos (the curation default); OpenCV has
no vectorised path for its 8x8 Lanczos kernel, and it was the largest cost before IQA
(~6 ms a crop on a quiet core). We repeat its arithmetic exactly: the same float32 tap
weights (``interpolateLanczos4``, normalised, scaled by 2048 and rounded to integers), source
indices clamped at the borders, and integer sums rounded once by ``(s + 2^21) >> 22`` and
saturated. Integer sums are exact, so we may run the vertical pass first (over contiguous
rows: it vectorises) and the horizontal one second; the result is OpenCV's (the tests compare
every pixel with ``cv2.resize``). numba compiles the loops.

    out = lanczos4_upscale(rgb_u8, 512)   # (h, w, C) uint8, h, w <= 512 -> (512, 512, C)
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

__all__ = ["lanczos4_upscale"]


_S45 = 0.70710678118654752440084436210485
_CS = np.array([[1, 0], [-_S45, -_S45], [0, 1], [_S45, -_S45], [-1, 0], [_S45, _S45], [0, -1], [-_S45, _S45]])


@functools.lru_cache(maxsize=1024)
def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_out, 8) clamped source indices and int32 weights (sum ~2048) of each output pixel."""
    idx = np.empty((n_out, 8), np.int64)
    wts = np.empty((n_out, 8), np.int32)
    _taps_numba(n_in, n_out, 1.0 / (n_out / n_in), _CS, idx, wts)
    return idx, wts


def lanczos4_upscale(img: np.ndarray, size: int) -> np.ndarray:
    """(h, w, C) uint8 -> (size, size, C) uint8, equal to ``cv2.resize(img, (size, size),
    interpolation=cv2.INTER_LANCZOS4)``."""
    img = np.ascontiguousarray(img)
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"expected (h, w, C) uint8, got {img.shape} {img.dtype}")
    h, w, c = img.shape
    iy, wy = _taps(h, size)
    ix, wx = _taps(w, size)
    t = np.empty((w, size * c), np.int32)
    _pass(img.reshape(h, w * c), iy, wy, c, t)  # vertical sums, stored transposed: t[x, y*c + ch]
    sums = np.empty((size, size * c), np.int32)
    _pass(t, ix, wx, c, sums)  # horizontal, as a vertical pass of the transpose -> sums[y, x*c + ch]
    out = np.empty((size, size * c), np.uint8)
    _round(sums, out)
    return out.reshape(size, size, c)


@numba.njit(cache=True, nogil=True)
def _taps_numba(n_in, n_out, scale, cs, idx, wts):
    eps = np.float32(1.1920928955078125e-07)  # FLT_EPSILON
    c = np.empty(8, np.float32)
    for dx in range(n_out):
        fx = np.float32((dx + 0.5) * scale - 0.5)
        sx = int(np.floor(fx))
        fx = np.float32(fx - np.float32(sx))
        if fx < eps:
            c[:] = 0
            c[3] = 1
        else:
            s = np.float32(0.0)
            y0 = -(np.float64(fx) + 3) * math.pi * 0.25
            s0, c0 = math.sin(y0), math.cos(y0)
            for i in range(8):
                y = -(np.float64(fx) + 3 - i) * math.pi * 0.25
                c[i] = np.float32((cs[i, 0] * s0 + cs[i, 1] * c0) / (y * y))
                s = np.float32(s + c[i])
            inv = np.float32(np.float32(1.0) / s)
            for i in range(8):
                c[i] = np.float32(c[i] * inv)
        for k in range(8):
            idx[dx, k] = min(max(sx + k - 3, 0), n_in - 1)
            wts[dx, k] = np.int32(np.rint(np.float64(np.float32(c[k] * np.float32(2048.0)))))


@numba.njit(cache=True, nogil=True)
def _pass(src, iy, wy, ch, out_t):
    """src (h, L = w*ch) -> out_t (w, n*ch) int32, transposed: row d of the weighted sums
    sum_k wy[d, k] * src[iy[d, k]] (over contiguous rows: vectorises), then written as
    column d of the transpose (pixel x, channel c -> out_t[x, d*ch + c])."""
    n = iy.shape[0]
    length = src.shape[1]
    blk = 16  # output rows per block: the transposed writes then touch blk*ch neighbours
    acc = np.empty((blk, length), np.int32)
    for d0 in range(0, n, blk):
        nd = min(blk, n - d0)
        for dd in range(nd):
            a = acc[dd]
            a[:] = 0
            for k in range(8):
                wk = np.int32(wy[d0 + dd, k])
                row = src[iy[d0 + dd, k]]
                for j in range(length):
                    a[j] += np.int32(row[j]) * wk
        for x in range(length // ch):
            dst = out_t[x]
            for dd in range(nd):
                for c in range(ch):
                    dst[(d0 + dd) * ch + c] = acc[dd, x * ch + c]


@numba.njit(cache=True, nogil=True)
def _round(sums, out):  # OpenCV's FixedPtCast<int, uchar, 22>: (s + 2^21) >> 22, saturated
    n, length = sums.shape
    for i in range(n):
        for j in range(length):
            v = (sums[i, j] + (1 << 21)) >> 22
            out[i, j] = min(max(v, 0), 255)
