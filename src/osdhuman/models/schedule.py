"""The diffusion schedule and the one-step x0 formula (paper Eq. 2), as pure functions."""

from __future__ import annotations

import torch

__all__ = ["add_noise", "alphas_cumprod_scaled_linear", "predict_x0_from_eps"]


def alphas_cumprod_scaled_linear(
    num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """SD's "scaled_linear" schedule: betas linear in sqrt space. Returns (num_steps,)
    cumulative products of (1 - beta); alpha_bar[999] = 0.0046601 for the defaults (docs/reference.md §generator).
    float32 by default, computed exactly as diffusers' DDPMScheduler (what OSEDiff trained with)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=dtype) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def _gather(alphas_cumprod: torch.Tensor, t: torch.Tensor | int, ref: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod.to(device=ref.device)
    if isinstance(t, int) or (torch.is_tensor(t) and t.ndim == 0):
        return a[int(t)].to(torch.float32).reshape(1, 1, 1, 1)
    return a[t.to(device=ref.device, dtype=torch.long)].to(torch.float32).reshape(-1, 1, 1, 1)


def predict_x0_from_eps(
    z_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Eq. 2: x0 = (z_t - sqrt(1 - a_t) * eps) / sqrt(a_t), always in float32.

    At t = 999 the eps error is amplified 14.6x, so half-precision inputs are upcast here.
    z_t, eps: (B,C,h,w); t: int or (B,) long -> (B,C,h,w) float32.
    """
    a = _gather(alphas_cumprod, t, z_t)  # (B|1,1,1,1) float32
    return (z_t.float() - (1.0 - a).sqrt() * eps.float()) / a.sqrt()


def add_noise(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Forward diffusion q(z_t | x0): sqrt(a_t) x0 + sqrt(1 - a_t) noise (in x0's dtype)."""
    a = _gather(alphas_cumprod, t, x0)  # (B|1,1,1,1)
    return (a.sqrt() * x0.float() + (1.0 - a).sqrt() * noise.float()).to(x0.dtype)
