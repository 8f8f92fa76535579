"""One-pass AGGD moment sums for NIQE and BRISQUE (numba, CPU).

The AGGD fit of NIQE / BRISQUE needs, per row of samples, the sums of squares of the negative
and the positive samples, their counts and the sum of absolute values. Written as array
expressions each is a separate pass over a temporary (x*x, masks, products of neighbours);
these kernels read each sample once and form the neighbour products on the fly, so no product
image is ever materialised. We use numba (a maintained JIT compiler) for the loops; the sums
are float64, reassociated so that they vectorise (the order differs from a sequential sum by
~1e-13 relative, far below the metrics' agreement tolerances).

Every function returns sums of shape (..., 6): ``[sum_{x<0} x^2, n_{x<0}, sum_{x>0} x^2,
n_{x>0}, n_{x==0}, sum |x|]``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["block_pair_sums", "image_pair_sums", "row_sums", "tiled_pair_sums"]


_FM = {"reassoc", "contract"}  # reassociation lets the sums vectorise (order differs ~1e-13 relative)


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _line(out, k, a, b, n):
    """Accumulate the n products a[i] * b[i] (b None: a[i]) into out[k] branch-free."""
    s_neg = 0.0
    c_neg = 0.0
    s_pos = 0.0
    c_pos = 0.0
    s_abs = 0.0
    for i in range(n):
        v = a[i] * b[i]
        v2 = v * v
        ng = 1.0 if v < 0.0 else 0.0
        ps = 1.0 if v > 0.0 else 0.0
        s_neg += v2 * ng
        c_neg += ng
        s_pos += v2 * ps
        c_pos += ps
        s_abs += abs(v)
    out[k, 0] += s_neg
    out[k, 1] += c_neg
    out[k, 2] += s_pos
    out[k, 3] += c_pos
    out[k, 4] += n - c_neg - c_pos
    out[k, 5] += s_abs


@numba.njit(cache=True, nogil=True)
def _row_sums(x, out):  # x (B, M), out (B, 1, 6)
    one = np.ones(x.shape[1])
    for b in range(x.shape[0]):
        _line(out[b], 0, x[b], one, x.shape[1])


@numba.njit(cache=True, nogil=True)
def _block_pair_sums(blocks, out):  # blocks (B, h, w) -> out (B, 5, 6); circular neighbours
    for b in range(blocks.shape[0]):
        _one_block(blocks[b], out[b])


@numba.njit(cache=True, nogil=True)
def _tiled_pair_sums(m, size, out):  # m (N, H, W), whole size x size tiles -> out (N * nb, 5, 6)
    n, h, w = m.shape
    nh, nw = h // size, w // size
    tile = np.empty((size, size))  # a contiguous copy: strided views do not vectorise
    k = 0
    for b in range(n):
        for bi in range(nh):
            for bj in range(nw):
                tile[:, :] = m[b, bi * size:(bi + 1) * size, bj * size:(bj + 1) * size]
                _one_block(tile, out[k])
                k += 1


@numba.njit(cache=True, nogil=True)
def _one_block(blk, o):  # blk (h, w) -> o (5, 6)
    h, w = blk.shape
    one = np.ones(w)
    left = np.empty(w)
    right = np.empty(w)
    for i in range(h):
        row = blk[i]
        up = blk[(i - 1) % h]
        left[0] = row[w - 1]
        left[1:] = row[:w - 1]
        _line(o, 0, row, one, w)
        _line(o, 1, row, left, w)  # shift (0, 1): x[i, j - 1]
        _line(o, 2, row, up, w)  # (1, 0): x[i - 1, j]
        left[0] = up[w - 1]
        left[1:] = up[:w - 1]
        _line(o, 3, row, left, w)  # (1, 1): x[i - 1, j - 1]
        right[w - 1] = up[0]
        right[:w - 1] = up[1:]
        _line(o, 4, row, right, w)  # (1, -1): x[i - 1, j + 1]


@numba.njit(cache=True, nogil=True)
def _image_pair_sums(m, out):  # m (N, H, W) -> out (N, 5, 6); neighbours inside the image
    n, h, w = m.shape
    one = np.ones(w)
    for b in range(n):
        o = out[b]
        for i in range(h):
            row = m[b, i]
            _line(o, 0, row, one, w)
            _line(o, 1, row[:w - 1], row[1:], w - 1)  # horizontal
            if i + 1 < h:
                nxt = m[b, i + 1]
                _line(o, 2, row, nxt, w)  # vertical
                _line(o, 3, row[:w - 1], nxt[1:], w - 1)  # main diagonal
                _line(o, 4, nxt[:w - 1], row[1:], w - 1)  # secondary: m[1:, :-1] * m[:-1, 1:]


def _f64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def row_sums(x: np.ndarray) -> np.ndarray:
    """(B, M) -> (B, 6)."""
    out = np.zeros((x.shape[0], 6))
    _row_sums(_f64(x), out[:, None, :])
    return out


def block_pair_sums(blocks: np.ndarray) -> np.ndarray:
    """(B, h, w) MSCN blocks -> (B, 5, 6): the coefficients, then their products with the
    4 neighbours (0,1), (1,0), (1,1), (1,-1), circular within the block (NIQE's circshift)."""
    out = np.zeros((blocks.shape[0], 5, 6))
    _block_pair_sums(_f64(blocks), out)
    return out


def tiled_pair_sums(m: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) MSCN image -> (N * nb, 5, 6): :func:`block_pair_sums` of its whole
    ``size`` x ``size`` tiles in row-major order."""
    n, h, w = m.shape
    out = np.zeros((n * (h // size) * (w // size), 5, 6))
    _tiled_pair_sums(_f64(m), size, out)
    return out


def image_pair_sums(m: np.ndarray) -> np.ndarray:
    """(N, H, W) MSCN image -> (N, 5, 6): the coefficients, then the horizontal, vertical,
    main- and secondary-diagonal neighbour products inside the image (BRISQUE)."""
    out = np.zeros((m.shape[0], 5, 6))
    _image_pair_sums(_f64(m), out)
    return out
