"""PIQE, the Perception-based Image Quality Evaluator (Venkatanath N. et al., NCC 2015).

MSCN coefficients of the luma are cut into 16x16 blocks. Among the spatially active blocks
(variance > 0.1), a block is distorted when one of its edge segments (6 pixels) is flat
(std < 0.1, blockiness) or when its centre-surround deviation marks Gaussian noise. Score:

    PIQE = 100 * (sum_active [D_k (1 - v_k) + N_k v_k] + 1) / (N_active + 1)

(D_k noticeable-distortion flag, N_k noise flag, v_k block variance); lower is better.
"""

from __future__ import annotations

import torch

from osdhuman.iqa.color import rgb_to_luma_yiq
from osdhuman.iqa.filters import gaussian_window, mscn

__all__ = ["piqe", "symmetric_pad"]


def _mirror_index(n: int, extra: int, device) -> torch.Tensor:
    """Indices 0..n-1 followed by ``extra`` mirrored ones, the edge repeated (n-1, n-2, ...),
    reflecting again as often as needed (a triangular wave, for pads longer than n)."""
    i = torch.arange(n + extra, device=device)
    period = 2 * n
    m = i % period
    return torch.where(m < n, m, period - 1 - m)


def symmetric_pad(x: torch.Tensor, right: int, bottom: int) -> torch.Tensor:
    """(..., H, W) -> (..., H + bottom, W + right), MATLAB 'symmetric' padding on the right and bottom."""
    h, w = x.shape[-2:]
    if right:
        x = x.index_select(-1, _mirror_index(w, right, x.device))
    if bottom:
        x = x.index_select(-2, _mirror_index(h, bottom, x.device))
    return x


def piqe(
    images: torch.Tensor,
    block_size: int = 16,
    activity_threshold: float = 0.1,
    impaired_threshold: float = 0.1,
    segment: int = 6,
) -> torch.Tensor:
    """PIQE of (N, 3, H, W) RGB [0, 1] -> (N,) float64 in [0, 100]."""
    y = rgb_to_luma_yiq(images.to(torch.float32)) / 255.0  # (N, 1, H, W) in [0, 1]
    peak = y.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)
    # float32 throughout, as the reference (pyiqa): the block tests are thresholds, and matching
    # its arithmetic keeps the same blocks on the same side of them
    y = torch.round(255.0 * y / peak)  # stretched to the full 8-bit range
    n, _, h, w = y.shape
    # the reference (pyiqa, after MATLAB's piqe) pads right and bottom by ``size % block``
    # (not up to the next multiple), edge-including ("symmetric"); whole blocks that then
    # fit are scored and the rest is dropped by the block cut below
    y = symmetric_pad(y, w % block_size, h % block_size)
    win = torch.from_numpy(gaussian_window(7, 7.0 / 6.0)).to(y)
    m = mscn(y, win, c=1.0, padding="replicate")[:, 0]  # (N, H, W)
    b = m.unfold(1, block_size, block_size).unfold(2, block_size, block_size)  # (N, bh, bw, s, s)
    b = b.reshape(n, -1, block_size, block_size)  # (N, B, s, s)

    var = b.flatten(2).var(-1, unbiased=True)  # (N, B)
    active = var > activity_threshold

    # noise criterion: centre (two middle columns) vs surround standard deviation. The
    # reference code deletes the two centre columns one after the other, so its second
    # deletion hits the column after the centre pair: the surround excludes columns c-1 and
    # c+1 (0-based) and keeps column c. We follow it.
    c = block_size // 2  # 0-based index of the second middle column
    centre = b[..., c - 1:c + 1]  # (N, B, s, 2)
    surround = torch.cat([b[..., : c - 1], b[..., c:c + 1], b[..., c + 2:]], dim=-1)  # (N, B, s, s-2)
    cs = (centre.flatten(2).std(-1) / surround.flatten(2).std(-1)).nan_to_num(0.0)
    sigma = var.sqrt()
    beta = (sigma - cs).abs() / torch.maximum(sigma, cs)
    noisy = sigma > 2 * beta

    # noticeable distortion: a flat segment on any of the four block edges
    edges = torch.stack([b[..., 0, :], b[..., :, -1], b[..., -1, :], b[..., :, 0]], dim=2)  # (N, B, 4, s)
    seg_std = edges.unfold(-1, segment, 1).std(-1, unbiased=True)  # (N, B, 4, s - segment + 1)
    impaired = (seg_std < impaired_threshold).flatten(2).any(-1)

    a = active.to(torch.float64)
    var = var.to(torch.float64)
    dist = a * impaired * (1 - var) + a * noisy * var  # (N, B)
    return (dist.sum(1) + 1.0) / (a.sum(1) + 1.0) * 100.0
