"""OSDHuman: the one-step diffusion restorer of paper 3.2 (Eq. 2, 3, 5).

Public API (stable; the training code builds on it)::

    from osdhuman.models import OSDHumanConfig, build_osdhuman

    cfg = OSDHumanConfig(base_model="tiny")          # or a diffusers folder / hub id
    model = build_osdhuman(cfg)                      # CPU, float32; caller moves it (.to(device))
    out = model(lq)                                  # lq: (B,3,H,W) in [-1,1], H,W multiples of 8
    out.image                                        # (B,3,H,W) in [-1,1] (clamped)
    out.latent                                       # z_hat (B,4,H/8,W/8), Eq. 2, float32
    out.prompt_embeds                                # p (B,77,cross_dim)

Pieces of the generator (each usable alone)::

    z_L = model.encode_latent(lq, sample=True, generator=None)  # (B,4,h,w) * 0.18215
    p   = model.prompt_extractor(lq, hq=None)                   # (B,77,cross_dim)
    z_h = model.predict_x0(z_L, p)                              # (B,4,h,w) float32, t = 999
    img = model.decode(z_h)                                     # (B,3,H,W) in [-1,1]

One frozen UNet base, three behaviours (VSD, docs/reference.md §training) - the base weights are held ONCE::

    model.add_regularizer()                 # second LoRA adapter, same targets, own params
    with model.unet_mode("teacher"):        # all LoRA off + ORIGINAL conv_in (frozen SD)
        eps = model.unet_eps(z_t, t, p)     # (B,4,h,w); t: int or (B,) long tensor
    with model.unet_mode("regularizer"):    # regularizer LoRA + original conv_in
        eps = model.unet_eps(z_t, t, p)
    # default mode is "generator" (generator LoRA + trained conv_in)

    model.generator_parameters()     # VAE-encoder LoRA, UNet LoRA + conv_in, HFIE Q/MHA/norm
    model.regularizer_parameters()   # the regularizer adapter's LoRA tensors
    model.alphas_cumprod             # (1000,) float32 scaled_linear schedule on the model's device
                                     # (a property, not a buffer: model.to(bf16) cannot round it)
    model.null_prompt_embeds         # (1,77,cross_dim) embedding of " " (CFG branch) or None

Weights (safetensors + JSON; training checkpoints and ``restore --weights`` share them)::

    model.save_weights(dir)                  # osdhuman_weights.safetensors + osdhuman_config.json
    model.load_weights(dir)                  # into an already built model (strict on our tensors)
    model.trainable_state_dict()             # what save_weights writes (dict name -> tensor)
    model.parameter_counts()                 # {"unet_lora", "vae_encoder_lora", "conv_in", "hfie_head", ...}
    model = load_osdhuman(dir, base_model=None, hfie_encoder_path=None)  # build + load

Errors: ``WeightsError`` names the file, the expected layout and how to obtain it.
"""

from osdhuman.models.config import (
    RANDOM_BASE_MODELS,
    SD21_BASE_UNET_CONFIG,
    SD21_BASE_VAE_CONFIG,
    SWIN_L_RAM,
    TINY_SWIN,
    TINY_UNET_CONFIG,
    TINY_VAE_CONFIG,
    OSDHumanConfig,
)
from osdhuman.models.errors import WeightsError
from osdhuman.models.hfie import (
    HFIE,
    SwinEncoder,
    load_ram_encoder,
    remap_ram_swin_keys,
)
from osdhuman.models.lora import DualWeightConv2d, add_lora, lora_layers, lora_target_names
from osdhuman.models.osdhuman import (
    UNET_MODES,
    OSDHuman,
    OSDHumanOutput,
    build_osdhuman,
    load_osdhuman,
)
from osdhuman.models.prompt import FixedPrompt, build_tiny_tokenizer
from osdhuman.models.schedule import (
    add_noise,
    alphas_cumprod_scaled_linear,
    predict_x0_from_eps,
)

__all__ = [
    "HFIE",
    "RANDOM_BASE_MODELS",
    "SD21_BASE_UNET_CONFIG",
    "SD21_BASE_VAE_CONFIG",
    "SWIN_L_RAM",
    "TINY_SWIN",
    "TINY_UNET_CONFIG",
    "TINY_VAE_CONFIG",
    "UNET_MODES",
    "FixedPrompt",
    "DualWeightConv2d",
    "OSDHuman",
    "OSDHumanConfig",
    "OSDHumanOutput",
    "SwinEncoder",
    "WeightsError",
    "add_noise",
    "alphas_cumprod_scaled_linear",
    "build_osdhuman",
    "build_tiny_tokenizer",
    "add_lora",
    "load_osdhuman",
    "lora_layers",
    "load_ram_encoder",
    "lora_target_names",
    "predict_x0_from_eps",
    "remap_ram_swin_keys",
]
