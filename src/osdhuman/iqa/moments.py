"""One-pass AGGD moment sums for NIQE and BRISQUE on CPU (numba), the torch path elsewhere.

The AGGD fit of NIQE / BRISQUE needs, per row of samples, the sums of squares of the negative
and the positive samples, their counts and the sum of absolute values. In torch each is a
separate pass over a temporary (x*x, masks, products of neighbours); on CPU that is most of
the metrics' time. These kernels read each sample once and form the neighbour products on the
fly, so no product image is ever materialised. We use numba (a maintained JIT compiler) for
the loops; summation is sequential in float64, which differs from torch's pairwise sums by
~1e-13 relative (far below the metrics' agreement tolerances).

Every function returns sums of shape (..., 6): ``[sum_{x<0} x^2, n_{x<0}, sum_{x>0} x^2,
n_{x>0}, n_{x==0}, sum |x|]``.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

__all__ = ["ENABLED", "block_pair_sums", "image_pair_sums", "row_sums", "sums_torch", "tiled_pair_sums",
           "use_kernels"]


ENABLED = True  # set False to take the torch path everywhere (tests compare the two)


def use_kernels() -> bool:
    return ENABLED


def sums_torch(x: torch.Tensor) -> torch.Tensor:
    """(..., M) -> (..., 6) with torch (any device)."""
    xx = x * x
    neg, pos = x < 0, x > 0
    return torch.stack([(xx * neg).sum(-1), neg.sum(-1).to(x.dtype), (xx * pos).sum(-1), pos.sum(-1).to(x.dtype),
                        (x == 0).sum(-1).to(x.dtype), x.abs().sum(-1)], dim=-1)


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
        _line(o, 1, row, left, w)  # torch.roll shifts (0, 1): x[i, j - 1]
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


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to(torch.float64).numpy())


def row_sums(x: torch.Tensor) -> torch.Tensor:
    """(B, M) float64 -> (B, 6)."""
    if not use_kernels() or x.device.type != "cpu":
        return sums_torch(x)
    out = np.zeros((x.shape[0], 6))
    _row_sums(_np(x), out[:, None, :])
    return torch.from_numpy(out)


def block_pair_sums(blocks: torch.Tensor) -> torch.Tensor:
    """(B, h, w) MSCN blocks -> (B, 5, 6): the coefficients, then their products with the
    4 neighbours (0,1), (1,0), (1,1), (1,-1), circular within the block (NIQE's circshift)."""
    if not use_kernels() or blocks.device.type != "cpu":
        prods = [blocks] + [blocks * torch.roll(blocks, shifts=s, dims=(1, 2)) for s in ((0, 1), (1, 0), (1, 1), (1, -1))]
        return torch.stack([sums_torch(p.flatten(1)) for p in prods], dim=1)
    out = np.zeros((blocks.shape[0], 5, 6))
    _block_pair_sums(_np(blocks), out)
    return torch.from_numpy(out)


def tiled_pair_sums(m: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) MSCN image -> (N * nb, 5, 6): :func:`block_pair_sums` of its whole
    ``size`` x ``size`` tiles in row-major order, read in place (no block copies)."""
    n, h, w = m.shape
    if not use_kernels() or m.device.type != "cpu":
        b = m[:, : h // size * size, : w // size * size].unfold(1, size, size).unfold(2, size, size)
        return block_pair_sums(b.reshape(-1, size, size))
    out = np.zeros((n * (h // size) * (w // size), 5, 6))
    _tiled_pair_sums(_np(m), size, out)
    return torch.from_numpy(out)


def image_pair_sums(m: torch.Tensor) -> torch.Tensor:
    """(N, H, W) MSCN image -> (N, 5, 6): the coefficients, then the horizontal, vertical,
    main- and secondary-diagonal neighbour products inside the image (BRISQUE)."""
    if not use_kernels() or m.device.type != "cpu":
        prods = [m, m[:, :, :-1] * m[:, :, 1:], m[:, :-1, :] * m[:, 1:, :], m[:, :-1, :-1] * m[:, 1:, 1:],
                 m[:, 1:, :-1] * m[:, :-1, 1:]]
        return torch.stack([sums_torch(p.flatten(1)) for p in prods], dim=1)
    out = np.zeros((m.shape[0], 5, 6))
    _image_pair_sums(_np(m), out)
    return torch.from_numpy(out)
