"""HFIE, the high-fidelity image embedder (paper Eq. 5, Fig. 5; docs/reference.md §hfie).

    p = HFIE(I'_L) = MHA(Q, E(I'_L), E(I'_L))

E is RAM's image encoder: a Swin-L (timm's ``SwinTransformer``, same architecture) whose
12x12 final tokens (after the last LayerNorm) get their average-pooled token placed FIRST
(145 tokens x 1536), projected by ``image_proj`` to 512. Q is a learnable 77 x 1024 query;
MHA is ``nn.MultiheadAttention(1024, 8, kdim=512, vdim=512)`` followed by LayerNorm(1024).
E is frozen and always in eval mode; Q, MHA and the norm are trained.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from osdhuman.models.errors import WeightsError
from osdhuman.outputs import save_safetensors

# timm is imported inside the functions that build or convert the Swin encoder (~1 s of start-up).

__all__ = ["HFIE", "RAM_URL", "hfie_input", "RamLoadReport", "SwinEncoder", "export_ram_encoder", "load_ram_encoder", "read_ram_checkpoint",
           "remap_ram_swin_keys"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hfie_input(img: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The encoder's input (docs/reference.md §hfie): [-1,1] (B,3,H,W) -> [0,1], resized to
    size x size (bicubic, antialiased), ImageNet-normalised with ``mean`` / ``std`` (1,3,1,1)."""
    x = (img.float() + 1.0) * 0.5  # (B,3,H,W) in [0,1]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                          antialias=x.device.type != "meta")
    return (x.clamp(0.0, 1.0) - mean) / std  # (B,3,S,S)
RAM_URL = "https://huggingface.co/xinyu1205/recognize_anything_model/blob/main/ram_swin_large_14m.pth"


class SwinEncoder(nn.Module):
    """RAM's image encoder E: (B,3,S,S) normalised -> (B, 1 + (S/32)^2, out_dim), pooled token first."""

    def __init__(
        self, img_size: int = 384, patch_size: int = 4, embed_dim: int = 192,
        depths: Sequence[int] = (2, 2, 18, 2), num_heads: Sequence[int] = (6, 12, 24, 48),
        window_size: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True, out_dim: int = 512,
    ):
        super().__init__()
        from timm.models.swin_transformer import SwinTransformer

        self.img_size = img_size
        self.swin = SwinTransformer(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depths=tuple(depths),
            num_heads=tuple(num_heads), window_size=window_size, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, num_classes=0, drop_path_rate=0.0,
        )
        self.image_proj = nn.Linear(self.swin.num_features, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.swin.forward_features(x)  # (B, h, w, C) after the final LayerNorm
        tokens = f.flatten(1, 2)  # (B, h*w, C)
        pooled = tokens.mean(dim=1, keepdim=True)  # (B, 1, C)
        return self.image_proj(torch.cat([pooled, tokens], dim=1))  # (B, 1 + h*w, out_dim)


class HFIE(nn.Module):
    """Prompt extractor of OSDHuman: image (B,3,H,W) in [-1,1] -> prompt (B, query_len, cross_dim).

    ``source`` = "lq" (default, paper) or "hq" (ablation: uses ``hq`` when given, the LQ
    otherwise, e.g. at inference).
    """

    def __init__(
        self, encoder: SwinEncoder, cross_dim: int = 1024, query_len: int = 77, heads: int = 8,
        source: str = "lq", generator: torch.Generator | None = None,
    ):
        super().__init__()
        if source not in ("lq", "hq"):
            raise ValueError(f"HFIE source must be 'lq' or 'hq', got {source!r}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.source = source
        q = torch.empty(query_len, cross_dim)
        if q.device.type != "meta":
            q.normal_(generator=generator)  # randn init (docs/reference.md §hfie)
        self.query = nn.Parameter(q)  # (77, 1024)
        self.attn = nn.MultiheadAttention(cross_dim, heads, kdim=encoder.out_dim, vdim=encoder.out_dim, batch_first=True)
        self.norm = nn.LayerNorm(cross_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> HFIE:
        super().train(mode)
        self.encoder.eval()  # E is frozen and always in eval mode
        return self

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        return hfie_input(img, self.encoder.img_size, self.mean, self.std)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Eq. 5 on encoder tokens (B, N, kdim) -> (B, query_len, cross_dim)."""
        q = self.query.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, 77, D)
        tokens = tokens.to(q.dtype)
        p, _ = self.attn(q, tokens, tokens, need_weights=False)  # (B, 77, D)
        return self.norm(p)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """E(I'): (B,3,H,W) in [-1,1] -> (B, 145, 512) tokens, no gradient (E is frozen)."""
        x = self.preprocess(img).to(self.encoder.image_proj.weight.dtype)
        with torch.no_grad():
            return self.encoder(x)  # (B, 145, 512)

    def forward(self, lq: torch.Tensor, hq: torch.Tensor | None = None) -> torch.Tensor:
        img = hq if (self.source == "hq" and hq is not None) else lq
        return self.head(self.encode(img))  # (B, 77, D)


# ----------------------------------------------------------------------------------------
# RAM checkpoint (ram_swin_large_14m.pth) -> SwinEncoder
# ----------------------------------------------------------------------------------------
@dataclass
class RamLoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys we do not use
    resized: list[str] = field(default_factory=list)  # bias tables resized to our window

    def summary(self) -> str:
        return (f"{self.path}: loaded {len(self.loaded)} encoder tensors, resized {len(self.resized)}, "
                f"ignored {len(self.unexpected)} unexpected keys")


def _layout_help(path: str) -> str:
    return (
        f"Expected a RAM checkpoint (a dict with the weights under 'model'; keys "
        f"'visual_encoder.*' = Swin-L with patch merging at the end of stages 0-2, and "
        f"'image_proj.weight' / 'image_proj.bias' = Linear(1536, 512)). Download "
        f"ram_swin_large_14m.pth (5.6 GB) from {RAM_URL} and pass it with --hfie-encoder FILE "
        f"(or OSDHUMAN_HFIE_ENCODER); `osdhuman export-encoder RAM.pth -o encoder.safetensors` keeps "
        f"only the encoder (0.8 GB), which --hfie-encoder also reads. Checkpoint: {path}"
    )


def remap_ram_swin_keys(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """RAM key names -> SwinEncoder key names; returns (mapped, ignored_keys).

    ``visual_encoder.X`` -> ``swin.X`` (Microsoft layout ``layers.i.downsample`` at the END of
    stage i becomes timm's ``layers.{i+1}.downsample``), ``image_proj.X`` kept; the
    non-persistent ``relative_position_index`` / ``attn_mask`` buffers are dropped.
    """
    sd = state_dict.get("model", state_dict) if isinstance(state_dict, dict) else state_dict
    microsoft = "visual_encoder.layers.0.downsample.reduction.weight" in sd
    out, ignored = {}, []
    for k, v in sd.items():
        if k.startswith("visual_encoder."):
            if k.endswith(("relative_position_index", "attn_mask")):
                continue
            sub = k[len("visual_encoder."):]
            if microsoft:
                sub = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", sub)
            out["swin." + sub] = v
        elif k.startswith("image_proj."):
            out[k] = v
        else:
            ignored.append(k)
    return out, ignored


def read_ram_checkpoint(path: str) -> dict:
    """A RAM checkpoint (torch pickle, weights_only, memory-mapped when it can) or our
    reduced encoder file (safetensors, same key names)."""
    if path.endswith(".safetensors"):
        try:
            return load_file(path)
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc}). " + _layout_help(path)) from None
    load_errors = (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError,
                   KeyError, IndexError, TypeError)  # a non-checkpoint file trips the unpickler
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except load_errors:  # not a zip checkpoint (mmap needs one): try the legacy format
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except load_errors as exc:  # report the legacy reader's complaint, not mmap's
            raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({exc!r}). " + _layout_help(path)) from exc


def export_ram_encoder(ram_path: str | Path, out: str | Path) -> tuple[Path, int]:
    """Keep only RAM's image encoder (``visual_encoder.*``, ``image_proj.*``; buffers dropped)
    in a safetensors file that ``load_ram_encoder`` reads: (path, tensors written)."""

    path = str(ram_path)
    if not Path(path).is_file():
        raise WeightsError(f"RAM checkpoint not found: {path}. " + _layout_help(path))
    raw = read_ram_checkpoint(path)
    sd = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a dict. " + _layout_help(path))
    keep = {k: v.contiguous() for k, v in sd.items() if torch.is_tensor(v)
            and k.startswith(("visual_encoder.", "image_proj.")) and not k.endswith(("relative_position_index", "attn_mask"))}
    if not any(k.startswith("visual_encoder.") for k in keep):
        raise WeightsError(f"{path}: no visual_encoder.* tensors. " + _layout_help(path))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(keep, out, {"format": "osdhuman-ram-encoder", "source": Path(path).name})
    return out, len(keep)


def load_ram_encoder(encoder: SwinEncoder, path: str | Path, raw: dict | None = None) -> RamLoadReport:
    """Load RAM's image encoder + image_proj into ``encoder`` (torch.load(weights_only=True)).

    Every encoder tensor must be present with a usable shape; otherwise WeightsError naming the
    file, the expected layout and where to download it. Unused checkpoint keys are reported.
    ``raw``: the checkpoint's contents when the caller has read them already.
    """
    from timm.layers import resize_rel_pos_bias_table

    path = str(path)
    if raw is None:
        if not Path(path).is_file():
            raise WeightsError(f"HFIE encoder checkpoint not found: {path}. " + _layout_help(path))
        raw = read_ram_checkpoint(path)  # ``raw``: the same file, already read (DAPE reads its tagging head too)
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: expected a dict, got {type(raw).__name__}. " + _layout_help(path))
    mapped, ignored = remap_ram_swin_keys(raw)
    report = RamLoadReport(path=path, unexpected=list(ignored))
    own = encoder.state_dict()
    final: dict[str, torch.Tensor] = {}
    bad = []
    for k, v in mapped.items():
        if k not in own:
            report.unexpected.append(k)
            continue
        if k.endswith("relative_position_bias_table") and v.shape != own[k].shape:
            m = encoder.get_submodule(k[: -len(".relative_position_bias_table")])
            v = resize_rel_pos_bias_table(v, new_window_size=m.window_size, new_bias_shape=own[k].shape)
            report.resized.append(k)
        if v.shape != own[k].shape:
            bad.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}")
            continue
        final[k] = v
    missing = sorted(set(own) - set(final) - {k for k in own if any(k.endswith(s) for s in ("relative_position_index", "attn_mask"))})
    if bad or missing:
        lines = bad[:5] + [f"missing {k}" for k in missing[:5]]
        more = len(bad) + len(missing) - len(lines)
        raise WeightsError(
            f"{path}: {len(missing)} encoder tensors missing, {len(bad)} with the wrong shape "
            f"({'; '.join(lines)}{f'; ... {more} more' if more > 0 else ''}). " + _layout_help(path)
        )
    encoder.load_state_dict(final, strict=False)
    report.loaded = sorted(final)
    return report
