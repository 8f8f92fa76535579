"""PIQE, the Perception-based Image Quality Evaluator (Venkatanath N. et al., NCC 2015).

MSCN coefficients of the luma are cut into 16x16 blocks. Among the spatially active blocks
(variance > 0.1), a block is distorted when one of its edge segments (6 pixels) is flat
(std < 0.1, blockiness) or when its centre-surround deviation marks Gaussian noise. Score:

    PIQE = 100 * (sum_active [D_k (1 - v_k) + N_k v_k] + 1) / (N_active + 1)

(D_k noticeable-distortion flag, N_k noise flag, v_k block variance); lower is better.

Agreement with pyiqa (the paper's evaluation code). The block tests are thresholds on
statistics of float32 MSCN coefficients, and in low-contrast areas the float32 cancellation
in ``E[x^2] - mu^2`` moves a coefficient by several per cent, so the coefficients must be
pyiqa's own bits. On CPU we compute them with numba kernels that repeat its arithmetic:
the 7x7 Gaussian sums are sequential fused multiply-adds in row-major tap order (what
oneDNN's direct convolution, behind pyiqa's ``conv2d``, does; bit-equal on this build), and
the elementwise steps are the same float32 operations in the same order (including its
``sqrt(x + eps)``). The block statistics (variances, standard deviations of 256, 32, 224 and
6 values) are then taken in float64: pyiqa's float32 reductions differ from them by a few
float32 ulps, so a block flips only if its statistic lies within ~1e-7 (relative) of a
threshold; tests compare every block flag with pyiqa's masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from osdhuman.iqa.batch import ImageBatch
from osdhuman.iqa.filters import add_window_row, gaussian_window, pad

__all__ = ["PiqeBlocks", "piqe", "piqe_blocks", "piqe_from_luma"]

_EPS32 = float(np.finfo(np.float32).eps)  # pyiqa's safe_sqrt: sqrt(x + eps)


def _mirror_index(n: int, extra: int) -> np.ndarray:
    """Indices 0..n-1 followed by ``extra`` mirrored ones, the edge repeated (n-1, n-2, ...),
    reflecting again as often as needed (a triangular wave, for pads longer than n)."""
    m = np.arange(n + extra) % (2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _window() -> np.ndarray:
    """pyiqa's fspecial(7, 7/6): the float64 Gaussian rounded to float32."""
    return gaussian_window(7, 7.0 / 6.0).astype(np.float32)


@dataclass
class PiqeBlocks:
    """Per-block statistics and flags, (N, bh, bw) each, in the padded image's block grid."""

    var: np.ndarray  # float64, unbiased variance of the block's MSCN coefficients
    active: np.ndarray  # bool, var > activity threshold
    impaired: np.ndarray  # bool, a flat edge segment (noticeable distortion)
    noisy: np.ndarray  # bool, the centre-surround noise criterion

    def scores(self) -> np.ndarray:
        """(N,) float64 PIQE."""
        a = self.active.reshape(len(self.var), -1)
        v = self.var.reshape(a.shape)
        dist = (a & self.impaired.reshape(a.shape)) * (1 - v) + (a & self.noisy.reshape(a.shape)) * v
        return (dist.sum(1) + 1.0) / (a.sum(1) + 1.0) * 100.0


def _stretched_padded(yiq: np.ndarray, block_size: int) -> np.ndarray:
    """(N, H, W) float32 Y in [0, 1] -> (N, H' + 6, W' + 6) float32: stretched to 0..255 and
    rounded (pyiqa: ``round(255 * (y / max))``), padded right / bottom by ``size % block``
    (symmetric, edge-including, as pyiqa after MATLAB), then by 3 on every side (replicate,
    for the 7x7 window). A black image stays 0 (pyiqa: NaN)."""
    n, h, w = yiq.shape
    peak = yiq.reshape(n, -1).max(1).reshape(n, 1, 1)
    peak = np.where(peak > 0, peak, np.float32(1.0)).astype(np.float32)
    z = np.rint(np.float32(255.0) * (yiq / peak)).astype(np.float32)
    if h % block_size == 0 and w % block_size == 0:  # whole blocks (512 crops): replicate only
        return pad(z, 3, 3, "replicate")
    rows = _mirror_index(h, h % block_size)
    cols = _mirror_index(w, w % block_size)
    rows = rows[np.clip(np.arange(-3, len(rows) + 3), 0, len(rows) - 1)]
    cols = cols[np.clip(np.arange(-3, len(cols) + 3), 0, len(cols) - 1)]
    return np.ascontiguousarray(z[:, rows][:, :, cols])


def piqe_blocks(yiq: np.ndarray, block_size: int = 16, activity_threshold: float = 0.1,
                impaired_threshold: float = 0.1, segment: int = 6) -> PiqeBlocks:
    """Block statistics of (N, H, W) float32 Y-of-YIQ planes in [0, 1] (CPU, numba)."""
    zp = _stretched_padded(np.ascontiguousarray(yiq, dtype=np.float32), block_size)  # (N, H'+6, W'+6)
    n, hp, wp = zp.shape[0], zp.shape[1] - 6, zp.shape[2] - 6
    mu = np.empty((n, hp, wp), np.float32)
    s2 = np.empty((n, hp, wp), np.float32)
    _gauss_sums(zp, _window(), mu, s2)
    m = np.empty((n, hp, wp), np.float32)
    _normalise(zp, mu, s2, np.float32(_EPS32), m)
    bh, bw = hp // block_size, wp // block_size
    var = np.empty((n, bh, bw))
    flags = np.zeros((n, bh, bw, 3), np.bool_)
    _block_stats(m, block_size, segment, activity_threshold, impaired_threshold, var, flags)
    return PiqeBlocks(var, flags[..., 0], flags[..., 1], flags[..., 2])


def piqe_from_luma(yiq: np.ndarray, **settings) -> np.ndarray:
    """PIQE of (N, H, W) float32 Y-of-YIQ planes in [0, 1] -> (N,) float64."""
    return piqe_blocks(yiq, **settings).scores()


def piqe(images, block_size: int = 16, activity_threshold: float = 0.1, impaired_threshold: float = 0.1,
         segment: int = 6) -> np.ndarray:
    """PIQE of the images (what :class:`~osdhuman.iqa.batch.ImageBatch` takes) -> (N,) float64 in [0, 100]."""
    return piqe_from_luma(ImageBatch.of(images).yiq(), block_size=block_size, activity_threshold=activity_threshold,
                          impaired_threshold=impaired_threshold, segment=segment)


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _gauss_sums(zp, win, mu, s2):  # zp (N, H+6, W+6) f32 -> mu, s2 (N, H, W) f32
    """Window sums of z and z^2: per pixel, sequential FMAs over the taps in row-major
    order ("contract" lets LLVM fuse each multiply-add; nothing is reassociated)."""
    n, h, w = mu.shape
    for b in range(n):
        for i in range(h):
            mu[b, i, :] = 0
            s2[b, i, :] = 0
            for di in range(win.shape[0]):
                add_window_row(zp[b, i + di], win[di], mu[b, i], s2[b, i])


@numba.njit(cache=True, nogil=True)
def _normalise(zp, mu, s2, eps, out):  # float32, no fusing: pyiqa's elementwise ops
    n, h, w = mu.shape
    one = np.float32(1.0)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                m = mu[b, i, j]
                sd = np.sqrt(np.abs(s2[b, i, j] - m * m) + eps)
                out[b, i, j] = (zp[b, i + 3, j + 3] - m) / (sd + one)


@numba.njit(cache=True, nogil=True)
def _col_stats(blk, skip_a, skip_b, keep):
    """Unbiased std of the block's columns: ``keep`` True -> only columns skip_a, skip_b;
    False -> every column except them (float64, two passes)."""
    h, w = blk.shape
    s = 0.0
    k = 0
    for i in range(h):
        for j in range(w):
            if (j == skip_a or j == skip_b) == keep:
                s += np.float64(blk[i, j])
                k += 1
    mean = s / k
    q = 0.0
    for i in range(h):
        for j in range(w):
            if (j == skip_a or j == skip_b) == keep:
                d = np.float64(blk[i, j]) - mean
                q += d * d
    return np.sqrt(q / (k - 1))


@numba.njit(cache=True, nogil=True)
def _flat_segment(edge, seg, imp_t):  # any window of ``seg`` values with unbiased std < imp_t
    for s0 in range(edge.shape[0] - seg + 1):
        s = 0.0
        for t in range(seg):
            s += edge[s0 + t]
        mean = s / seg
        q = 0.0
        for t in range(seg):
            d = edge[s0 + t] - mean
            q += d * d
        if np.sqrt(q / (seg - 1)) < imp_t:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _block_stats(m, bs, seg, act_t, imp_t, var, flags):
    """Per block of the MSCN image m (N, H, W): variance, then flags (active, impaired, noisy)."""
    n, bh, bw = var.shape
    c = bs // 2
    edge = np.empty(bs)
    big = np.finfo(np.float64).max
    for b in range(n):
        for bi in range(bh):
            for bj in range(bw):
                blk = m[b, bi * bs:(bi + 1) * bs, bj * bs:(bj + 1) * bs]
                s = 0.0
                for i in range(bs):
                    for j in range(bs):
                        s += np.float64(blk[i, j])
                mean = s / (bs * bs)
                q = 0.0
                for i in range(bs):
                    for j in range(bs):
                        d = np.float64(blk[i, j]) - mean
                        q += d * d
                vr = q / (bs * bs - 1)
                var[b, bi, bj] = vr
                flags[b, bi, bj, 0] = vr > act_t
                # noise criterion: centre (two middle columns) vs surround standard deviation. The
                # reference code deletes the two centre columns one after the other, so its second
                # deletion hits the column after the centre pair: the surround excludes columns
                # c-1 and c+1 (0-based) and keeps column c. We follow it.
                s_c = _col_stats(blk, c - 1, c, True)
                s_s = _col_stats(blk, c - 1, c + 1, False)
                if s_s > 0:
                    cs = s_c / s_s
                elif s_c > 0:
                    cs = big  # inf -> nan_to_num's largest finite
                else:
                    cs = 0.0  # 0 / 0 -> nan_to_num's 0
                sigma = np.sqrt(vr)
                hi = max(sigma, cs)
                beta = abs(sigma - cs) / hi if hi > 0 else np.nan
                flags[b, bi, bj, 2] = sigma > 2 * beta
                imp = False
                for e in range(4):  # top, right, bottom, left edge
                    for t in range(bs):
                        if e == 0:
                            edge[t] = blk[0, t]
                        elif e == 1:
                            edge[t] = blk[t, bs - 1]
                        elif e == 2:
                            edge[t] = blk[bs - 1, t]
                        else:
                            edge[t] = blk[t, 0]
                    if _flat_segment(edge, seg, imp_t):
                        imp = True
                        break
                flags[b, bi, bj, 1] = imp
