"""One training iteration's two forward passes, as one nn.Module (so DDP can wrap it).

``OSDHumanTrainStep(mode="generator", lq, hq)`` computes paper Eq. 4 (MSE + LPIPS + VSD)
on the generator; ``OSDHumanTrainStep(mode="regularizer", latent, prompt)`` computes Eq. 7 on
the fine-tuned regularizer. The one shared UNet plays the generator, the frozen teacher
(eps_phi) and the regularizer (eps_phi') through ``model.unet_mode``. Each mode's forward
is followed by its own backward; under DDP the parameters the other mode owns receive no
gradient, which ``find_unused_parameters=True`` accounts for.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from osdhuman.training.config import LossConfig, VSDConfig
from osdhuman.training.losses import (
    add_noise,
    cfg_eps,
    generator_loss,
    regularizer_loss,
    sample_timesteps,
    vsd_loss,
    x0_from_eps,
)

__all__ = ["OSDHumanTrainStep", "teacher_and_regularizer_x0"]


def teacher_and_regularizer_x0(
    model: nn.Module,
    z_t: torch.Tensor,
    t: torch.Tensor,
    prompt: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_fix, x0_upd), both float32 and without grad (docs/reference.md §training).

    x0_fix: frozen teacher eps_phi with classifier-free guidance ``guidance`` against the
    ``uncond`` embedding (skipped when guidance == 1 or uncond is None); x0_upd: the
    regularizer eps_phi' on the conditional prompt only.
    """
    ac = model.alphas_cumprod
    with torch.no_grad():
        with model.unet_mode("teacher"):
            if uncond is not None and guidance != 1.0:
                b = z_t.shape[0]
                u = uncond.to(prompt.dtype).expand(b, *prompt.shape[1:])  # (B, 77, D)
                eps2 = model.unet_eps(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([u, prompt]))  # (2B, 4, h, w)
                eps_fix = cfg_eps(eps2[:b], eps2[b:], guidance)
            else:
                eps_fix = model.unet_eps(z_t, t, prompt)
        x0_fix = x0_from_eps(z_t, eps_fix, t, ac)  # (B, 4, h, w) float32
        with model.unet_mode("regularizer"):
            eps_upd = model.unet_eps(z_t, t, prompt)
        x0_upd = x0_from_eps(z_t, eps_upd, t, ac)
    return x0_fix, x0_upd


class OSDHumanTrainStep(nn.Module):
    """Wraps the OSDHuman model and LPIPS; forward(mode, ...) -> dict of loss tensors."""

    def __init__(self, model: nn.Module, lpips: nn.Module | None, loss: LossConfig, vsd: VSDConfig, sample_latent: bool = True):
        super().__init__()
        self.model = model
        self.lpips = lpips
        self.loss_cfg = loss
        self.vsd_cfg = vsd
        self.sample_latent = sample_latent
        self.register_buffer("uncond", torch.zeros(0), persistent=False)  # set by set_uncond()

    def set_uncond(self, emb: torch.Tensor | None) -> None:
        self.uncond = emb.detach().clone() if emb is not None else torch.zeros(0)

    def forward(self, mode: str, *args, **kwargs) -> dict[str, torch.Tensor]:
        if mode == "generator":
            return self.generator(*args, **kwargs)
        if mode == "regularizer":
            return self.regularizer(*args, **kwargs)
        raise ValueError(f"unknown mode {mode!r}")

    def generator(self, lq: torch.Tensor, hq: torch.Tensor) -> dict[str, torch.Tensor]:
        """lq, hq: (B, 3, H, W) in [-1, 1]. Eq. 2-4."""
        m, lc, vc = self.model, self.loss_cfg, self.vsd_cfg
        z_l = m.encode_latent(lq, sample=self.sample_latent)  # (B, 4, h, w)
        p = m.prompt_extractor(lq, hq=hq)  # (B, 77, D)
        z_h = m.predict_x0(z_l, p)  # (B, 4, h, w) float32, Eq. 2
        image = m.decode(z_h)  # (B, 3, H, W) in [-1, 1]
        if lc.lambda_lpips != 0 and self.lpips is not None:
            lp = self.lpips(image.float(), hq.float())  # (B,)
        else:
            lp = image.new_zeros(image.shape[0], dtype=torch.float32)
        if lc.lambda_vsd != 0:
            b = z_h.shape[0]
            t = sample_timesteps(b, vc.t_min, vc.t_max, z_h.device)  # (B,)
            eps = torch.randn_like(z_h)
            z_t = add_noise(z_h.detach(), eps, t, m.alphas_cumprod)  # (B, 4, h, w)
            uncond = self.uncond if self.uncond.numel() else None
            x0_fix, x0_upd = teacher_and_regularizer_x0(m, z_t, t, p.detach(), uncond, vc.guidance_scale)
            vsd = vsd_loss(z_h, x0_fix, x0_upd, vc.normalizer, vc.normalizer_eps)
        else:
            vsd = z_h.new_zeros((), dtype=torch.float32)
        out = generator_loss(image, hq, lp, vsd, lc.lambda_lpips, lc.lambda_vsd)
        if lc.lambda_mse != 1.0:  # Eq. 4 has weight 1 on MSE; configurable for ablations
            out["loss"] = out["loss"] + (lc.lambda_mse - 1.0) * out["mse"]
            out["mse_lpips"] = out["mse_lpips"] + (lc.lambda_mse - 1.0) * out["mse"]
        out["latent"] = z_h.detach()
        out["prompt"] = p.detach()
        out["image"] = image.detach()
        return out

    def regularizer(self, latent: torch.Tensor, prompt: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 7 on the detached generator latent and prompt."""
        m, vc = self.model, self.vsd_cfg
        z = latent.detach()
        t = sample_timesteps(z.shape[0], vc.reg_t_min, vc.reg_t_max, z.device)  # (B,)
        eps = torch.randn_like(z)
        z_t = add_noise(z, eps, t, m.alphas_cumprod)  # (B, 4, h, w) float32; unet_eps casts
        with m.unet_mode("regularizer"):
            eps_pred = m.unet_eps(z_t, t, prompt.detach())
        return {"loss": regularizer_loss(eps_pred, eps), "reg": regularizer_loss(eps_pred.detach(), eps)}
