"""Blur kernels of the Real-ESRGAN degradation, built for a whole batch at once.

Kinds (Real-ESRGAN, Wang et al. 2021, Sec. 3.1), with Q = [x y] S^-1 [x y]^T and S the rotated
covariance diag(sigma_x^2, sigma_y^2):
  iso / aniso                      k = exp(-Q / 2)
  generalized_iso / _aniso         k = exp(-Q^beta / 2)
  plateau_iso / _aniso             k = 1 / (Q^beta + 1)
  sinc (circular low-pass)         k = omega J1(omega r) / (2 pi r), k(0) = omega^2 / (4 pi)
Each kernel has odd support ``size`` and is zero-padded to ``max_size`` (21), then normalised to
sum 1. x is the column offset and y the row offset from the centre.

Kernels are built in float64 numpy on the host (both degradation paths use them: the CPU path
as they are, the batched torch path after ``torch.from_numpy``), with the analysis the CPU blur
routes need: the support that carries weight (:func:`crop_kernel`) and separability
(:func:`separable_factors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import j1

from osdhuman.degradation.params import KernelParams

__all__ = ["NEGLIGIBLE", "build_kernels", "crop_kernel", "separable_factors"]

NEGLIGIBLE = 1e-8  # total |kernel weight| a CPU route may drop (outputs are in [0, 1] or near)

_CODES = {"iso": 0, "aniso": 0, "generalized_iso": 1, "generalized_aniso": 1,
          "plateau_iso": 2, "plateau_aniso": 2, "sinc": 3, "identity": 4}


def build_kernels(params: Sequence[KernelParams], max_size: int = 21, dtype=np.float32) -> np.ndarray:
    """(N, max_size, max_size) kernels, each summing to 1 (float64 maths, returned as ``dtype``:
    float64 lets the CPU blur see exact zeros / separability before rounding)."""
    n = len(params)
    if n == 0:
        return np.zeros((0, max_size, max_size), dtype=dtype)
    code = np.array([_CODES[p.kind] for p in params])  # (N,)
    size = np.array([p.size for p in params], dtype=np.float64)
    sx = np.array([p.sigma_x or 1.0 for p in params])
    sy = np.array([p.sigma_y or 1.0 for p in params])
    th = np.array([p.rotation or 0.0 for p in params])
    beta = np.array([p.beta if p.beta is not None else 1.0 for p in params])
    omega = np.array([p.omega or 1.0 for p in params])
    if (size > max_size).any():
        raise ValueError(f"kernel size {int(size.max())} exceeds max_size {max_size}")

    r = max_size // 2
    ax = np.arange(-r, r + 1, dtype=np.float64)
    X = ax.reshape(1, 1, -1)  # (1, 1, M) column offset
    Y = ax.reshape(1, -1, 1)  # (1, M, 1) row offset
    c, s = np.cos(th).reshape(-1, 1, 1), np.sin(th).reshape(-1, 1, 1)
    ix, iy = (1.0 / sx**2).reshape(-1, 1, 1), (1.0 / sy**2).reshape(-1, 1, 1)
    a = c * c * ix + s * s * iy
    b = c * s * (ix - iy)
    d = s * s * ix + c * c * iy
    Q = a * X * X + 2 * b * X * Y + d * Y * Y  # (N, M, M)
    bt = beta.reshape(-1, 1, 1)
    cc = code.reshape(-1, 1, 1)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        gauss = np.exp(-0.5 * Q)
        general = np.exp(-0.5 * Q**bt)
        plateau = 1.0 / (Q**bt + 1.0)
        rad = np.broadcast_to(np.sqrt(X * X + Y * Y), Q.shape)  # (N, M, M)
        w = omega.reshape(-1, 1, 1)
        safe = np.where(rad == 0, 1.0, rad)
        sinc = np.where(rad == 0, w * w / (4 * np.pi), w * j1(w * safe) / (2 * np.pi * safe))
    ident = np.broadcast_to(((X == 0) & (Y == 0)).astype(np.float64), Q.shape)
    k = np.where(cc == 0, gauss, np.where(cc == 1, general, np.where(cc == 2, plateau, np.where(cc == 3, sinc, ident))))
    half = ((size - 1) / 2).reshape(-1, 1, 1)
    k = k * ((np.abs(X) <= half) & (np.abs(Y) <= half))  # the kernel's own odd support
    k = k / k.sum(axis=(1, 2), keepdims=True)
    return k.astype(dtype)


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
