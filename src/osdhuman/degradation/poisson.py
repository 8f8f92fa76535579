"""Poisson draws of the Real-ESRGAN noise by exact inversion of a table of CDFs (numpy).

Real-ESRGAN's Poisson noise draws P ~ Poisson(q v) with q = k / 255 an 8-bit level and
v = 2^e (e = ceil(log2(distinct levels of the image)) <= 8), so the rate only takes the 2,304
values k 2^e / 255. We invert a float64 CDF table of those rates at per-pixel uniforms: the
smallest n with CDF(n) > u. A guide table per exponent block answers directly for the bucket
floor(u J) when the CDF does not step inside it (about 98% of pixels); the rest search on from
the bucket's lower bound. The tables are built here once, on the host, and shared by both
degradation paths (the batched torch path copies them to its device), so the two paths draw
the same counts from the same uniforms.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

import numba
import numpy as np

__all__ = ["J", "K", "built_blocks", "cdf_table", "guide_from_cdf", "guide_table", "sample_levels"]

K = 512  # support of the table: P(X >= 512 | rate 256) is far below float64 resolution
J = 4096  # guide-table resolution in u
_LOCK = threading.Lock()  # the degrade pool's threads build each table once
_CDF: list[np.ndarray] = []
_GUIDE = np.zeros(9 * 256 * J, dtype=np.int16)
_BUILT: set[int] = set()  # exponent blocks of _GUIDE built so far


def cdf_table() -> np.ndarray:
    """(9 * 256, K) float64: row e * 256 + k holds CDF(n) of Poisson(k 2^e / 255), n < K."""
    with _LOCK:
        if not _CDF:
            _CDF.append(_build_cdf())
        return _CDF[0]


def _build_cdf() -> np.ndarray:
    e = np.arange(9, dtype=np.float64).reshape(9, 1, 1)
    k = np.arange(256, dtype=np.float64).reshape(1, 256, 1)
    lam = k * np.power(2.0, e) / 255.0  # (9, 256, 1)
    n = np.arange(K, dtype=np.float64).reshape(1, 1, K)
    lgam = np.array([math.lgamma(v + 1) for v in range(K)]).reshape(1, 1, K)
    with np.errstate(divide="ignore"):
        logpmf = np.where(lam > 0, n * np.log(np.maximum(lam, 1e-300)) - lam - lgam,
                          np.where(n == 0, 0.0, -np.inf))
    cdf = np.minimum(np.cumsum(np.exp(logpmf), axis=-1), 1.0)  # (9, 256, K)
    cdf[..., -1] = 1.0
    return cdf.reshape(9 * 256, K)


def guide_from_cdf(cdf: np.ndarray) -> np.ndarray:
    """(R, J) int16 guide codes 2 n + jump: n = #{n : CDF_r(n) <= j / J} (= searchsorted(CDF_r,
    j / J, right=True)) and jump = 1 when the CDF also passes a step inside [j / J, (j + 1) / J).
    CDF * J is exact in float64 (J is a power of 2), so CDF(n) <= j / J exactly when
    ceil(CDF(n) J) <= j: a histogram of ceil(CDF J) per row, summed up (20x faster than the
    searchsorted it equals)."""
    R, n_k = cdf.shape
    c = np.ceil(cdf * J).astype(np.int64)  # (R, K) in 0..J
    hist = np.bincount((np.arange(R).reshape(-1, 1) * (J + 1) + c).ravel(), minlength=R * (J + 1))
    g = np.minimum(hist.reshape(R, J + 1).cumsum(axis=1), n_k - 1)  # (R, J + 1)
    code = 2 * g[:, :-1] + (g[:, 1:] != g[:, :-1])
    return code.astype(np.int16)


def guide_table(exponents: Iterable[int]) -> np.ndarray:
    """(9 * 256 * J,) int16 guide codes, with the blocks of ``exponents`` built (each exponent
    block, 256 rows, is built the first time a draw needs it: 0.08 s each; a folder of photos
    needs one or two of the nine). Blocks never built stay zero and are never read."""
    cdf = cdf_table()
    with _LOCK:
        for e in sorted({int(v) for v in exponents} - _BUILT):
            _GUIDE[e * 256 * J:(e + 1) * 256 * J] = guide_from_cdf(cdf[e * 256:(e + 1) * 256]).ravel()
            _BUILT.add(e)
    return _GUIDE


def built_blocks() -> set[int]:
    """The exponent blocks of the guide table built so far."""
    with _LOCK:
        return set(_BUILT)


def sample_levels(k: np.ndarray, e: int, u: np.ndarray) -> np.ndarray:
    """Poisson(k 2^e / 255) counts (int32, k's shape) at uniforms u (float32 in [0, 1)):
    the smallest n with CDF(n) > u, for 8-bit levels k (any integer dtype) and one exponent e."""
    out = np.empty(k.shape, np.int32)
    _invert(k.reshape(-1), int(e), u.reshape(-1), guide_table([e]), cdf_table(), out.reshape(-1))
    return out


@numba.njit(cache=True, nogil=True)
def _invert(k, e, u, guide, cdf, out):
    n_k = cdf.shape[1]
    for i in range(k.shape[0]):
        row = e * 256 + np.int64(k[i])
        j = min(np.int64(u[i] * np.float32(J)), J - 1)
        code = guide[row * J + j]
        n = np.int64(code >> 1)
        if code & 1:  # a CDF step inside the bucket: CDF(n - 1) <= j / J <= u, search on
            uu = np.float64(u[i])
            while n < n_k - 1 and cdf[row, n] <= uu:
                n += 1
        out[i] = n
