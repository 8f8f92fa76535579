"""save_weights / load_weights / load_osdhuman round trips and errors."""

import json

import pytest
import torch

from osdhuman.models import OSDHumanConfig, WeightsError, build_osdhuman, load_osdhuman
from osdhuman.models.osdhuman import CONFIG_FILE, WEIGHTS_FILE


def _trained(cfg: OSDHumanConfig, seed: int = 7, probe=None):
    m = build_osdhuman(cfg).eval()
    m.untrained_probe = None if probe is None else m(probe).image
    m.add_regularizer()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q in m.generator_parameters() + m.regularizer_parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=g))
    return m


@torch.no_grad()
def test_round_trip_gives_identical_outputs(tmp_path):
    lq = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m = _trained(OSDHumanConfig(base_model="tiny"), probe=lq)
    m.save_weights(tmp_path / "w")
    assert (tmp_path / "w" / WEIGHTS_FILE).is_file()
    meta = json.loads((tmp_path / "w" / CONFIG_FILE).read_text())
    assert meta["config"]["base_model"] == "tiny" and meta["untrained_base"] is True
    assert meta["has_regularizer"] is True

    m2 = load_osdhuman(tmp_path / "w").eval()
    a, b = m(lq), m2(lq)
    assert torch.equal(a.image, b.image) and torch.equal(a.latent, b.latent)
    z = torch.randn(2, 4, 5, 7)
    with m.unet_mode("regularizer"), m2.unet_mode("regularizer"):
        assert torch.equal(m.unet_eps(z, 500, a.prompt_embeds), m2.unet_eps(z, 500, a.prompt_embeds))
    with m.unet_mode("teacher"), m2.unet_mode("teacher"):
        assert torch.equal(m.unet_eps(z, 500, a.prompt_embeds), m2.unet_eps(z, 500, a.prompt_embeds))
    # the untrained model's output differs (so the comparison above could fail)
    assert not torch.equal(m.untrained_probe, a.image)


@torch.no_grad()
def test_round_trip_null_prompt_without_text_encoder(tmp_path):
    m = _trained(OSDHumanConfig(base_model="tiny", prompt_source="null"))
    m.save_weights(tmp_path)
    m2 = load_osdhuman(tmp_path)
    assert torch.equal(m2.prompt_extractor.embeds, m.prompt_extractor.embeds)
    assert torch.equal(m2.null_prompt_embeds, m.null_prompt_embeds)
    lq = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(m.eval()(lq).image, m2.eval()(lq).image)


def test_saved_tensors_are_only_the_trainable_ones(tmp_path):
    from safetensors import safe_open

    m = _trained(OSDHumanConfig(base_model="tiny"))
    m.save_weights(tmp_path)
    with safe_open(str(tmp_path / WEIGHTS_FILE), "pt") as f:
        keys = set(f.keys())
    n_saved = sum(m.trainable_state_dict()[k].numel() for k in keys)
    n_train = sum(q.numel() for q in m.generator_parameters() + m.regularizer_parameters())
    assert n_saved == n_train + m.null_prompt_embeds.numel()
    assert not any(k.startswith("prompt_extractor.encoder.") for k in keys)


def test_mismatched_weights_error_names_file(tmp_path):
    _trained(OSDHumanConfig(base_model="tiny")).save_weights(tmp_path)
    other = build_osdhuman(OSDHumanConfig(base_model="tiny", lora_rank=8))
    with pytest.raises(WeightsError, match=WEIGHTS_FILE) as exc:
        other.load_weights(tmp_path)
    assert "wrong shape" in str(exc.value) and "load_osdhuman" in str(exc.value)
    with pytest.raises(WeightsError, match="not found"):
        load_osdhuman(tmp_path / "nope")


def test_missing_base_model_and_ram_errors(tmp_path):
    with pytest.raises(WeightsError, match="stable-diffusion-2-1-base"):
        build_osdhuman(OSDHumanConfig(base_model=str(tmp_path / "no_such_folder"), prompt_source="null"))
    (tmp_path / "sd" / "unet").mkdir(parents=True)
    with pytest.raises(WeightsError, match="config.json"):
        build_osdhuman(OSDHumanConfig(base_model=str(tmp_path / "sd"), prompt_source="null"))
    with pytest.raises(WeightsError, match="stable-diffusion-2-1-base"):  # folder checked first
        build_osdhuman(OSDHumanConfig(base_model=str(tmp_path / "no_such_folder")))


def test_base_model_from_local_diffusers_folder(tmp_path):
    """A diffusers folder (unet/, vae/, text_encoder/, tokenizer/) is loaded as the SD base."""
    from osdhuman.models.loading import build_sd_components

    unet, vae, te, tok = build_sd_components("tiny", seed=3, with_text=True)
    folder = tmp_path / "sd"
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    te.save_pretrained(folder / "text_encoder")
    tok.save_pretrained(folder / "tokenizer")
    m = build_osdhuman(OSDHumanConfig(base_model=str(folder), prompt_source="null"))
    assert not m.random_base
    assert m.untrained  # a real base, but no trained weights loaded: outputs are not restorations
    assert torch.equal(m.unet.conv_out.get_base_layer().weight, unet.conv_out.weight)
    assert torch.equal(m.vae.encoder.conv_in.get_base_layer().weight, vae.encoder.conv_in.weight)
    from osdhuman.models.prompt import encode_text

    assert torch.allclose(m.prompt_extractor.embeds, encode_text(te, tok, " "))
    # HFIE on a real base needs RAM's checkpoint: a clear error
    with pytest.raises(WeightsError, match="ram_swin_large_14m.pth"):
        build_osdhuman(OSDHumanConfig(base_model=str(folder)))
    # a folder without text encoder cannot give a null prompt
    import shutil

    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(WeightsError, match="text_encoder"):
        build_osdhuman(OSDHumanConfig(base_model=str(folder), prompt_source="null"))
