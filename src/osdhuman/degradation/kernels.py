"""Blur kernels of the Real-ESRGAN degradation, built for a whole batch at once.

Kinds (Real-ESRGAN, Wang et al. 2021, Sec. 3.1), with Q = [x y] S^-1 [x y]^T and S the rotated
covariance diag(sigma_x^2, sigma_y^2):
  iso / aniso                      k = exp(-Q / 2)
  generalized_iso / _aniso         k = exp(-Q^beta / 2)
  plateau_iso / _aniso             k = 1 / (Q^beta + 1)
  sinc (circular low-pass)         k = omega J1(omega r) / (2 pi r), k(0) = omega^2 / (4 pi)
Each kernel has odd support ``size`` and is zero-padded to ``max_size`` (21), then normalised to
sum 1. x is the column offset and y the row offset from the centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from osdhuman.degradation.params import KernelParams

__all__ = ["build_kernels"]

_CODES = {"iso": 0, "aniso": 0, "generalized_iso": 1, "generalized_aniso": 1,
          "plateau_iso": 2, "plateau_aniso": 2, "sinc": 3, "identity": 4}


def build_kernels(params: Sequence[KernelParams], max_size: int = 21,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, max_size, max_size) kernels on the CPU, each summing to 1 (float64 maths, returned as
    ``dtype``: float64 lets the CPU blur see exact zeros / separability before rounding)."""
    n = len(params)
    if n == 0:
        return torch.zeros(0, max_size, max_size, dtype=dtype)
    f64 = torch.float64
    code = torch.tensor([_CODES[p.kind] for p in params])  # (N,)
    size = torch.tensor([p.size for p in params], dtype=f64)
    sx = torch.tensor([p.sigma_x or 1.0 for p in params], dtype=f64)
    sy = torch.tensor([p.sigma_y or 1.0 for p in params], dtype=f64)
    th = torch.tensor([p.rotation or 0.0 for p in params], dtype=f64)
    beta = torch.tensor([p.beta if p.beta is not None else 1.0 for p in params], dtype=f64)
    omega = torch.tensor([p.omega or 1.0 for p in params], dtype=f64)
    if (size > max_size).any():
        raise ValueError(f"kernel size {int(size.max())} exceeds max_size {max_size}")

    r = max_size // 2
    ax = torch.arange(-r, r + 1, dtype=f64)
    X = ax.view(1, 1, -1)  # (1, 1, M) column offset
    Y = ax.view(1, -1, 1)  # (1, M, 1) row offset
    c, s = torch.cos(th).view(-1, 1, 1), torch.sin(th).view(-1, 1, 1)
    ix, iy = (1.0 / sx**2).view(-1, 1, 1), (1.0 / sy**2).view(-1, 1, 1)
    a = c * c * ix + s * s * iy
    b = c * s * (ix - iy)
    d = s * s * ix + c * c * iy
    Q = a * X * X + 2 * b * X * Y + d * Y * Y  # (N, M, M)
    bt = beta.view(-1, 1, 1)
    gauss = torch.exp(-0.5 * Q)
    general = torch.exp(-0.5 * Q.pow(bt))
    plateau = 1.0 / (Q.pow(bt) + 1.0)
    rad = torch.sqrt(X * X + Y * Y).expand(n, -1, -1)  # (N, M, M)
    w = omega.view(-1, 1, 1)
    safe = torch.where(rad == 0, torch.ones_like(rad), rad)
    sinc = torch.where(rad == 0, w * w / (4 * math.pi), w * torch.special.bessel_j1(w * safe) / (2 * math.pi * safe))
    ident = ((X == 0) & (Y == 0)).to(f64).expand(n, -1, -1)

    cc = code.view(-1, 1, 1)
    k = torch.where(cc == 0, gauss, torch.where(cc == 1, general, torch.where(cc == 2, plateau,
                    torch.where(cc == 3, sinc, ident))))
    half = ((size - 1) / 2).view(-1, 1, 1)
    support = (X.abs() <= half) & (Y.abs() <= half)  # (N, M, M)
    k = k * support
    k = k / k.sum(dim=(1, 2), keepdim=True)
    return k.to(dtype)

