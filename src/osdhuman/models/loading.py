"""Building the frozen SD-2.1 components: random presets in code, or real weights from a
local diffusers folder / hub id (``HF_HUB_OFFLINE`` honoured)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from osdhuman.models import config as C
from osdhuman.models.errors import WeightsError
from osdhuman.models.prompt import build_tiny_tokenizer

# diffusers and transformers are imported inside the builders (~2 s together): importing osdhuman.models
# does not load them.

__all__ = ["SD21_HUB_ID", "build_sd_components", "seeded"]

SD21_HUB_ID = "stabilityai/stable-diffusion-2-1-base"


class seeded:
    """Context manager: deterministic CPU init from ``seed`` without touching the global RNG."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._rng = torch.random.fork_rng(devices=[])
        self._rng.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._rng.__exit__(*exc)


def _help(base: str) -> str:
    return (
        f"Expected a diffusers folder with unet/ (config.json + diffusion_pytorch_model.safetensors) "
        f"and vae/ (same), optionally text_encoder/ and tokenizer/ - the layout of {SD21_HUB_ID}. "
        f"Get it online with `huggingface-cli download {SD21_HUB_ID} --local-dir DIR` and pass "
        f"--base-model DIR (or set OSDHUMAN_BASE_MODEL). Base model given: {base}"
    )


def _random_components(base: str, seed: int, with_text: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel


    tiny = base == "tiny"
    with seeded(seed):
        unet = UNet2DConditionModel(**(C.TINY_UNET_CONFIG if tiny else C.SD21_BASE_UNET_CONFIG))
        vae = AutoencoderKL(**(C.TINY_VAE_CONFIG if tiny else C.SD21_BASE_VAE_CONFIG))
        text_encoder = tokenizer = None
        if with_text:
            if tiny:
                tcfg = dict(C.TINY_TEXT_ENCODER_CONFIG)
            else:  # SD-2.1 width, one layer: random anyway, kept cheap
                tcfg = dict(C.SD21_BASE_TEXT_ENCODER_CONFIG, num_hidden_layers=1,
                            bos_token_id=512, eos_token_id=513, pad_token_id=513)
            text_encoder = CLIPTextModel(CLIPTextConfig(**tcfg)).eval()
            tokenizer = build_tiny_tokenizer()
    return unet, vae, text_encoder, tokenizer


def check_base_model(base_model: str) -> bool:
    """Cheap checks before anything is loaded; True for a local folder, False for a random
    preset or a hub id. Raises WeightsError for a missing / incomplete folder."""
    if base_model in C.RANDOM_BASE_MODELS:
        return False
    folder = Path(base_model).expanduser()
    if folder.is_dir():
        for sub in ("unet", "vae"):
            if not (folder / sub / "config.json").is_file():
                raise WeightsError(f"{folder / sub / 'config.json'}: missing. " + _help(base_model))
        return True
    if base_model.count("/") == 1 and not base_model.startswith((".", "/", "~")):
        return False  # a hub id
    raise WeightsError(f"base model folder not found: {base_model}. " + _help(base_model))


def build_sd_components(
    base_model: str, seed: int = 0, revision: str | None = None, with_text: bool = False,
    require_text: bool = False,
) -> tuple[nn.Module, nn.Module, nn.Module | None, object | None]:
    """(unet, vae, text_encoder | None, tokenizer | None), all float32 on CPU (or the current
    default device, e.g. ``with torch.device("meta")``)."""
    if base_model in C.RANDOM_BASE_MODELS:
        meta = torch.empty(0).device.type == "meta"
        return _random_components(base_model, seed, with_text and not meta)

    from diffusers import AutoencoderKL, UNet2DConditionModel

    is_dir = check_base_model(base_model)
    folder = Path(base_model).expanduser()
    src = str(folder) if is_dir else base_model
    kw = {} if is_dir else {"revision": revision}
    try:
        unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", **kw)
    except (OSError, ValueError) as exc:
        offline = " (HF_HUB_OFFLINE is set: only local folders / cached ids work)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise WeightsError(f"cannot load SD weights from {base_model}{offline}: {exc}. " + _help(base_model)) from exc
    text_encoder = tokenizer = None
    if with_text:
        from transformers import CLIPTextModel, CLIPTokenizer

        has_text = (not is_dir) or ((folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir())
        try:
            if has_text:
                text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", **kw).eval()
                tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **kw)
        except (OSError, ValueError) as exc:
            if require_text:
                raise WeightsError(f"cannot load the text encoder from {base_model}: {exc}. " + _help(base_model)) from exc
            text_encoder = tokenizer = None
        if require_text and text_encoder is None:
            raise WeightsError(f"{base_model}: no text_encoder/ + tokenizer/ (needed for a text or null prompt). " + _help(base_model))
    return unet, vae, text_encoder, tokenizer
