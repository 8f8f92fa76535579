"""The objectives of paper Eq. 4, 6, 7 as pure functions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from osdhuman.training.losses import (
    add_noise,
    cfg_eps,
    generator_loss,
    regularizer_loss,
    sample_timesteps,
    vsd_loss,
    x0_from_eps,
)


def _ac():
    from osdhuman.models import alphas_cumprod_scaled_linear

    return alphas_cumprod_scaled_linear(1000, 0.00085, 0.012)


def test_vsd_gradient_points_from_latent_to_frozen_x0():
    """Known case: the regularizer reproduces the generator's latent (x0_upd = z); the VSD
    gradient must then be exactly 2 (x0_fix - z) / (w * numel) downhill, w = mean |z - x0_fix|."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 5, 6, generator=g).requires_grad_(True)
    x0_fix = torch.randn(3, 4, 5, 6, generator=g)
    loss = vsd_loss(z, x0_fix, z.detach().clone())
    (grad,) = torch.autograd.grad(loss, z)
    w = (z.detach() - x0_fix).abs().mean(dim=(1, 2, 3), keepdim=True)
    expected_descent = 2 * (x0_fix - z.detach()) / (w * z.numel())
    torch.testing.assert_close(-grad, expected_descent, rtol=1e-5, atol=1e-8)
    # a small descent step brings every sample closer to the frozen model's x0
    z2 = z.detach() - 0.1 * z.numel() * grad
    before = (z.detach() - x0_fix).flatten(1).norm(dim=1)
    after = (z2 - x0_fix).flatten(1).norm(dim=1)
    assert (after < before).all()


def test_vsd_is_zero_when_both_regularizers_agree_and_scales_with_normalizer():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 4, 4, generator=g, requires_grad=True)
    x0 = torch.randn(2, 4, 4, 4, generator=g)
    assert vsd_loss(z, x0, x0).item() == 0.0
    upd = torch.randn(2, 4, 4, 4, generator=g)
    w = (z.detach() - x0).abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(vsd_loss(z, x0, upd), ((upd - x0) / w).pow(2).mean())
    torch.testing.assert_close(vsd_loss(z, x0, upd, normalizer="none"), (upd - x0).pow(2).mean())
    with pytest.raises(ValueError, match="normalizer"):
        vsd_loss(z, x0, upd, normalizer="bogus")


def test_add_noise_matches_diffusers_and_x0_inverts_it():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 4, 8, 8, generator=g)
    eps = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 20, 500, 999])
    ours = add_noise(z, eps, t, _ac())
    ref = sched.add_noise(z, eps, t)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x0_from_eps(ours, eps, t, _ac()), z, rtol=1e-4, atol=1e-4)


def test_timesteps_cover_exactly_the_configured_range():
    t = sample_timesteps(20000, 20, 980, "cpu", torch.Generator().manual_seed(0))
    assert t.min().item() == 20 and t.max().item() == 979
    t = sample_timesteps(20000, 0, 1000, "cpu", torch.Generator().manual_seed(0))
    assert t.min().item() == 0 and t.max().item() == 999


def test_generator_loss_is_eq4_and_regularizer_loss_is_eq7():
    g = torch.Generator().manual_seed(3)
    img, tgt = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    lp, vsd = torch.tensor([0.2, 0.4]), torch.tensor(0.05)
    out = generator_loss(img, tgt, lp, vsd, lambda_lpips=2.0, lambda_vsd=1.0)
    mse = F.mse_loss(img, tgt)
    torch.testing.assert_close(out["loss"], mse + 2 * 0.3 + 0.05)
    torch.testing.assert_close(out["mse_lpips"], mse + 2 * 0.3)
    e1, e2 = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    torch.testing.assert_close(regularizer_loss(e1.half(), e2), F.mse_loss(e1.half().float(), e2))


def test_cfg_eps():
    u, c = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    assert torch.equal(cfg_eps(u, c, 1.0), c)
    assert torch.equal(cfg_eps(u, c, 7.5), 7.5 * c)
