"""The one step with an optional negative prompt (classifier-free guidance), x0 in float64.

    z_hat = guided_x0(model, z_L, (pos, neg), guidance_scale=3.5, timestep=199)

eps = eps(neg) + s * (eps(pos) - eps(neg)) when s > 1 and a negative prompt is given (both
halves in one UNet batch, negative first), else eps(pos); then
x0 = (z - sqrt(1 - a_t) eps) / sqrt(a_t) with a_t from the scaled_linear schedule, computed in
float64 (as HAODiff and OSDFace do) and returned in float32. docs/reference.md §released.
"""

from __future__ import annotations

import torch

__all__ = ["guided_eps", "guided_x0", "x0_float64"]


def guided_eps(model, z: torch.Tensor, prompt, guidance_scale: float, timestep: int) -> torch.Tensor:
    """z (B,4,h,w); prompt (B,77,D) or (positive, negative) -> eps (B,4,h,w)."""
    pos, neg = prompt if isinstance(prompt, tuple) else (prompt, None)
    if neg is None or guidance_scale <= 1:
        return model.unet_eps(z, timestep, pos)
    eps_neg, eps_pos = model.unet_eps(torch.cat([z, z]), timestep, torch.cat([neg, pos])).chunk(2)
    return eps_neg + guidance_scale * (eps_pos - eps_neg)


def x0_float64(z: torch.Tensor, eps: torch.Tensor, timestep: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod.to(device=z.device, dtype=torch.float64)[int(timestep)]
    return ((z.double() - (1 - a).sqrt() * eps.double()) / a.sqrt()).float()


def guided_x0(model, z: torch.Tensor, prompt, guidance_scale: float, timestep: int) -> torch.Tensor:
    """(B,4,h,w) -> z_hat (B,4,h,w) float32."""
    return x0_float64(z, guided_eps(model, z, prompt, guidance_scale, timestep), timestep, model.alphas_cumprod)
