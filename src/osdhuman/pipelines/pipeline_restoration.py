"""RestorationPipeline: OSDHuman one-step restoration of images of any size.

    pipe = RestorationPipeline.from_pretrained("weights/", base_model="sd21-base/", hfie_encoder="ram_swin_large_14m.pth")
    images = pipe([PIL.Image.open("person.jpg")]).images

Steps of ``__call__`` (diffusers style):
  1. inputs (PIL / uint8 or float arrays / tensors in [0,1]) -> (B,3,H,W) in [-1,1]
  2. prompt p = HFIE(LQ) once per image, on the whole image (Eq. 5)
  3. pad to a multiple of 8 (reflect)
  4. z_L = VAE encoder (tiled above ``vae_tile_size``)
  5. z_hat = Eq. 2 at the family's timestep (999; HAODiff 199 with CFG on its negative
     prompt, OSDFace 399; ``osdhuman.models.guidance``), latent tiles above ``tile_size``
  6. image = VAE decoder (tiled), crop back to H x W
  7. colour fix (adain | wavelet | none) against the input
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from osdhuman.config import SEED_MAX, check_fields, rule, to_dict
from osdhuman.models import OSDHuman, OSDHumanConfig, build_osdhuman
from osdhuman.models.families import FAMILIES
from osdhuman.models.guidance import guided_eps, guided_x0, x0_float64
from osdhuman.models.pretrained import load_pretrained
from osdhuman.outputs import atomic_write_json
from osdhuman.pipelines.color_fix import apply_color_fix
from osdhuman.pipelines.gaussian_tiles import gaussian_tiled_eps
from osdhuman.pipelines.tiling import GroupNormStats, downscale_to, tiled_map

__all__ = ["PRECISIONS", "PipelineConfig", "RestorationOutput", "RestorationPipeline", "TorchBackend", "resolve_device"]

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PIPELINE_FILE = "pipeline_config.json"


@dataclass
class PipelineConfig:
    """Inference settings (not part of the trained weights)."""

    tile_size: int = rule(512, ge=64, multiple_of=8)  # pixels; images larger than this (either side) run in latent tiles
    tile_overlap: int = rule(64, ge=0, multiple_of=8)  # pixels of overlap between tiles (blended smoothly)
    vae_tile_size: int | None = rule(None, ge=64, multiple_of=8)  # pixels for tiled VAE encode/decode; None -> tile_size
    color_fix: Literal["adain", "wavelet", "none"] = "adain"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str = "auto"  # auto -> cuda, then mps, then cpu
    seed: int = rule(0, ge=0, le=SEED_MAX)  # used only when the model samples the latent at inference
    # VAE GroupNorm statistics when tiling: "global" = estimated once on a downscaled copy of
    # the whole input and shared by all tiles (no colour shifts between tiles); "tile" = per
    # tile. (UNet latent tiles always normalise per tile and are blended, as in OSEDiff.)
    tile_norm: Literal["global", "tile"] = "global"
    # latent tiles: "smooth" = ours (x0 blended with raised-cosine ramps over tile_overlap);
    # "gaussian" = HAODiff's (tile_size/8 latent tiles, 5 latent overlap, Gaussian-weighted eps);
    # None = the family's (HAODiff: gaussian, else smooth)
    latent_blend: Literal["smooth", "gaussian"] | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        vt = self.vae_tile_size if self.vae_tile_size is not None else self.tile_size
        if self.tile_overlap >= min(self.tile_size, vt):
            raise ValueError(f"tile_overlap must be smaller than the tile size, got {self.tile_overlap}")


class TorchBackend:
    """The model's PyTorch modules behind the calls ``restore_tensor`` makes (the OpenVINO
    backend, pipelines/openvino_backend.py, answers the same calls from an export folder)."""

    name = "torch"

    def __init__(self, model: OSDHuman):
        self.model = model

    @property
    def sample_latent(self) -> bool:
        return self.model.config.latent_mode_infer == "sample"

    def shared_norm(self, part: str, fn, small: torch.Tensor):
        """``fn`` (the VAE ``part``: encoder | decoder) run with the GroupNorm statistics of
        ``small``, a downscaled copy of the whole input, so all tiles are normalised alike."""
        stats = GroupNormStats(self.model.vae.encoder if part == "encoder" else self.model.vae.decoder)
        stats.record(fn, small)
        return stats.wrap(fn)

    @property
    def progress_target(self) -> torch.nn.Module:  # each forward is one UNet tile pass
        return self.model.unet

    def prompt(self, lq: torch.Tensor):
        return self.model.prompt_extractor(lq)  # (B,3,H,W) -> (B,77,D), or (positive, negative) for HAODiff

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.encode_latent(x, sample=self.sample_latent, generator=generator)  # (B,4,h,w)

    def unet(self, z: torch.Tensor, prompt) -> torch.Tensor:
        """Eq. 2 at the family's timestep: z_hat (B,4,h,w); the released families with their CFG
        (``prompt`` = (positive, negative) for HAODiff) and float64 x0."""
        m = self.model
        if FAMILIES[getattr(m, "family", "osdhuman")].x0_float64:
            return guided_x0(m, z, prompt, getattr(m, "guidance_scale", 1.0), m.config.timestep)
        return m.predict_x0(z, prompt)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)  # (B,3,8h,8w)


@dataclass
class RestorationOutput:
    images: Any  # list of PIL images | list of uint8 (H,W,3) arrays | (B,3,H,W) tensor in [0,1]
    untrained: bool = False  # True: produced by a random (untrained) preset - NOT a restoration


def resolve_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _to_tensor(img: Any) -> torch.Tensor:
    """One image -> (3,H,W) float32 in [0,1]."""

    if isinstance(img, Image.Image):
        img = np.asarray(img.convert("RGB"))
    if isinstance(img, np.ndarray):
        a = img
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"expected an (H,W,3) image array, got shape {a.shape}")
        a = a[..., :3]
        t = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)
        t = t.float() / 255.0 if a.dtype == np.uint8 else t.float()
    elif torch.is_tensor(img):
        t = img.detach()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"expected a (3,H,W) tensor, got shape {tuple(t.shape)}")
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    else:
        raise TypeError(f"unsupported image type {type(img).__name__} (PIL image, numpy array or torch tensor)")
    if t.min() < -1e-3 or t.max() > 1 + 1e-3:
        raise ValueError("float images must be in [0, 1]")
    return t.clamp(0, 1).cpu()


class RestorationPipeline:
    """Components: ``model`` (OSDHuman: vae, unet, prompt_extractor) + ``config`` (PipelineConfig)."""

    def __init__(self, model: OSDHuman, config: PipelineConfig | None = None, fuse: bool = True):
        """``fuse``: fold the generator LoRA into the base weights now (faster inference;
        the model can no longer switch adapters). ``weights_summary``: what was loaded."""
        self.config = config or PipelineConfig()
        self.model = model.eval()
        self.backend = TorchBackend(model)  # what restore_tensor calls (an OpenVINO export answers the same)
        self.weights_summary = ""
        if fuse and not model.merged:
            model.merge_generator_lora()
        self.device = resolve_device(self.config.device)
        self.dtype = PRECISIONS[self.config.precision]
        self._place()

    # ---------------------------------------------------------------- components
    @property
    def components(self) -> dict[str, Any]:
        return {"vae": self.model.vae, "unet": self.model.unet, "prompt_extractor": self.model.prompt_extractor}

    @property
    def untrained(self) -> bool:
        return self.model.untrained

    @property
    def model_config(self) -> OSDHumanConfig:
        return self.model.config

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def precision_name(self) -> str:
        return getattr(self.backend, "precision_name", None) or self.config.precision

    def settings(self) -> dict:
        """What decides the pixels, for reports: family, timestep, guidance, latent, colour fix,
        and the user's overrides of what the weights record."""
        m = self.model
        if m is None:  # an OpenVINO export: OSDHuman's one step as exported
            c = self.model_config
            return {"family": "osdhuman", "timestep": c.timestep, "guidance_scale": 1.0,
                    "latent": c.latent_mode_infer, "color_fix": self.config.color_fix, "overrides": []}
        return {"family": getattr(m, "family", "osdhuman"), "timestep": m.config.timestep,
                "guidance_scale": getattr(m, "guidance_scale", 1.0), "latent": m.config.latent_mode_infer,
                "color_fix": self.config.color_fix, "weights": m.weights_source,
                "overrides": list(getattr(m, "overrides", []))}

    def _place(self) -> None:
        m = self.model.to(device=self.device, dtype=self.dtype)
        if self.dtype == torch.float16:
            # the SD VAE overflows in fp16 (NaN / black images): keep it in fp32
            m.vae.to(torch.float32)

    def to(self, device: str | None = None, precision: str | None = None) -> RestorationPipeline:
        self.config = replace(self.config, device=device or self.config.device, precision=precision or self.config.precision)
        self.device = resolve_device(self.config.device)
        self.dtype = PRECISIONS[self.config.precision]
        self._place()
        return self

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(
        cls, weights: str | Path | None = None, *, base_model: str | None = None,
        hfie_encoder: str | None = None, model_config: OSDHumanConfig | None = None,
        fuse: bool = True, timestep: int | None = None, prompt_source: str | None = None,
        guidance_scale: float | None = None, model_overrides: dict | None = None, **pipeline_kwargs,
    ) -> RestorationPipeline:
        """``weights``: our folder (``save_pretrained`` / training), our diffusers export, a
        diffusers / peft LoRA file or folder, the authors' group layout, OSEDiff's
        ``osediff.pkl``, or a hub id in the local cache (``osdhuman.models.pretrained``).
        Without it, a model with untrained (zero) LoRA is built from ``base_model`` (or
        ``model_config``) and flagged ``untrained``. ``timestep`` / ``prompt_source``
        override what the files record, and so do ``model_overrides`` (OSDHumanConfig fields,
        e.g. ``dape_path`` / ``ram_tag_list`` / ``latent_mode_infer``; None values ignored);
        ``pipeline_kwargs`` override PipelineConfig fields; ``color_fix`` left out (or None)
        is the family's (HAODiff: wavelet, OSDFace: none, else adain). ``guidance_scale``:
        classifier-free guidance for families with a negative prompt (HAODiff: 3.5)."""
        saved: dict = {}
        summary = ""
        extra = {k: v for k, v in (model_overrides or {}).items() if v is not None}
        if weights is not None:
            model, summary = load_pretrained(weights, base_model=base_model, hfie_encoder_path=hfie_encoder,
                                             timestep=timestep, prompt_source=prompt_source,
                                             guidance_scale=guidance_scale, **extra)
            pf = Path(weights) / PIPELINE_FILE
            if pf.is_file():
                saved = json.loads(pf.read_text())
        else:
            cfg = model_config or OSDHumanConfig()
            over = {"base_model": base_model, "hfie_encoder_path": hfie_encoder, "timestep": timestep,
                    "prompt_source": prompt_source, **extra}
            cfg = replace(cfg, **{k: v for k, v in over.items() if v is not None})
            # inference needs no null-prompt embedding: CLIP's text encoder only for text prompts
            model = build_osdhuman(cfg, text_encoder=cfg.prompt_source in ("text", "null"))
            summary = model.prompt_summary
        known = set(PipelineConfig.__dataclass_fields__)
        merged = {k: v for k, v in {**saved, **pipeline_kwargs}.items() if k in known and v is not None}
        family = FAMILIES[getattr(model, "family", "osdhuman")]
        if "color_fix" not in merged:
            merged["color_fix"] = family.color_fix
        if family.name == "haodiff":  # their tiling: latent tiles blended by Gaussians, VAE whole up to 1024 px
            merged.setdefault("latent_blend", "gaussian")
            merged.setdefault("vae_tile_size", 1024)
        if merged["color_fix"] != family.color_fix and family.name in ("haodiff", "osdface"):
            model.overrides = [*getattr(model, "overrides", []), f"--color-fix {merged['color_fix']} overrides the "
                               f"{family.name} weights' {family.color_fix}"]
        pipe = cls(model, PipelineConfig(**merged), fuse=fuse)
        pipe.weights_summary = summary
        return pipe

    def save_pretrained(self, directory: str | Path) -> Path:
        if self.model.merged:
            raise ValueError("this pipeline's LoRA is fused into the base weights (fuse=True), so its "
                             "adapters cannot be saved: build it with fuse=False to save it")
        d = self.model.save_weights(directory)
        atomic_write_json(d / PIPELINE_FILE, to_dict(self.config), indent=2)
        return d

    # ---------------------------------------------------------------- the one step, any size
    @torch.no_grad()
    def restore_tensor(self, lq: torch.Tensor, generator: torch.Generator | None = None,
                       tile_size: int | None = None, tile_overlap: int | None = None,
                       vae_tile_size: int | None = None, color_fix: str | None = None) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] (any H, W) -> restored (B,3,H,W) in [-1,1] float32."""
        c = self.config
        tile = (tile_size or c.tile_size) // 8
        vtile = (vae_tile_size or c.vae_tile_size or tile_size or c.tile_size) // 8
        ov = (c.tile_overlap if tile_overlap is None else tile_overlap) // 8
        m = self.backend  # prompt / encode / unet / decode: PyTorch modules or an OpenVINO export
        lq = lq.to(self.device, torch.float32)
        family = getattr(self.model, "family", "osdhuman")  # an OpenVINO export runs OSDHuman's step
        in_hw = lq.shape[-2:]
        if family == "osdface" and in_hw[0] == in_hw[1] != 512:  # OSDFace runs square faces at 512
            lq = F.interpolate(lq, size=(512, 512), mode="bilinear", align_corners=True)
        _B, _, H, W = lq.shape
        # 2. prompt from the whole LQ image: (B,77,D), or (positive, negative) for HAODiff
        p = m.prompt(lq.to(self.dtype))
        # 3. pad to a multiple of 8
        ph, pw = (-H) % 8, (-W) % 8
        x = F.pad(lq, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate")
        gh, gw = x.shape[-2] // 8, x.shape[-1] // 8
        shared = c.tile_norm == "global"
        # 4. VAE encoder, tiled
        enc = lambda t: m.encode(t, generator=generator)
        z = tiled_map(self._tiled_fn(enc, "encoder", x, vtile * 8, 8, shared and max(gh, gw) > vtile),
                      x, (gh, gw), vtile, min(ov, vtile - 1), in_scale=8, out_scale=1)  # (B,4,gh,gw)
        # 5. Eq. 2 at the family's timestep, latent tiles
        if c.latent_blend == "gaussian":  # HAODiff's tiles: Gaussian-weighted eps, then one x0 (PyTorch)
            model, g = self.model, getattr(self.model, "guidance_scale", 1.0)
            eps = gaussian_tiled_eps(lambda t: guided_eps(model, t, p, g, model.config.timestep), z, tile)
            z_hat = x0_float64(z, eps, model.config.timestep, model.alphas_cumprod)
        else:
            z_hat = tiled_map(lambda t: m.unet(t, p), z, (gh, gw), tile, min(ov, tile - 1), 1, 1)  # (B,4,gh,gw)
        # 6. decoder, tiled; crop
        img = tiled_map(self._tiled_fn(m.decode, "decoder", z_hat, vtile, 1, shared and max(gh, gw) > vtile),
                        z_hat, (gh, gw), vtile, min(ov, vtile - 1), 1, 8)  # (B,3,8gh,8gw)
        img = img[..., :H, :W].clamp(-1, 1)
        # 7. colour fix
        img = apply_color_fix(img, lq, color_fix or c.color_fix)
        if img.shape[-2:] != in_hw:  # back to the input's size
            img = F.interpolate(img, size=tuple(in_hw), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
        return img

    def _tiled_fn(self, fn, part: str, x, max_side: int, multiple: int, shared: bool):
        """fn itself, or fn with the VAE ``part``'s GroupNorm statistics of a downscaled whole input (tiling)."""
        if not shared:
            return fn
        return self.backend.shared_norm(part, fn, downscale_to(x, max_side, multiple))

    def __call__(self, images: Any, *, batch_size: int = 1, output_type: Literal["pil", "np", "np16", "pt"] = "pil",
                 generator: torch.Generator | None = None, **kwargs) -> RestorationOutput:
        """output_type "np16": uint16 (H,W,3) arrays (values to 1/65535).
        images: one or a list of PIL images, (H,W,3) arrays (uint8 or float in [0,1]),
        (3,H,W) tensors or a (B,3,H,W) tensor in [0,1]. kwargs: tile_size, tile_overlap,
        vae_tile_size, color_fix for this call."""
        if torch.is_tensor(images) and images.ndim == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        tensors = [_to_tensor(im) for im in images]  # 1. each (3,H,W) in [0,1]
        if generator is None and self.backend.sample_latent:
            generator = torch.Generator(self.device).manual_seed(self.config.seed)
        results: list[torch.Tensor | None] = [None] * len(tensors)
        i = 0
        while i < len(tensors):  # batch consecutive images of the same size
            j = i + 1
            while j < len(tensors) and j - i < batch_size and tensors[j].shape == tensors[i].shape:
                j += 1
            batch = torch.stack(tensors[i:j]) * 2 - 1  # (b,3,H,W) in [-1,1]
            out = self.restore_tensor(batch, generator=generator, **kwargs)
            for k in range(j - i):
                results[i + k] = ((out[k] + 1) * 0.5).clamp(0, 1).cpu()  # (3,H,W) in [0,1]
            i = j
        return RestorationOutput(images=_format(results, output_type), untrained=self.untrained)


def _format(results: Sequence[torch.Tensor], output_type: str) -> Any:
    if output_type == "pt":
        return torch.stack(list(results)) if len({r.shape for r in results}) == 1 else list(results)
    if output_type == "np16":
        return [(r.permute(1, 2, 0).double().numpy() * 65535.0 + 0.5).astype(np.uint16) for r in results]
    arrays = [(r.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8) for r in results]
    if output_type == "np":
        return arrays
    if output_type == "pil":
        return [Image.fromarray(a) for a in arrays]
    raise ValueError(f"output_type must be pil | np | np16 | pt, got {output_type!r}")
