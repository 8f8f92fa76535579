"""Validation during training: PSNR / SSIM on the Y channel (paper 4.2) and an image grid.

The metrics are the evaluation's own (osdhuman.iqa, checked against pyiqa), so the numbers
a run logs are the numbers `osdhuman evaluate` would report for the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from osdhuman.iqa import fidelity as iqa_fidelity

__all__ = ["psnr_y", "ssim_y", "image_grid", "save_grid_png"]


def _levels(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> float 8-bit levels 0..255, quantised like saved images."""
    return ((x.detach().float().clamp(-1, 1) + 1) / 2 * 255).round()


def _to01(x: torch.Tensor) -> torch.Tensor:
    return _levels(x) / 255


def _to_u8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8 on the CPU."""
    return _levels(x).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def psnr_y(pred_m11: torch.Tensor, target_m11: torch.Tensor) -> torch.Tensor:
    """(B,) float64 PSNR in dB on the Y channel of images in [-1, 1] after 8-bit quantisation,
    with the evaluation's definition (osdhuman.iqa, the paper's pyiqa settings; on the CPU)."""
    return torch.from_numpy(iqa_fidelity.psnr_y(_to_u8(pred_m11), _to_u8(target_m11)))


def ssim_y(pred_m11: torch.Tensor, target_m11: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM on the Y channel of images in [-1, 1], as the evaluation computes it (on the CPU)."""
    return torch.from_numpy(iqa_fidelity.ssim_y(_to_u8(pred_m11), _to_u8(target_m11))).float()


def image_grid(lq: torch.Tensor, restored: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
    """(3, B*H, 3*W) in [0, 1]: one row per image, columns LQ | restored | HQ."""
    cols = [_to01(t).cpu() for t in (lq, restored, hq)]  # each (B, 3, H, W)
    rows = torch.cat(cols, dim=3)  # (B, 3, H, 3W)
    return torch.cat(list(rows), dim=1)  # (3, B*H, 3W)


def save_grid_png(grid01: torch.Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (grid01.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path
