"""The OSDHuman generator G_theta (paper Eq. 2-3) and its VSD views of the shared UNet.

    z_L   = E_theta(I_L) * 0.18215                      VAE encoder + LoRA
    z_hat = (z_L - sqrt(1 - a_T) eps(z_L; p, T)) / sqrt(a_T),  T = 999   (Eq. 2, float32)
    I_hat = D(z_hat / 0.18215).clamp(-1, 1)             frozen decoder   (Eq. 3)
    p     = HFIE(I'_L)                                  (Eq. 5)
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from osdhuman.config import from_dict, to_dict
from osdhuman.models.config import (
    OSDHumanConfig,
    swin_kwargs,
)
from osdhuman.models.dape import DAPEPrompt, build_dape_prompt, check_dape_inputs
from osdhuman.models.errors import WeightsError
from osdhuman.models.hfie import HFIE, RAM_URL, SwinEncoder, load_ram_encoder
from osdhuman.models.loading import build_sd_components, check_base_model, seeded
from osdhuman.models.lora import (
    DualWeightConv2d,
    add_lora,
    lora_layers,
    lora_target_names,
    merge_adapter,
    set_active_adapter,
)
from osdhuman.models.prompt import FixedPrompt, encode_text
from osdhuman.models.schedule import alphas_cumprod_scaled_linear, predict_x0_from_eps
from osdhuman.outputs import atomic_write_json, save_safetensors

__all__ = [
    "CONFIG_FILE",
    "UNET_MODES",
    "WEIGHTS_FILE",
    "OSDHuman",
    "OSDHumanOutput",
    "build_osdhuman",
    "load_osdhuman",
]

UNET_MODES = ("generator", "teacher", "regularizer")
WEIGHTS_FILE = "osdhuman_weights.safetensors"
CONFIG_FILE = "osdhuman_config.json"
FORMAT = "osdhuman-weights"
FORMAT_VERSION = 2  # 2: peft key names (lora_A / lora_B); 1 (lora_down / lora_up) is still read
_V1_KEYS = ((".lora_down.", ".lora_A."), (".lora_up.", ".lora_B."))


def _base_weight(module: nn.Module) -> torch.Tensor:
    """The frozen base weight of a (possibly peft-wrapped) Linear / Conv2d."""
    get = getattr(module, "get_base_layer", None)
    return (get() if get is not None else module).weight


@dataclass
class OSDHumanOutput:
    image: torch.Tensor  # (B,3,H,W) in [-1,1]
    latent: torch.Tensor  # z_hat (B,4,H/8,W/8) float32
    prompt_embeds: torch.Tensor  # (B,77,cross_dim)


class OSDHuman(nn.Module):
    """One-step restorer. See ``osdhuman.models`` for the API.

    Args:
        config: the OSDHumanConfig it was built from (kept for saving).
        vae: diffusers AutoencoderKL (frozen; LoRA added to encoder + quant_conv here).
        unet: diffusers UNet2DConditionModel (frozen; LoRA added here; conv_in trainable).
        prompt_extractor: HFIE or FixedPrompt: (lq, hq=None) -> (B,77,cross_dim).
        null_prompt_embeds: (1,77,cross_dim) embedding of " " or None.
    """

    def __init__(
        self, config: OSDHumanConfig, vae: nn.Module, unet: nn.Module, prompt_extractor: nn.Module,
        null_prompt_embeds: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        self.vae = vae.requires_grad_(False)
        self.unet = unet.requires_grad_(False)
        self.prompt_extractor = prompt_extractor
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if hasattr(prompt_extractor, "encoder"):
            prompt_extractor.encoder.requires_grad_(False)
        if isinstance(prompt_extractor, DAPEPrompt):
            prompt_extractor.requires_grad_(False)
        self.prompt_summary = ""  # what the prompt extractor was built from (DAPE: files, LoRA)

        if config.train_conv_in:  # generator trains conv_in; teacher / regularizer keep SD's
            self.unet.conv_in = DualWeightConv2d.from_conv(self.unet.conv_in).requires_grad_(True)
        vae_targets = config.vae_lora_targets
        vae_targets = lora_target_names(self.vae, "vae_encoder") if vae_targets is None else vae_targets
        unet_targets = config.unet_lora_targets
        unet_targets = lora_target_names(self.unet, "unet") if unet_targets is None else unet_targets
        if vae_targets:
            add_lora(self.vae, vae_targets, "generator", config.effective_vae_lora_rank,
                     config.effective_vae_lora_alpha, config.lora_init, seed=config.seed + 1)
        if unet_targets:
            add_lora(self.unet, unet_targets, "generator", config.lora_rank, config.lora_alpha,
                     config.lora_init, seed=config.seed + 11, rank_pattern=config.unet_lora_rank_pattern,
                     alpha_pattern=config.unet_lora_alpha_pattern)
        self.has_regularizer = False
        self.merged = False
        self.weights_source: str | None = None  # set when trained weights are loaded
        self._mode = "generator"
        self._apply_mode("generator")
        for p in self.generator_parameters():
            p.requires_grad_(True)

        if null_prompt_embeds is not None:
            self.register_buffer("null_prompt_embeds", null_prompt_embeds.detach().clone(), persistent=False)
        else:
            self.null_prompt_embeds = None
        # scaled_linear schedule computed as diffusers' DDPMScheduler does (float32). A plain
        # attribute, not a buffer, so that model.to(torch.bfloat16) cannot round it.
        self._alphas_cumprod = alphas_cumprod_scaled_linear(
            config.num_train_timesteps, config.beta_start, config.beta_end, dtype=torch.float32)  # (1000,)
        self._alphas_cache: dict[torch.device, torch.Tensor] = {}

    # ---------------------------------------------------------------- properties
    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """(1000,) float32 alpha_bar of the scaled_linear schedule, on the model's device."""
        dev = self.device
        if dev not in self._alphas_cache:
            self._alphas_cache[dev] = self._alphas_cumprod.to(dev)
        return self._alphas_cache[dev]

    @property
    def untrained(self) -> bool:
        """True when outputs are not restorations: random base presets, or a real base with
        no trained weights loaded (plain SD at t=999 with an untrained prompt head)."""
        return self.config.is_random or self.weights_source is None

    @property
    def random_base(self) -> bool:
        return self.config.is_random

    @property
    def device(self) -> torch.device:
        return _base_weight(self.unet.conv_out).device

    @property
    def conv_in(self) -> nn.Module:
        """The UNet's conv_in (a DualWeightConv2d when train_conv_in), unwrapped from peft."""
        c = self.unet.conv_in
        return c.get_base_layer() if hasattr(c, "get_base_layer") else c

    # ---------------------------------------------------------------- UNet modes
    def _apply_mode(self, mode: str) -> None:
        if mode not in UNET_MODES:
            raise ValueError(f"unet mode must be one of {UNET_MODES}, got {mode!r}")
        if mode == "regularizer" and not getattr(self, "has_regularizer", False):
            raise RuntimeError("no regularizer adapter: call model.add_regularizer() first")
        if self.merged and mode != "generator":
            raise RuntimeError(f"unet mode {mode!r} is unavailable: the generator LoRA was merged (inference only)")
        if not self.merged:
            adapter = None if mode == "teacher" else mode
            trainable = [p for p in self.unet.parameters() if p.requires_grad]
            set_active_adapter([m for _, m in lora_layers(self.unet)], adapter, trainable)
        if isinstance(self.conv_in, DualWeightConv2d):
            self.conv_in.use_original = mode != "generator"
        self._mode = mode

    @property
    def current_unet_mode(self) -> str:
        return self._mode

    @contextlib.contextmanager
    def unet_mode(self, mode: Literal["generator", "teacher", "regularizer"]) -> Iterator[None]:
        """Run the shared UNet as the generator (LoRA + trained conv_in), the frozen SD teacher
        (no LoRA, original conv_in) or the VSD regularizer (its LoRA, original conv_in)."""
        prev = self._mode
        self._apply_mode(mode)
        try:
            yield
        finally:
            self._apply_mode(prev)

    def add_regularizer(self, rank: int | None = None, alpha: float | None = None) -> list[nn.Parameter]:
        """Add the VSD regularizer's LoRA adapter (same targets, own params; trainable)."""
        if self.has_regularizer:
            return self.regularizer_parameters()
        if self.merged:
            raise RuntimeError("the generator LoRA was merged (inference only): no regularizer can be added")
        c = self.config
        targets = [n for n, m in lora_layers(self.unet) if "generator" in m.lora_A]
        add_lora(self.unet, targets, "regularizer", rank or c.lora_rank,
                 alpha if alpha is not None else c.lora_alpha, c.lora_init, seed=c.seed + 2,
                 rank_pattern=None if rank else c.unet_lora_rank_pattern,
                 alpha_pattern=None if alpha is not None else c.unet_lora_alpha_pattern)
        self.has_regularizer = True
        params = self.regularizer_parameters()
        for p in params:
            p.requires_grad_(True)
        self._apply_mode(self._mode)
        return params

    def unet_eps(self, z_t: torch.Tensor, t: torch.Tensor | int, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """eps prediction of the UNet in its current mode: (B,4,h,w), t int or (B,) -> (B,4,h,w)."""
        dtype = _base_weight(self.unet.conv_out).dtype
        if not torch.is_tensor(t):
            t = torch.full((z_t.shape[0],), int(t), device=z_t.device, dtype=torch.long)
        return self.unet(z_t.to(dtype), t.to(z_t.device), encoder_hidden_states=prompt_embeds.to(dtype)).sample

    # ---------------------------------------------------------------- parameters
    def _adapter_params(self, root: nn.Module, adapter: str) -> list[nn.Parameter]:
        return [p for _, layer in lora_layers(root) if adapter in layer.lora_A
                for p in (*layer.lora_A[adapter].parameters(), *layer.lora_B[adapter].parameters())]

    def generator_parameters(self) -> list[nn.Parameter]:
        """Trainable generator tensors: VAE-encoder LoRA, UNet LoRA (+ conv_in), HFIE Q/MHA/norm."""
        params = self._adapter_params(self.vae, "generator") + self._adapter_params(self.unet, "generator")
        if self.config.train_conv_in:
            params += list(self.conv_in.parameters())
        if isinstance(self.prompt_extractor, HFIE):
            pe = self.prompt_extractor
            params += [pe.query, *pe.attn.parameters(), *pe.norm.parameters()]
        return params

    def regularizer_parameters(self) -> list[nn.Parameter]:
        """The VSD regularizer adapter's LoRA tensors (empty before add_regularizer())."""
        return self._adapter_params(self.unet, "regularizer")

    def parameter_counts(self) -> dict[str, int]:
        """Trainable tensor counts by group (docs/reference.md §generator: 4.056 M / 0.369 M / 11,840 at SD-2.1 size)."""
        n = lambda ps: sum(p.numel() for p in ps)
        out = {
            "unet_lora": n(self._adapter_params(self.unet, "generator")),
            "vae_encoder_lora": n(self._adapter_params(self.vae, "generator")),
            "conv_in": n(self.conv_in.parameters()) if self.config.train_conv_in else 0,
            "regularizer_lora": n(self.regularizer_parameters()),
            "generator_total": n(self.generator_parameters()),
        }
        out["hfie_head"] = out["generator_total"] - out["unet_lora"] - out["vae_encoder_lora"] - out["conv_in"]
        return out

    # ---------------------------------------------------------------- generator steps
    def encode_latent(self, lq: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_L = E(I_L) * 0.18215: (B,3,H,W) [-1,1] -> (B,4,H/8,W/8) (sampled or mode)."""
        vdtype = _base_weight(self.vae.encoder.conv_in).dtype
        dist = self.vae.encode(lq.to(vdtype)).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mode()
        return z * self.scaling_factor  # (B,4,h,w)

    def predict_x0(self, z_L: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Eq. 2 at T_L (999): (B,4,h,w) -> z_hat (B,4,h,w) float32 (generator mode UNet)."""
        t = self.config.timestep
        eps = self.unet_eps(z_L, t, prompt_embeds)  # (B,4,h,w)
        return predict_x0_from_eps(z_L, eps, t, self.alphas_cumprod)

    def decode(self, z_hat: torch.Tensor) -> torch.Tensor:
        """I_hat = D(z_hat / 0.18215).clamp(-1,1): (B,4,h,w) -> (B,3,8h,8w)."""
        vdtype = self.vae.decoder.conv_in.weight.dtype
        return self.vae.decode((z_hat / self.scaling_factor).to(vdtype)).sample.clamp(-1.0, 1.0)

    def forward(self, lq: torch.Tensor, hq: torch.Tensor | None = None,
                sample_latent: bool | None = None, generator: torch.Generator | None = None) -> OSDHumanOutput:
        """lq (B,3,H,W) in [-1,1], H and W multiples of 8 -> OSDHumanOutput."""
        if sample_latent is None:
            mode = self.config.latent_mode_train if self.training else self.config.latent_mode_infer
            sample_latent = mode == "sample"
        p = self.prompt_extractor(lq, hq)  # (B,77,D)
        z_L = self.encode_latent(lq, sample=sample_latent, generator=generator)  # (B,4,h,w)
        z_hat = self.predict_x0(z_L, p)  # (B,4,h,w) float32
        return OSDHumanOutput(image=self.decode(z_hat), latent=z_hat, prompt_embeds=p)

    @torch.no_grad()
    def merge_generator_lora(self) -> None:
        """Fold the generator LoRA into the base weights (inference only; irreversible:
        teacher / regularizer modes become unavailable)."""
        self._apply_mode("generator")
        for root in (self.vae, self.unet):
            merge_adapter(root, "generator")
        self.merged = True
        self.has_regularizer = False

    # ---------------------------------------------------------------- weights
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor that is not part of the frozen SD / RAM bases (what save_weights writes)."""
        ids = {id(p) for p in self.generator_parameters() + self.regularizer_parameters()}
        keep = {}
        for k, v in self.state_dict(keep_vars=True).items():
            head = (k.startswith("prompt_extractor.") and not k.startswith("prompt_extractor.encoder.")
                    and not isinstance(self.prompt_extractor, DAPEPrompt))  # DAPE: frozen RAM + CLIP only
            if id(v) in ids or head:
                keep[k] = v.detach()
        if self.null_prompt_embeds is not None:
            keep["null_prompt_embeds"] = self.null_prompt_embeds
        return keep

    @property
    def conv_in_key(self) -> str:
        """State-dict prefix of the trained conv_in (``unet.conv_in.`` or ``.base_layer.``)."""
        wrapped = hasattr(self.unet.conv_in, "get_base_layer")
        return "unet.conv_in.base_layer." if wrapped else "unet.conv_in."

    def _upgrade_keys(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Format-1 key names (our own LoRA layer) -> today's peft names."""
        out = {}
        for k, v in tensors.items():
            for a, b in _V1_KEYS:
                k = k.replace(a, b)
            if k.startswith("unet.conv_in.base."):
                k = self.conv_in_key + k[len("unet.conv_in.base."):]
            out[k] = v
        return out

    def save_weights(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write osdhuman_weights.safetensors (trainable tensors) + osdhuman_config.json."""

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.trainable_state_dict().items()}
        save_safetensors(tensors, d / WEIGHTS_FILE, {"format": FORMAT, "version": str(FORMAT_VERSION)})
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": to_dict(self.config),
                "has_regularizer": self.has_regularizer, "untrained_base": self.random_base,
                "parameter_counts": self.parameter_counts(), **(extra or {})}
        atomic_write_json(d / CONFIG_FILE, meta, indent=2)
        return d

    def load_weights(self, directory: str | Path, strict: bool = True) -> OSDHuman:
        """Load tensors written by save_weights (adds the regularizer adapter if saved)."""

        path = Path(directory) / WEIGHTS_FILE if Path(directory).is_dir() else Path(directory)
        if not path.is_file():
            raise WeightsError(f"{path}: not found. Expected a folder written by OSDHuman.save_weights "
                               f"(or `osdhuman train`) with {WEIGHTS_FILE} and {CONFIG_FILE}.")
        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
        tensors = self._upgrade_keys(tensors)
        if any(".lora_A.regularizer." in k for k in tensors) and not self.has_regularizer:
            self.add_regularizer()
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(tensors) - {"null_prompt_embeds"})  # null prompt: optional
        unexpected = sorted(set(tensors) - set(own))
        wrong = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in tensors if k in own and tuple(tensors[k].shape) != tuple(own[k].shape)]
        if wrong or (strict and (missing or unexpected)):
            raise WeightsError(
                f"{path}: does not match this model (base {self.config.base_model!r}, LoRA rank "
                f"{self.config.lora_rank}, prompt {self.config.prompt_source!r}): {len(missing)} missing, "
                f"{len(unexpected)} unexpected, {len(wrong)} wrong shape; e.g. "
                f"{(wrong + missing + unexpected)[:4]}. Load it with load_osdhuman(dir) so the saved "
                f"{CONFIG_FILE} rebuilds the matching architecture."
            )
        if "null_prompt_embeds" in tensors:
            t = tensors.pop("null_prompt_embeds")
            if self.null_prompt_embeds is None:
                self.register_buffer("null_prompt_embeds", t.to(self.device), persistent=False)
            else:
                self.null_prompt_embeds.copy_(t)
        self.load_state_dict(tensors, strict=False)
        self.weights_source = str(path)
        return self


# ------------------------------------------------------------------------------------------
def _needs_text(cfg: OSDHumanConfig) -> bool:
    return cfg.prompt_source in ("text", "null")


def build_osdhuman(cfg: OSDHumanConfig, device: str | torch.device | None = None,
                   text_encoder: bool = True) -> OSDHuman:
    """Build the model from ``cfg`` (float32, CPU by default; ``device="meta"`` for shape /
    parameter-count checks without memory). ``text_encoder=False`` skips running CLIP's text
    encoder (fixed prompts then start as zeros, to be filled by ``load_weights``)."""

    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    meta = device is not None and torch.device(device).type == "meta"
    check_base_model(cfg.base_model)
    if cfg.is_dape and meta:
        raise ValueError("DAPE prompts (RAM tagging + CLIP text encoder) cannot be built on the meta device")
    vocab = check_dape_inputs(cfg) if cfg.is_dape else None  # before any weights are read
    if not _needs_text(cfg) and not cfg.is_dape and not cfg.is_random and not cfg.hfie_encoder_path and not meta:
        raise WeightsError(
            f"HFIE needs RAM's image encoder for base model {cfg.base_model!r}: set "
            f"hfie_encoder_path / --hfie-encoder / OSDHUMAN_HFIE_ENCODER to "
            f"ram_swin_large_14m.pth (download: {RAM_URL}; it is required: the prompt comes from its "
            f"image encoder), or to the reduced file `osdhuman export-encoder RAM.pth -o encoder.safetensors` writes.")
    with ctx:
        # DAPE encodes every image's tags: it always needs (and keeps) the text encoder
        want_text = not meta and ((text_encoder and (_needs_text(cfg) or cfg.compute_null_prompt)) or cfg.is_dape)
        unet, vae, te, tok = build_sd_components(
            cfg.base_model, seed=cfg.seed, revision=cfg.revision, with_text=want_text,
            require_text=want_text and (_needs_text(cfg) or cfg.is_dape))
        cross = int(unet.config.cross_attention_dim)
        null = None
        fixed = None
        if want_text and te is None:
            warnings.warn(f"{cfg.base_model}: no text encoder, so no null-prompt embedding "
                          "(VSD's classifier-free guidance needs one)", stacklevel=2)
        if te is not None:
            null = encode_text(te, tok, " ")  # (1,77,D)
            if _needs_text(cfg):
                fixed = null if cfg.prompt_source == "null" else encode_text(te, tok, cfg.text_prompt)
        elif not text_encoder or meta:
            null = torch.zeros(1, cfg.hfie_query_len, cross) if cfg.compute_null_prompt or _needs_text(cfg) else None
            fixed = torch.zeros(1, cfg.hfie_query_len, cross)
        note = ""
        if _needs_text(cfg):
            prompt = FixedPrompt(fixed, text=" " if cfg.prompt_source == "null" else cfg.text_prompt)
        elif cfg.is_dape:
            prompt, note = build_dape_prompt(cfg, vocab, te, tok)
        else:
            swin = swin_kwargs(cfg.base_model, cfg.hfie_image_size)
            with seeded(cfg.seed + 3):
                encoder = SwinEncoder(**swin)
            if cfg.hfie_encoder_path and not meta:
                report = load_ram_encoder(encoder, cfg.hfie_encoder_path)
                if report.unexpected:
                    warnings.warn(report.summary(), stacklevel=2)
            gen = torch.Generator().manual_seed(cfg.seed + 4)
            with seeded(cfg.seed + 5):
                prompt = HFIE(encoder, cross_dim=cross, query_len=cfg.hfie_query_len, heads=cfg.hfie_heads,
                              source="hq" if cfg.prompt_source == "hfie_hq" else "lq", generator=gen)
        model = OSDHuman(cfg, vae, unet, prompt, null_prompt_embeds=null)
    model.prompt_summary = note
    return model


def read_saved_config(directory: str | Path) -> dict:
    p = Path(directory) / CONFIG_FILE
    if not p.is_file():
        raise WeightsError(f"{p}: not found. Expected a folder written by OSDHuman.save_weights "
                           f"(or `osdhuman train`) holding {WEIGHTS_FILE} and {CONFIG_FILE}.")
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{p}: not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{p}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_osdhuman(directory: str | Path, base_model: str | None = None,
                  hfie_encoder_path: str | None = None, **overrides) -> OSDHuman:
    """Build the model described by ``directory/osdhuman_config.json`` and load its weights.

    ``base_model`` / ``hfie_encoder_path`` override where the frozen bases come from (the
    saved paths may not exist on this machine)."""


    meta = read_saved_config(directory)
    data = dict(meta["config"])
    if base_model is not None:
        data["base_model"] = base_model
    if hfie_encoder_path is not None:
        data["hfie_encoder_path"] = hfie_encoder_path
    data.update(overrides)
    cfg = from_dict(OSDHumanConfig, data, where=str(Path(directory) / CONFIG_FILE))
    wpath = Path(directory) / WEIGHTS_FILE
    if not wpath.is_file():
        raise WeightsError(f"{wpath}: not found (the folder has {CONFIG_FILE} but no weights).")
    try:
        with safe_open(str(wpath), "pt") as f:
            keys = set(f.keys())
    except (OSError, SafetensorError) as exc:
        raise WeightsError(f"{wpath}: not a readable safetensors file ({exc})") from exc
    have_prompts = "null_prompt_embeds" in keys and (not _needs_text(cfg) or "prompt_extractor.embeds" in keys)
    model = build_osdhuman(cfg, text_encoder=not have_prompts)
    return model.load_weights(directory)
