"""Gaussian and Poisson noise of the Real-ESRGAN degradation, per image, for a ragged batch.

Gaussian: x + n * sigma / 255, n ~ N(0, 1) per pixel and channel (gray: one n for all channels).
Poisson (Real-ESRGAN ``generate_poisson_noise_pt``): quantise x to 8-bit levels q = k / 255,
count the distinct levels of the image, v = 2^ceil(log2(count)), draw P ~ Poisson(q v) and add
scale * (P / v - q) (gray: computed on the luma 0.2989 R + 0.587 G + 0.114 B, same on all channels).
Both are clipped to [0, 1].

Per-pixel randomness comes from one ``torch.Generator`` per image seeded with its own noise
seed, drawn at the image's own size, so it does not depend on the batch. The Poisson draw is
vectorised over the whole batch: q v only takes the values k 2^e / 255 (k < 256, e <= 8), so
we invert poisson.py's float64 CDF table of those 2,304 rates exactly (per-pixel uniforms
from the image's generator; no per-image loop in the transform).

This is the batched torch path (CUDA, and ``Degrader(batched=True)``); one image on a CPU gets
its noise from cpu_noise.py, without torch, from the same draws (rng.py reproduces torch's
CPU generator), so on a CPU both give the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from osdhuman.degradation import poisson
from osdhuman.degradation.params import NoiseParams
from osdhuman.degradation.ragged import valid_mask

__all__ = ["add_noise", "poisson_cdf_table", "sample_poisson_levels"]

_J, _K = poisson.J, poisson.K
_GRAY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale
_TABLES: dict[str, torch.Tensor] = {}  # poisson.py's tables on a device
_GUIDE_BLOCKS: dict[str, set[int]] = {}  # exponent blocks present in each device's guide table


def poisson_cdf_table(device) -> torch.Tensor:
    """(9 * 256, 512) float64: row e * 256 + k holds CDF(n) of Poisson(k 2^e / 255), n < 512."""
    key = str(device)
    if key not in _TABLES:
        _TABLES[key] = torch.from_numpy(poisson.cdf_table()).to(device)
    return _TABLES[key]


def _guide_table(device, exponents: Sequence[int]) -> torch.Tensor:
    """poisson.py's guide codes (9 * 256 * J,) int16 on ``device``, with the blocks of
    ``exponents`` built (a copy per call where a new block was needed)."""
    exponents = sorted({int(v) for v in exponents})
    key = "guide:" + str(device)
    have = _TABLES.get(key)
    if have is None or not set(exponents) <= _GUIDE_BLOCKS.get(key, set()):
        table = poisson.guide_table(exponents)
        _TABLES[key] = have = torch.from_numpy(table.copy()).to(device)
        _GUIDE_BLOCKS[key] = set(poisson.built_blocks())
    return have


def sample_poisson_levels(k: torch.Tensor, e: torch.Tensor, u: torch.Tensor,
                          exponents: Sequence[int] | None = None) -> torch.Tensor:
    """Poisson(k 2^e / 255) samples by exact inversion of the CDF table at uniforms u.

    k, e: integer tensors of one shape (e in 0..8); u: float in [0, 1); ``exponents``: the
    values e takes, when the caller knows them (else found with ``torch.unique``). Returns the
    smallest n with CDF(n) > u (long). A guide table gives the answer at the bucket floor(u J) directly when
    the CDF does not jump inside the bucket (about 98% of pixels); the others are found by
    bisection above the bucket's lower bound. Vectorised over all pixels of all images.
    """
    shape = k.shape
    row = (e.to(torch.int32) * 256 + k.to(torch.int32)).flatten()  # (N,) table row
    u = u.flatten()
    guide = _guide_table(k.device, exponents if exponents is not None else torch.unique(e).tolist())
    j = (u * _J).to(torch.int32).clamp_(max=_J - 1)  # (N,) bucket
    code = guide.index_select(0, row * _J + j)
    n = (code >> 1).long()
    idx = torch.nonzero(code & 1).squeeze(1)  # a CDF step inside the bucket: search on
    if idx.numel():
        # bisection in [n, the next bucket's n] (K - 1 after the last bucket):
        # CDF(n - 1) <= j / J <= u < (j + 1) / J < CDF(next), and CDF(K - 1) = 1 > u
        flat = poisson_cdf_table(k.device).flatten()
        ri, ji = row.index_select(0, idx), j.index_select(0, idx)
        base = ri.long() * _K
        uu = u.index_select(0, idx).to(torch.float64)
        lo = n.index_select(0, idx)
        last = ji == _J - 1
        nxt = (guide.index_select(0, ri * _J + torch.where(last, 0, ji + 1)) >> 1).long()
        hi = torch.where(last, _K - 1, nxt)
        for _ in range(int((hi - lo).max()).bit_length()):
            mid = (lo + hi) >> 1
            above = flat.index_select(0, base + mid) > uu
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid + 1)
        n[idx] = hi
    return n.view(shape)


def _draw(gen_seed: int, shape, device, dtype, uniform: bool) -> torch.Tensor:
    g = torch.Generator(device=device)
    g.manual_seed(int(gen_seed))
    if uniform:
        return torch.rand(shape, generator=g, device=device, dtype=dtype)
    return torch.randn(shape, generator=g, device=device, dtype=dtype)


def _levels(count: torch.Tensor) -> torch.Tensor:
    """e = ceil(log2(number of distinct 8-bit levels)), so v = 2^e (Real-ESRGAN)."""
    return torch.ceil(torch.log2(count.clamp(min=1).to(torch.float64))).long()


def add_noise(x: torch.Tensor, sizes: Sequence[tuple[int, int]], params: Sequence[NoiseParams | None]) -> torch.Tensor:
    """Noisy copy of canvas x (B, 3, Hc, Wc); image b gets params[b] (None = unchanged).

    Draws are made per image at its own size (its own generator); the Poisson transform runs
    on the whole batch at once.
    """
    _B, C, Hc, Wc = x.shape
    dev = x.device
    gauss = [b for b, p in enumerate(params) if p is not None and p.type == "gaussian"]
    poiss = [b for b, p in enumerate(params) if p is not None and p.type == "poisson"]
    if not gauss and not poiss:
        return x
    out = x.clone()
    if gauss:
        noise = torch.zeros_like(x)
        for b in gauss:  # per-image generator: only the draws are per image
            h, w = sizes[b]
            p = params[b]
            n = _draw(p.seed, (1 if p.gray else C, h, w), dev, x.dtype, uniform=False)
            noise[b, :, :h, :w] = n * (p.level / 255.0)
        gi = torch.tensor(gauss, device=dev)
        out[gi] = (x[gi] + noise[gi]).clamp(0, 1)
    if poiss:
        gi = torch.tensor(poiss, device=dev)
        xs = x.index_select(0, gi)  # (P, 3, Hc, Wc)
        gray = torch.tensor([params[b].gray for b in poiss], device=dev).view(-1, 1, 1, 1)
        luma = (_GRAY[0] * xs[:, 0:1] + _GRAY[1] * xs[:, 1:2] + _GRAY[2] * xs[:, 2:3]).expand_as(xs)
        src = torch.where(gray, luma, xs)
        k = (src * 255.0).round().clamp(0, 255).long()  # (P, 3, Hc, Wc) 8-bit level
        valid = valid_mask([sizes[b] for b in poiss], Hc, Wc, dev).expand_as(k)
        # distinct levels per image (inside the image only): one bincount for the whole batch
        P = len(poiss)
        bins = torch.where(valid, k, 256) + 257 * torch.arange(P, device=dev).view(-1, 1, 1, 1)
        count = (torch.bincount(bins.flatten(), minlength=257 * P).view(P, 257)[:, :256] > 0).sum(1)
        e = _levels(count).view(-1, 1, 1, 1)
        vals = torch.pow(2.0, e.to(x.dtype))  # (P, 1, 1, 1)
        q = k.to(x.dtype) / 255.0
        u = torch.zeros(k.shape, dtype=x.dtype, device=dev)
        for j, b in enumerate(poiss):  # gray: one draw for all three channels
            h, w = sizes[b]
            u[j, :, :h, :w] = _draw(params[b].seed, (1 if params[b].gray else C, h, w), dev, x.dtype, True)
        n = sample_poisson_levels(k, e.expand_as(k), u, e.flatten().tolist()).to(x.dtype)  # (P, 3, Hc, Wc)
        scale = torch.tensor([params[b].level for b in poiss], dtype=x.dtype, device=dev).view(-1, 1, 1, 1)
        noisy = xs + (n / vals - q) * scale
        out[gi] = torch.where(valid, noisy.clamp(0, 1), 0.0)
    return out
