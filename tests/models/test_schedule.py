import torch
from diffusers import DDPMScheduler

from osdhuman.models import add_noise, alphas_cumprod_scaled_linear, predict_x0_from_eps


def _sched():
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, prediction_type="epsilon")


def test_alpha_bar_999_matches_facts():
    a = alphas_cumprod_scaled_linear()
    assert a.shape == (1000,)
    assert abs(a[999].item() - 0.0046601) < 1e-6
    assert abs(a[999].sqrt().item() - 0.068265) < 1e-6
    assert abs((1 - a[999]).sqrt().item() - 0.997667) < 1e-6
    assert torch.equal(a, _sched().alphas_cumprod)


def test_x0_at_999_matches_ddpm_scheduler_step():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 8, 6, generator=g)
    eps = torch.randn(2, 4, 8, 6, generator=g)
    sched = _sched()
    ref = sched.step(eps, 999, z, generator=g).pred_original_sample
    ours = predict_x0_from_eps(z, eps, 999, alphas_cumprod_scaled_linear())
    assert (ours - ref).abs().max().item() < 1e-6
    # per-sample timesteps
    t = torch.tensor([999, 500])
    ours_b = predict_x0_from_eps(z, eps, t, alphas_cumprod_scaled_linear())
    ref_1 = sched.step(eps[1:], 500, z[1:]).pred_original_sample
    assert (ours_b[1:] - ref_1).abs().max().item() < 1e-6


def test_x0_is_float32_even_for_half_inputs():
    z = torch.randn(1, 4, 4, 4)
    eps = torch.randn(1, 4, 4, 4)
    x0 = predict_x0_from_eps(z.bfloat16(), eps.bfloat16(), 999, alphas_cumprod_scaled_linear())
    assert x0.dtype == torch.float32
    exact = predict_x0_from_eps(z.bfloat16().float(), eps.bfloat16().float(), 999, alphas_cumprod_scaled_linear())
    assert torch.equal(x0, exact)


def test_add_noise_matches_scheduler():
    x0, n = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    t = torch.tensor([10, 500, 979])
    ref = _sched().add_noise(x0, n, t)
    assert (add_noise(x0, n, t, alphas_cumprod_scaled_linear()) - ref).abs().max() < 1e-6
