"""Real SD-2.1-base / Swin-L sizes, built on the meta device (no memory, no download)."""

import torch

from osdhuman.models import SWIN_L_RAM, SwinEncoder, lora_target_names
from osdhuman.models.lora import lora_layers


def test_trainable_parameter_counts_match_facts(sd21_meta):
    c = sd21_meta.parameter_counts()
    assert round(c["unet_lora"] / 1e6, 3) == 4.056
    assert round(c["vae_encoder_lora"] / 1e6, 3) == 0.369
    assert c["conv_in"] == 11_840
    # HFIE head: MHA(1024, kdim=vdim=512) 3.15 M + query 77x1024 and LayerNorm 0.08 M
    assert round(c["hfie_head"] / 1e6, 2) == 3.23
    assert round((c["unet_lora"] + c["vae_encoder_lora"] + c["conv_in"]) / 1e6, 2) == 4.44
    trainable = {id(p) for p in sd21_meta.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in sd21_meta.generator_parameters()}


def test_lora_targets_and_frozen_bases(sd21_meta):
    assert len(lora_layers(sd21_meta.unet)) == 258
    assert len(lora_layers(sd21_meta.vae)) == 32
    names = [n for n, _ in lora_layers(sd21_meta.unet)]
    assert not any("time_emb" in n or "time_embedding" in n for n in names)
    assert not any(n.startswith("decoder") or n == "post_quant_conv" for n, _ in lora_layers(sd21_meta.vae))
    base = sum(p.numel() for n, p in sd21_meta.unet.named_parameters() if ".lora_" not in n)
    assert round(base / 1e6, 1) == 865.9
    assert not any(p.requires_grad for p in sd21_meta.vae.decoder.parameters())
    # targets are found again (no duplicates) after injection
    assert len(lora_target_names(sd21_meta.unet, "unet")) == 258


def test_regularizer_adds_its_own_4056k_parameters():
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    m = build_osdhuman(OSDHumanConfig(base_model="sd21-random", prompt_source="null"), device="meta")
    base_ids = {id(p) for p in m.parameters()}
    reg = m.add_regularizer()
    assert round(sum(p.numel() for p in reg) / 1e6, 3) == 4.056
    assert not ({id(p) for p in reg} & base_ids)
    assert all(p.requires_grad for p in reg)
    total = sum(p.numel() for p in m.generator_parameters()) + sum(p.numel() for p in reg)
    assert round(total / 1e6, 2) == 8.49  # OSEDiff reports 8.5 M trainable


def test_hfie_real_size_shapes(sd21_meta):
    hfie = sd21_meta.prompt_extractor
    swin = sum(p.numel() for p in hfie.encoder.swin.parameters())
    assert round(swin / 1e6, 1) == 195.2
    x = torch.empty(2, 3, 300, 212, device="meta")
    tokens = hfie.encode(x)
    assert tuple(tokens.shape) == (2, 145, 512)
    assert tuple(hfie(x).shape) == (2, 77, 1024)


def test_swin_l_is_rams_configuration():
    with torch.device("meta"):
        enc = SwinEncoder(**SWIN_L_RAM)
    assert enc.swin.num_features == 1536
    assert enc.img_size == 384
    assert tuple(enc.image_proj.weight.shape) == (512, 1536)


@torch.no_grad()
def test_full_size_forward_shapes_on_meta(sd21_meta):
    out = sd21_meta(torch.empty(2, 3, 96, 64, device="meta"))
    assert tuple(out.image.shape) == (2, 3, 96, 64)
    assert tuple(out.latent.shape) == (2, 4, 12, 8) and out.latent.dtype == torch.float32
    assert tuple(out.prompt_embeds.shape) == (2, 77, 1024)
    with sd21_meta.unet_mode("teacher"):
        eps = sd21_meta.unet_eps(out.latent, torch.tensor([5, 900], device="meta"), out.prompt_embeds)
    assert tuple(eps.shape) == (2, 4, 12, 8)
