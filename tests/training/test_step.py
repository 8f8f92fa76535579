"""One training iteration on the tiny model: which weights each update may touch, and the
VSD terms on the real shared UNet."""

from __future__ import annotations

import pytest
import torch

from osdhuman.training.config import LossConfig, VSDConfig
from osdhuman.training.losses import vsd_loss
from osdhuman.training.lpips import LPIPSConfig, build_lpips
from osdhuman.training.step import OSDHumanTrainStep, teacher_and_regularizer_x0


@pytest.fixture(scope="module")
def step_module():
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    torch.manual_seed(0)
    model = build_osdhuman(OSDHumanConfig(base_model="tiny"))
    model.add_regularizer()
    lp = build_lpips(LPIPSConfig(random_backbone=True))
    m = OSDHumanTrainStep(model, lp, LossConfig(), VSDConfig())
    m.set_uncond(model.null_prompt_embeds)
    return m


def _snapshot(params):
    return [p.detach().clone() for p in params]


def test_each_update_touches_only_its_own_weights(step_module):
    model = step_module.model
    gen, reg = model.generator_parameters(), model.regularizer_parameters()
    assert gen and reg and not ({id(p) for p in gen} & {id(p) for p in reg})
    frozen = [p for p in model.parameters() if not p.requires_grad]
    opt_g = torch.optim.AdamW(gen, lr=1e-3)
    opt_r = torch.optim.AdamW(reg, lr=1e-3)
    g = torch.Generator().manual_seed(0)
    hq = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    lq = (hq + 0.2 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)

    reg0, frozen0 = _snapshot(reg), _snapshot(frozen)
    out = step_module("generator", lq, hq)
    out["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in reg), "generator loss reached the regularizer"
    assert sum(p.grad.abs().sum() for p in gen if p.grad is not None) > 0
    opt_g.step()
    opt_g.zero_grad(set_to_none=True)
    assert all(torch.equal(a, b) for a, b in zip(reg, reg0))

    gen1 = _snapshot(gen)
    r = step_module("regularizer", out["latent"], out["prompt"])
    r["loss"].backward()
    assert all(p.grad is None for p in gen), "regularizer loss reached the generator"
    assert sum(p.grad.abs().sum() for p in reg if p.grad is not None) > 0
    opt_r.step()
    assert all(torch.equal(a, b) for a, b in zip(gen, gen1))
    assert any(not torch.equal(a, b) for a, b in zip(reg, reg0))
    assert all(torch.equal(a, b) for a, b in zip(frozen, frozen0)), "a frozen base weight changed"
    assert model.current_unet_mode == "generator"


def test_vsd_on_the_shared_unet(step_module):
    """Without guidance the regularizer starts equal to the frozen teacher (LoRA B = 0), so
    VSD starts at zero; with guidance x0_fix moves and VSD pulls z towards it."""
    model = step_module.model
    g = torch.Generator().manual_seed(1)
    fresh = [p for p in model.regularizer_parameters()]
    saved = _snapshot(fresh)
    with torch.no_grad():  # back to the initial regularizer (B = 0)
        for p, n in zip(fresh, [n for n, q in model.named_parameters() if any(q is f for f in fresh)]):
            if ".lora_B." in n:
                p.zero_()
    try:
        z = torch.randn(2, 4, 4, 4, generator=g)
        t = torch.tensor([100, 900])
        p = torch.randn(2, 77, model.cross_attention_dim, generator=g)
        z_t = torch.randn(2, 4, 4, 4, generator=g)
        fix, upd = teacher_and_regularizer_x0(model, z_t, t, p, None, 1.0)
        torch.testing.assert_close(fix, upd)
        fix_cfg, upd_cfg = teacher_and_regularizer_x0(model, z_t, t, p, model.null_prompt_embeds, 7.5)
        assert torch.equal(upd_cfg, upd) and not torch.allclose(fix_cfg, fix)
        zz = z.clone().requires_grad_(True)
        assert vsd_loss(zz, fix, upd).item() == 0.0
        (grad,) = torch.autograd.grad(vsd_loss(zz, fix_cfg, upd_cfg), zz)
        # per sample (w is per sample): -grad is parallel to x0_fix - x0_upd
        cos = torch.nn.functional.cosine_similarity((-grad).flatten(1), (fix_cfg - upd_cfg).flatten(1), dim=1)
        assert (cos > 0.9999).all()
    finally:
        with torch.no_grad():
            for p, s in zip(fresh, saved):
                p.copy_(s)


def test_gradient_checkpointing_gives_the_same_gradients():
    from osdhuman.models import OSDHumanConfig, build_osdhuman
    from osdhuman.training.update import enable_gradient_checkpointing

    grads = []
    for ckpt in (False, True):
        model = build_osdhuman(OSDHumanConfig(base_model="tiny"))
        if ckpt:
            enable_gradient_checkpointing(model)
            flags = [m.gradient_checkpointing for m in model.unet.modules() if hasattr(m, "gradient_checkpointing")]
            assert flags and all(flags)
        model.train()
        g = torch.Generator().manual_seed(0)
        lq = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
        out = model(lq, sample_latent=False)
        out.image.square().mean().backward()
        grads.append([p.grad.clone() for p in model.generator_parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
