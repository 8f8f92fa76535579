"""The training objectives of paper 3.2 as short pure functions (k-diffusion style).

- :func:`add_noise` / :func:`x0_from_eps`: the DDPM forward process and its inversion with
  SD's ``alphas_cumprod`` (computed in float32 whatever the UNet's dtype).
- :func:`vsd_loss`: Eq. 6, variational score distillation in latent space, in the form
  OSEDiff implements it (docs/reference.md §training): ``w = mean_CHW |z - x0_fix|``,
  ``grad = (x0_upd - x0_fix) / w``, ``L = MSE(z, stopgrad(z - grad))``, so that
  d L / d z = 2 * grad / numel: descending moves z from x0_upd towards x0_fix.
- :func:`regularizer_loss`: Eq. 7, epsilon-MSE of the fine-tuned regularizer.
- :func:`generator_loss`: Eq. 4, MSE + lambda1 * LPIPS + lambda2 * VSD.
- :func:`cfg_eps`: classifier-free guidance of the frozen teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The DDPM forward process and its inversion (Eq. 2 at any t, float32) are the model's own.
from osdhuman.models.schedule import add_noise
from osdhuman.models.schedule import predict_x0_from_eps as x0_from_eps

__all__ = [
    "add_noise",
    "x0_from_eps",
    "cfg_eps",
    "sample_timesteps",
    "vsd_loss",
    "regularizer_loss",
    "generator_loss",
]


def cfg_eps(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: eps_u + g * (eps_c - eps_u); g = 1 is the conditional branch."""
    return eps_uncond.float() + guidance * (eps_cond.float() - eps_uncond.float())


def sample_timesteps(n: int, t_min: int, t_max: int, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """n integer timesteps uniform in {t_min, ..., t_max - 1} (VSD: 20..979; Eq. 7: 0..999)."""
    return torch.randint(t_min, t_max, (n,), device=device, generator=generator)


def vsd_loss(z: torch.Tensor, x0_fix: torch.Tensor, x0_upd: torch.Tensor, normalizer: str = "mean_abs", eps: float = 1e-8) -> torch.Tensor:
    """Paper Eq. 6 (VSD). z: generator latent (B, C, h, w) with grad; x0_fix / x0_upd: the frozen
    and fine-tuned regularizers' x0 predictions from z_t (no grad). ``normalizer``: "mean_abs"
    (w = mean over C, h, w of |z - x0_fix|, per sample, as OSEDiff) or "none" (w = 1)."""
    z32 = z.float()
    x0_fix, x0_upd = x0_fix.detach().float(), x0_upd.detach().float()
    if normalizer == "mean_abs":
        w = (z32.detach() - x0_fix).abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(eps)  # (B, 1, 1, 1)
    elif normalizer == "none":
        w = torch.ones_like(z32[:, :1, :1, :1])
    else:
        raise ValueError(f"vsd normalizer {normalizer!r}: expected 'mean_abs' or 'none'")
    grad = torch.nan_to_num((x0_upd - x0_fix) / w)  # (B, C, h, w)
    return F.mse_loss(z32, (z32 - grad).detach())


def regularizer_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 7: MSE(eps_phi'(z_t; t, p), eps), in float32."""
    return F.mse_loss(eps_pred.float(), eps.float())


def generator_loss(
    image: torch.Tensor,
    target: torch.Tensor,
    lpips_value: torch.Tensor,
    vsd_value: torch.Tensor,
    lambda_lpips: float = 2.0,
    lambda_vsd: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Paper Eq. 4: L = MSE(I_H, Î_H) + lambda1 * LPIPS(I_H, Î_H) + lambda2 * L_VSD.
    ``lpips_value``: per-sample or scalar LPIPS; returns every term and the total."""
    mse = F.mse_loss(image.float(), target.float())
    lp = lpips_value.float().mean()
    vsd = vsd_value.float()
    total = mse + lambda_lpips * lp + lambda_vsd * vsd
    return {"loss": total, "mse": mse, "lpips": lp, "vsd": vsd, "mse_lpips": mse + lambda_lpips * lp}
