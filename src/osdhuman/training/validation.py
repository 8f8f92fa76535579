"""Validation during training: PSNR / SSIM on the Y channel (paper 4.2) and an image grid.

Small, dependency-free versions for monitoring a run; the evaluation package holds the
reference metrics for reported numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["rgb_to_y", "psnr_y", "ssim_y", "image_grid", "save_grid_png"]


def rgb_to_y(img01: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of (B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) in [16/255, 235/255]."""
    w = img01.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (img01 * w).sum(1, keepdim=True) / 255.0 + 16.0 / 255.0


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float().clamp(-1, 1) + 1) / 2 * 255).round() / 255  # 8-bit quantised, like saved images


def psnr_y(pred_m11: torch.Tensor, target_m11: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB on the Y channel of images in [-1, 1] (after 8-bit quantisation)."""
    a, b = rgb_to_y(_to01(pred_m11)), rgb_to_y(_to01(target_m11))
    mse = (a - b).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float().view(1, 1, size, size)


def ssim_y(pred_m11: torch.Tensor, target_m11: torch.Tensor) -> torch.Tensor:
    """(B,) SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, valid region) on Y."""
    a, b = rgb_to_y(_to01(pred_m11)).double(), rgb_to_y(_to01(target_m11)).double()
    win = _gauss_window(device=a.device).double()
    if min(a.shape[-2:]) < win.shape[-1]:
        win = _gauss_window(size=min(a.shape[-2:]) // 2 * 2 - 1, device=a.device).double()
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = F.conv2d(a, win), F.conv2d(b, win)
    s_aa = F.conv2d(a * a, win) - mu_a**2
    s_bb = F.conv2d(b * b, win) - mu_b**2
    s_ab = F.conv2d(a * b, win) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return m.mean(dim=(1, 2, 3)).float()


def image_grid(lq: torch.Tensor, restored: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
    """(3, B*H, 3*W) in [0, 1]: one row per image, columns LQ | restored | HQ."""
    cols = [_to01(t).cpu() for t in (lq, restored, hq)]  # each (B, 3, H, W)
    rows = torch.cat(cols, dim=3)  # (B, 3, H, 3W)
    return torch.cat(list(rows), dim=1)  # (3, B*H, 3W)


def save_grid_png(grid01: torch.Tensor, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (grid01.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path
