"""Gaussian and Poisson noise of one image on a CPU, in numpy (noise.py holds the batched torch
version; both follow Real-ESRGAN and give the same result for the same draws).

Gaussian: x + n * sigma / 255, n ~ N(0, 1) per pixel and channel (gray: one n for all channels).
Poisson: quantise x to 8-bit levels q = k / 255, count the image's distinct levels,
v = 2^ceil(log2(count)), draw P ~ Poisson(q v) (poisson.py) and add scale * (P / v - q) (gray:
on the luma 0.2989 R + 0.587 G + 0.114 B, the same for all channels). Both are clipped to [0, 1].

The draws are those torch's CPU generator makes for the image's noise seed (rng.py), in
torch's (channel, row, column) order, so the LQ matches the batched torch path on a CPU; the
arithmetic is float32 in the same order.
"""

from __future__ import annotations

import numpy as np

from osdhuman.degradation import rng
from osdhuman.degradation.params import NoiseParams
from osdhuman.degradation.poisson import sample_levels

__all__ = ["noise_image"]

_F = np.float32
_GRAY = (_F(0.2989), _F(0.587), _F(0.114))  # torchvision rgb_to_grayscale


def noise_image(x: np.ndarray, p: NoiseParams | None) -> np.ndarray:
    """x (3, h, w) float32 planes in [0, 1] -> a noisy copy (3, h, w) float32 in [0, 1]."""
    if p is None:
        return x
    C, h, w = x.shape
    ch = 1 if p.gray else C
    if p.type == "gaussian":
        n = rng.normal(p.seed, ch * h * w).reshape(ch, h, w)
        return np.clip(x + n * _F(p.level / 255.0), 0, 1)
    src = (_GRAY[0] * x[0:1] + _GRAY[1] * x[1:2]) + _GRAY[2] * x[2:3] if p.gray else x
    k = np.clip(np.round(src * _F(255.0)), 0, 255).astype(np.uint8)  # (ch, h, w) 8-bit level
    count = int(np.count_nonzero(np.bincount(k.reshape(-1), minlength=256)))
    e = int(np.ceil(np.log2(max(count, 1))))
    u = rng.uniform(p.seed, ch * h * w).reshape(ch, h, w)
    n = sample_levels(k, e, u).astype(_F)
    q = k.astype(_F) / _F(255.0)
    return np.clip(x + (n / _F(2**e) - q) * _F(p.level), 0, 1)
