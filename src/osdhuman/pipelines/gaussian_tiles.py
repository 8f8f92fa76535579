"""HAODiff's latent tiling: square tiles, a fixed overlap, Gaussian blending of the eps.

    eps = gaussian_tiled_eps(eps_fn, z, tile=64, overlap=5)   # z (B,4,h,w) -> (B,4,h,w)

Tiles of side min(tile, h, w) start every (tile - overlap) latent pixels along each axis, the
last one flush with the far edge; a latent whose AREA is at most tile^2 runs whole. Each tile's
eps is weighted by a separable Gaussian (variance 0.01 of the tile side squared; centred at
(side-1)/2 across and side/2 down, as HAODiff computes it) and the sum is divided by the summed
weights. ``osdhuman``'s own tiling (``tiling.tiled_map``) blends x0 with raised-cosine ramps;
this one reproduces HAODiff's outputs on large images. docs/reference.md §released.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["gaussian_tile_weights", "gaussian_tiled_eps", "haodiff_offsets"]


def gaussian_tile_weights(side: int, var: float = 0.01) -> torch.Tensor:
    """(side, side) float64 weights."""
    def probs(mid: float) -> np.ndarray:
        x = np.arange(side)
        return np.exp(-(x - mid) ** 2 / (side * side) / (2 * var)) / math.sqrt(2 * math.pi * var)

    return torch.from_numpy(np.outer(probs(side / 2), probs((side - 1) / 2)))  # rows: down, cols: across


def haodiff_offsets(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of length ``size``."""
    n, end = 0, 0
    while end < size:
        end = max(n * (tile - overlap), 0) + tile
        n += 1
    return [i * (tile - overlap) for i in range(n - 1)] + [size - tile]


def gaussian_tiled_eps(eps_fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                       tile: int = 64, overlap: int = 5) -> torch.Tensor:
    """eps_fn (B,4,t,t) -> (B,4,t,t), run over tiles of z (B,4,h,w) and blended."""
    h, w = z.shape[-2:]
    if h * w <= tile * tile:
        return eps_fn(z).float()
    side = min(tile, h, w)
    weights = gaussian_tile_weights(side).to(z.device)  # float64, as HAODiff keeps it
    out = torch.zeros(z.shape, device=z.device)
    total = torch.zeros(z.shape, device=z.device)
    for x0 in haodiff_offsets(w, side, overlap):
        for y0 in haodiff_offsets(h, side, overlap):
            sl = (..., slice(y0, y0 + side), slice(x0, x0 + side))
            out[sl] += eps_fn(z[sl]).float() * weights
            total[sl] += weights
    return out / total
