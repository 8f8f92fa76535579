"""OSDHumanConfig: every knob of the one-step generator (paper 3.2, docs/reference.md §generator, §hfie).

The model is built from this dataclass alone (``build_osdhuman(cfg)``). ``base_model`` picks
where the frozen Stable Diffusion weights come from:

* ``"tiny"``        - the same architecture at toy width, random weights from ``seed``
                      (tests and smoke runs; outputs come from an UNTRAINED model);
* ``"sd21-random"`` - SD-2.1-base-sized modules with random weights (benchmarks, meta-device
                      checks; also untrained);
* a local diffusers folder (``unet/``, ``vae/``, optionally ``text_encoder/`` + ``tokenizer/``)
  or a hub id such as ``stabilityai/stable-diffusion-2-1-base`` (``HF_HUB_OFFLINE`` honoured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from osdhuman.config import SEED_MAX, rule

__all__ = [
    "RANDOM_BASE_MODELS",
    "SD21_BASE_TEXT_ENCODER_CONFIG",
    "SD21_BASE_ID",
    "swin_kwargs",
    "SD21_BASE_UNET_CONFIG",
    "SD21_BASE_VAE_CONFIG",
    "SWIN_L_RAM",
    "TINY_SWIN",
    "TINY_TEXT_ENCODER_CONFIG",
    "TINY_UNET_CONFIG",
    "TINY_VAE_CONFIG",
    "OSDHumanConfig",
    "RAM_TAGGING",
    "TINY_RAM_TAGGING",
    "DAPE_SOURCES",
]

RANDOM_BASE_MODELS = ("tiny", "sd21-random")
SD21_BASE_ID = "stabilityai/stable-diffusion-2-1-base"  # the paper's base: the default when none is named

# --- Stable Diffusion 2.1-base, as diffusers' config.json files spell them (no download) ---
SD21_BASE_UNET_CONFIG: dict = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "only_cross_attention": False, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1.0, "act_fn": "silu", "norm_num_groups": 32,
    "norm_eps": 1e-5, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
    "dual_cross_attention": False, "use_linear_projection": True, "upcast_attention": False,
}  # 865.9 M parameters

SD21_BASE_VAE_CONFIG: dict = {
    "in_channels": 3, "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "act_fn": "silu",
    "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
}  # 83.65 M parameters (encoder 34.16 M, decoder 49.49 M)

SD21_BASE_TEXT_ENCODER_CONFIG: dict = {  # OpenCLIP ViT-H text tower as SD-2.1 ships it
    "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512,
}

# RAM's image encoder (docs/reference.md §hfie): Swin-L, 384x384 input, 195.2 M parameters.
SWIN_L_RAM: dict = {
    "img_size": 384, "patch_size": 4, "embed_dim": 192, "depths": (2, 2, 18, 2),
    "num_heads": (6, 12, 24, 48), "window_size": 12, "mlp_ratio": 4.0, "qkv_bias": True, "out_dim": 512,
}

# --- tiny preset: same block types, toy widths (still /8 spatially, 4 latent channels) ---
TINY_UNET_CONFIG: dict = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8,
    "cross_attention_dim": 32, "attention_head_dim": (2, 4), "use_linear_projection": True,
}

TINY_VAE_CONFIG: dict = {
    "in_channels": 3, "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "act_fn": "silu",
    "latent_channels": 4, "norm_num_groups": 4, "sample_size": 64, "scaling_factor": 0.18215,
}

TINY_TEXT_ENCODER_CONFIG: dict = {
    "vocab_size": 514, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 32,
    "bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513,
}

# RAM's tagging head (docs/reference.md §weights; recognize-anything q2l_config.json): BERT-style decoder whose
# layers keep only cross-attention to the image_proj tokens and the feed-forward.
RAM_TAGGING: dict = {"hidden": 768, "layers": 2, "heads": 4, "intermediate": 3072, "width": 512, "eps": 1e-12}
TINY_RAM_TAGGING: dict = {"hidden": 32, "layers": 2, "heads": 4, "intermediate": 64, "width": 16, "eps": 1e-12}

DAPE_SOURCES = ("dape_hq", "dape_lq")

TINY_SWIN: dict = {
    "img_size": 64, "patch_size": 4, "embed_dim": 16, "depths": (1, 1, 2, 1),
    "num_heads": (1, 2, 2, 4), "window_size": 2, "mlp_ratio": 2.0, "qkv_bias": True, "out_dim": 16,
}


def swin_kwargs(base_model: str, hfie_image_size: int) -> dict:
    """RAM's Swin-L encoder settings for ``base_model`` (the toy width for ``tiny``), at the
    configured input size."""
    if base_model == "tiny":
        return dict(TINY_SWIN)
    return {**SWIN_L_RAM, "img_size": hfie_image_size}


@dataclass
class OSDHumanConfig:
    """Typed configuration of the OSDHuman generator (+ optional VSD regularizer adapter)."""

    # where the frozen SD weights come from: a local folder | hub id (default: SD-2.1-base, from
    # the local hub cache) | the random presets "tiny" / "sd21-random", only when asked for
    base_model: str = SD21_BASE_ID
    revision: str | None = None  # hub revision (ignored for folders)
    # LoRA (docs/reference.md §generator): rank 4 everywhere, alpha 8 (scale alpha/r = 2), gaussian init (B = 0)
    lora_rank: int = rule(4, ge=1)
    lora_alpha: float = rule(8.0, gt=0)
    lora_init: Literal["gaussian", "kaiming"] = "gaussian"
    vae_lora_rank: int | None = rule(None, ge=1)  # None -> lora_rank
    vae_lora_alpha: float | None = rule(None, gt=0)  # None -> lora_alpha
    # LoRA layout: None -> docs/reference.md §generator's targets (258 UNet modules, 32 VAE-encoder modules); an
    # explicit list (module names) reproduces imported weights that adapt other modules.
    # Per-module exceptions to rank / alpha, keyed by module name (peft's rank_pattern).
    unet_lora_targets: list[str] | None = None
    vae_lora_targets: list[str] | None = None
    unet_lora_rank_pattern: dict[str, int] = field(default_factory=dict)
    unet_lora_alpha_pattern: dict[str, float] = field(default_factory=dict)
    train_conv_in: bool = True  # OSEDiff trains the whole conv_in weight [choose: same]
    # one step at T_L (Eq. 2)
    timestep: int = rule(999, ge=0)
    num_train_timesteps: int = rule(1000, ge=1)
    beta_start: float = rule(0.00085, gt=0)
    beta_end: float = rule(0.012, gt=0)
    # latent of the LQ image: sample the VAE posterior or take its mode (our choice: docs/reference.md)
    latent_mode_train: Literal["sample", "mode"] = "sample"
    latent_mode_infer: Literal["sample", "mode"] = "mode"
    # prompt (paper Table 4): HFIE from LQ (default) / from HQ / a fixed text / the null prompt " "
    # / DAPE (OSEDiff: RAM tags of the HQ image in training, of the LQ at test -> CLIP text)
    prompt_source: Literal["hfie_lq", "hfie_hq", "text", "null", "dape_hq", "dape_lq"] = "hfie_lq"
    text_prompt: str = ""
    # DAPE (models/dape.py): RAM's tagging head on hfie_encoder_path (the full RAM checkpoint),
    # plus OSEDiff's LoRA file DAPE.pth (None: RAM's own tags, no LoRA)
    dape_path: str | None = None
    ram_tag_list: str | None = None  # ram_tag_list.txt; None -> beside hfie_encoder_path
    ram_tag_thresholds: str | None = None  # None -> <tag list stem>_threshold.txt beside the tag list
    ram_delete_tags: list[int] = rule(factory=list, ge=0)  # RAM's delete_tag_index (OSEDiff: none)
    dape_prompt_suffix: str = ""  # OSEDiff's --prompt: the text is f"{tags}, {suffix},"
    # RAM checkpoint (ram_swin_large_14m.pth) for HFIE's image encoder; None is allowed only
    # for the random presets (tiny, sd21-random) or when loading saved weights that hold it
    hfie_encoder_path: str | None = None
    hfie_image_size: int = rule(384, ge=1)  # tiny preset uses TINY_SWIN["img_size"]
    hfie_heads: int = rule(8, ge=1)  # MultiheadAttention heads (our choice: docs/reference.md)
    hfie_query_len: int = rule(77, ge=1)
    # null-prompt embedding (VSD classifier-free guidance), computed once through the text
    # encoder when the base model has one, then kept as a tensor
    compute_null_prompt: bool = True
    # seed for the random presets and for LoRA / HFIE head initialisation
    seed: int = rule(0, ge=0, le=SEED_MAX)

    def __post_init__(self) -> None:
        if not (0 <= self.timestep < self.num_train_timesteps):
            raise ValueError(f"timestep must be in [0, {self.num_train_timesteps}), got {self.timestep}")

    @property
    def is_dape(self) -> bool:
        """True for the DAPE prompt sources (RAM tags -> CLIP text encoder)."""
        return self.prompt_source in DAPE_SOURCES

    @property
    def is_random(self) -> bool:
        """True when the base weights are random (untrained) presets."""
        return self.base_model in RANDOM_BASE_MODELS

    @property
    def effective_vae_lora_rank(self) -> int:
        return self.vae_lora_rank if self.vae_lora_rank is not None else self.lora_rank

    @property
    def effective_vae_lora_alpha(self) -> float:
        return self.vae_lora_alpha if self.vae_lora_alpha is not None else self.lora_alpha
