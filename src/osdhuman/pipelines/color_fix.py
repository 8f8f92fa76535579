"""Colour fixes (docs/reference.md §users: over-saturated skin, lips, eyes): pull the output's colours back to
the input's. Images (B,3,H,W) in [-1,1], same size; returns (B,3,H,W)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["COLOR_FIXES", "adain_color_fix", "apply_color_fix", "wavelet_color_fix"]

COLOR_FIXES = ("adain", "wavelet", "none")


def adain_color_fix(out: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN: give each channel of ``out`` the mean and std of ``ref`` (per image)."""
    o, r = out.float(), ref.float()
    om, os_ = o.mean((2, 3), keepdim=True), o.std((2, 3), keepdim=True) + eps  # (B,3,1,1)
    rm, rs = r.mean((2, 3), keepdim=True), r.std((2, 3), keepdim=True)
    return ((o - om) / os_ * rs + rm).clamp(-1, 1)


def _blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=x.device) / 16.0
    k = k.expand(x.shape[1], 1, 3, 3)  # depthwise (C,1,3,3)
    pad_mode = "reflect" if min(x.shape[-2:]) > dilation else "replicate"
    x = F.pad(x, (dilation,) * 4, mode=pad_mode)
    return F.conv2d(x, k, groups=x.shape[1], dilation=dilation)


def _wavelet_split(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """a trous wavelet decomposition: (high-frequency sum, low-frequency residual)."""
    high = torch.zeros_like(x)
    low = x
    for i in range(levels):
        blurred = _blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(out: torch.Tensor, ref: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Keep ``out``'s high frequencies (detail) and take ``ref``'s low frequencies (colour)."""
    high, _ = _wavelet_split(out.float(), levels)
    _, low = _wavelet_split(ref.float(), levels)
    return (high + low).clamp(-1, 1)


def apply_color_fix(out: torch.Tensor, ref: torch.Tensor, method: Literal["adain", "wavelet", "none"]) -> torch.Tensor:
    if method == "adain":
        return adain_color_fix(out, ref)
    if method == "wavelet":
        return wavelet_color_fix(out, ref)
    if method == "none":
        return out.float()
    raise ValueError(f"color fix must be one of {COLOR_FIXES}, got {method!r}")
