"""Overlapping tiles with smooth blending, for arbitrarily large images.

One function, ``tiled_map``, runs a size-changing map (VAE encoder /8, UNet x1, VAE decoder
x8) tile by tile on a grid defined in LATENT units and blends the tiles with weights that
rise smoothly (raised cosine) across every overlap and stay 1 elsewhere. Tile borders that
touch a neighbour therefore contribute almost nothing, which hides both the convolution
padding artefacts at tile edges and per-tile GroupNorm statistics (no visible seams).
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable

import torch

__all__ = ["GroupNormStats", "blend_profile", "downscale_to", "tile_starts", "tiled_map"]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering [0, size) with at least ``overlap``
    overlap, spread evenly (every tile has the full length when size > tile)."""
    if size <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    n = math.ceil((size - overlap) / (tile - overlap))
    n = max(n, 2)
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def blend_profile(length: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D weights (length,): raised-cosine ramps of ``ramp`` samples at the start (rise) and
    end (fall), strictly positive, 1 in between."""
    w = torch.ones(length, dtype=torch.float32)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        x = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp  # (ramp,) in (0,1)
        r = 0.5 - 0.5 * torch.cos(math.pi * x)
        if rise:
            w[:ramp] = r
        if fall:
            w[length - ramp:] = r.flip(0)
    return w


def tiled_map(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid_hw: tuple[int, int],
    tile: int, overlap: int, in_scale: int, out_scale: int,
) -> torch.Tensor:
    """Apply ``fn`` tile by tile and blend.

    x: (B, C, grid_h * in_scale, grid_w * in_scale). The grid (latent units) is cut into
    ``tile`` x ``tile`` tiles overlapping by ``overlap``; fn maps (B, C, t*in, t*in) to
    (B, C', t*out, t*out). Returns (B, C', grid_h * out_scale, grid_w * out_scale) float32.
    A grid no larger than one tile is passed to fn whole.
    """
    gh, gw = grid_hw
    if gh <= tile and gw <= tile:
        return fn(x).float()
    ys, xs = tile_starts(gh, tile, overlap), tile_starts(gw, tile, overlap)
    th, tw = min(tile, gh), min(tile, gw)
    out = None
    wsum = torch.zeros(1, 1, gh * out_scale, gw * out_scale, device=x.device)
    for y in ys:
        wy = blend_profile(th * out_scale, overlap * out_scale, rise=y > 0, fall=y + th < gh)
        for x0 in xs:
            wx = blend_profile(tw * out_scale, overlap * out_scale, rise=x0 > 0, fall=x0 + tw < gw)
            piece = x[..., y * in_scale:(y + th) * in_scale, x0 * in_scale:(x0 + tw) * in_scale]
            res = fn(piece).float()  # (B, C', th*out, tw*out)
            if out is None:
                out = torch.zeros(res.shape[0], res.shape[1], gh * out_scale, gw * out_scale, device=x.device)
            w = (wy[:, None] * wx[None, :]).to(x.device)  # (th*out, tw*out)
            sl = (..., slice(y * out_scale, (y + th) * out_scale), slice(x0 * out_scale, (x0 + tw) * out_scale))
            out[sl] += res * w
            wsum[sl] += w
    return out / wsum


class GroupNormStats:
    """Share GroupNorm statistics across tiles (the "fast" tiled-VAE idea).

    GroupNorm normalises with statistics of whatever it sees, so each tile of a flat or
    gradient image would be normalised differently and the tiles would disagree (colour
    shifts, seams). Here one pass over a downscaled copy of the whole input (``record``)
    stores every GroupNorm's per-sample, per-group mean and variance; the tiles are then run
    with those statistics (``apply``), so all tiles are normalised alike.
    """

    def __init__(self, module: torch.nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, torch.nn.GroupNorm)]
        self.stats: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._calls: dict[int, int] = {}

    def _patch(self, make):
        for gn in self.norms:
            gn.forward = types.MethodType(make(gn), gn)

    def _unpatch(self) -> None:
        for gn in self.norms:
            gn.__dict__.pop("forward", None)

    @staticmethod
    def _moments(gn: torch.nn.GroupNorm, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = x.float().reshape(x.shape[0], gn.num_groups, -1)  # (B, G, C/G*H*W)
        return g.mean(-1, keepdim=True), g.var(-1, unbiased=False, keepdim=True)  # (B, G, 1)

    @staticmethod
    def _normalise(gn: torch.nn.GroupNorm, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        g = x.float().reshape(B, gn.num_groups, -1)
        y = ((g - mean) / torch.sqrt(var + gn.eps)).reshape(x.shape)
        if gn.affine:
            shape = (1, C) + (1,) * (x.ndim - 2)
            y = y * gn.weight.float().reshape(shape) + gn.bias.float().reshape(shape)
        return y.to(x.dtype)

    def record(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
        """Run ``fn(x)`` once and keep every GroupNorm's statistics (per call, in order)."""
        self.stats = {id(gn): [] for gn in self.norms}

        def make(gn):
            def forward(_self, inp):
                mean, var = GroupNormStats._moments(gn, inp)
                self.stats[id(gn)].append((mean, var))
                return GroupNormStats._normalise(gn, inp, mean, var)
            return forward

        self._patch(make)
        try:
            fn(x)
        finally:
            self._unpatch()

    def wrap(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """``fn`` running with the recorded statistics."""
        def make(gn):
            def forward(_self, inp):
                i = self._calls[id(gn)]
                self._calls[id(gn)] = i + 1
                mean, var = self.stats[id(gn)][i]
                return GroupNormStats._normalise(gn, inp, mean.to(inp.device), var.to(inp.device))
            return forward

        def run(t: torch.Tensor) -> torch.Tensor:
            self._calls = {id(gn): 0 for gn in self.norms}
            self._patch(make)
            try:
                return fn(t)
            finally:
                self._unpatch()
        return run


def downscale_to(x: torch.Tensor, max_side: int, multiple: int) -> torch.Tensor:
    """Area-downscale (B,C,H,W) so that max(H,W) <= max_side, sides multiples of ``multiple``."""
    H, W = x.shape[-2:]
    s = min(1.0, max_side / max(H, W))
    h = max(multiple, int(H * s) // multiple * multiple)
    w = max(multiple, int(W * s) // multiple * multiple)
    if (h, w) == (H, W):
        return x
    return torch.nn.functional.interpolate(x.float(), size=(h, w), mode="area").to(x.dtype)
