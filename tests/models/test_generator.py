"""Tiny-preset OSDHuman: Eq. 2-3 wiring, UNet modes for VSD, HFIE, prompts."""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

from osdhuman.models import TINY_UNET_CONFIG, OSDHumanConfig, build_osdhuman
from osdhuman.models.loading import seeded


def _img(b=2, h=64, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


@torch.no_grad()
def test_forward_shapes_range_and_equation_2(tiny_model):
    lq = _img()
    out = tiny_model(lq)
    assert out.image.shape == lq.shape
    assert out.latent.shape == (2, 4, 8, 6) and out.latent.dtype == torch.float32
    assert out.prompt_embeds.shape == (2, 77, tiny_model.cross_attention_dim)
    assert out.image.min() >= -1 and out.image.max() <= 1 and torch.isfinite(out.image).all()
    # composed from the documented pieces
    z_L = tiny_model.encode_latent(lq, sample=False)
    eps = tiny_model.unet_eps(z_L, 999, out.prompt_embeds)
    a = tiny_model.alphas_cumprod[999]
    expect = (z_L - (1 - a).sqrt() * eps) / a.sqrt()
    assert torch.allclose(out.latent, expect, atol=1e-5)
    assert torch.equal(out.image, tiny_model.decode(out.latent))
    assert torch.equal(z_L, tiny_model.vae.encode(lq).latent_dist.mode() * 0.18215)


@torch.no_grad()
def test_latent_mode_sample_vs_mode(tiny_model):
    lq = _img(1)
    z1 = tiny_model.encode_latent(lq, sample=True, generator=torch.Generator().manual_seed(1))
    z1b = tiny_model.encode_latent(lq, sample=True, generator=torch.Generator().manual_seed(1))
    z2 = tiny_model.encode_latent(lq, sample=True, generator=torch.Generator().manual_seed(2))
    zm = tiny_model.encode_latent(lq, sample=False)
    assert torch.equal(z1, z1b) and not torch.equal(z1, z2) and not torch.equal(z1, zm)
    # eval -> latent_mode_infer ("mode"): deterministic
    assert torch.equal(tiny_model(lq).latent, tiny_model(lq).latent)


def _plain_tiny_unet(seed=0):
    with seeded(seed):  # same seeded construction as the tiny preset's base UNet
        return UNet2DConditionModel(**TINY_UNET_CONFIG).eval()


@torch.no_grad()
def test_teacher_is_untrained_base_and_generator_differs_after_training():
    m = build_osdhuman(OSDHumanConfig(base_model="tiny", prompt_source="null")).eval()
    m.add_regularizer()
    plain = _plain_tiny_unet(m.config.seed)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    p = m.null_prompt_embeds.expand(2, -1, -1)
    t = torch.tensor([999, 400])
    ref = plain(z, t, encoder_hidden_states=p).sample
    # untrained: LoRA B = 0 and conv_in untouched -> all three modes equal plain SD
    for mode in ("generator", "teacher", "regularizer"):
        with m.unet_mode(mode):
            assert torch.allclose(m.unet_eps(z, t, p), ref, atol=1e-6), mode
    # "train": perturb the generator's LoRA and conv_in, and the regularizer's LoRA
    g = torch.Generator().manual_seed(4)
    for q in m.generator_parameters() + m.regularizer_parameters():
        q.add_(0.05 * torch.randn(q.shape, generator=g))
    eps_gen = m.unet_eps(z, t, p)
    with m.unet_mode("teacher"):
        eps_teacher = m.unet_eps(z, t, p)
    with m.unet_mode("regularizer"):
        eps_reg = m.unet_eps(z, t, p)
    assert torch.allclose(eps_teacher, ref, atol=1e-6)  # teacher = frozen SD incl. ORIGINAL conv_in
    assert (eps_gen - ref).abs().max() > 1e-3
    assert (eps_reg - ref).abs().max() > 1e-3 and (eps_reg - eps_gen).abs().max() > 1e-3
    assert m.current_unet_mode == "generator"
    # the mode is restored on errors too
    with pytest.raises(RuntimeError), m.unet_mode("teacher"):
        raise RuntimeError("boom")
    assert m.current_unet_mode == "generator"
    assert torch.equal(m.unet_eps(z, t, p), eps_gen)


def test_regularizer_mode_requires_adapter(tiny_model):
    with pytest.raises(RuntimeError, match="add_regularizer"), tiny_model.unet_mode("regularizer"):
        pass


def test_generator_parameters_get_gradients_and_base_does_not():
    m = build_osdhuman(OSDHumanConfig(base_model="tiny")).train()
    # move LoRA B off zero so that gradients reach A as well
    with torch.no_grad():
        for n, q in m.named_parameters():
            if ".lora_B." in n:
                q.normal_(0, 0.01)
    out = m(_img(1))
    out.image.mean().backward()
    gen = m.generator_parameters()
    assert all(q.grad is not None for q in gen)
    gen_ids = {id(q) for q in gen}
    assert all(q.grad is None for q in m.parameters() if id(q) not in gen_ids)
    assert m.prompt_extractor.encoder.training is False  # E stays in eval mode


@torch.no_grad()
def test_hfie_pooled_token_first_and_lq_vs_hq(tiny_model):
    hfie = tiny_model.prompt_extractor
    x = hfie.preprocess(_img(2, 40, 30))
    assert x.shape[-2:] == (hfie.encoder.img_size,) * 2
    tokens = hfie.encoder(x)  # (B, 1 + N, out)
    feats = hfie.encoder.swin.forward_features(x).flatten(1, 2)  # (B, N, C)
    proj = hfie.encoder.image_proj
    assert tokens.shape[1] == feats.shape[1] + 1
    assert torch.allclose(tokens[:, 0], proj(feats.mean(1)), atol=1e-5)  # pooled token FIRST
    assert torch.allclose(tokens[:, 1:], proj(feats), atol=1e-5)
    lq, hq = _img(1, seed=1), _img(1, seed=2)
    assert torch.equal(hfie(lq, hq), hfie(lq))  # default source: the LQ image
    hq_hfie = copy.deepcopy(hfie)
    hq_hfie.source = "hq"
    assert torch.equal(hq_hfie(lq, hq), hfie(hq)) and not torch.equal(hq_hfie(lq, hq), hfie(lq))
    assert torch.equal(hq_hfie(lq), hfie(lq))  # inference: no HQ -> LQ


@torch.no_grad()
def test_fixed_prompts_null_and_text():
    null = build_osdhuman(OSDHumanConfig(base_model="tiny", prompt_source="null"))
    text = build_osdhuman(OSDHumanConfig(base_model="tiny", prompt_source="text", text_prompt="a person waving"))
    lq = _img(3)
    pn, pt = null.prompt_extractor(lq), text.prompt_extractor(lq)
    assert pn.shape == pt.shape == (3, 77, 32)
    assert torch.equal(pn[0], pn[2]) and not torch.allclose(pn, pt)
    assert torch.equal(pn[:1], null.null_prompt_embeds)
    assert not any(q.requires_grad for q in null.prompt_extractor.parameters())


@torch.no_grad()
def test_merged_lora_gives_the_same_output():
    m = build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False)).eval()
    g = torch.Generator().manual_seed(5)
    for q in m.generator_parameters():
        q.add_(0.05 * torch.randn(q.shape, generator=g))
    lq = _img(1, 48, 40)
    before = m(lq)
    m.merge_generator_lora()
    after = m(lq)
    assert not any(".lora_" in n for n, _ in m.named_parameters())
    assert torch.allclose(after.latent, before.latent, atol=1e-3)
    assert (after.image - before.image).abs().max() < 1e-3
