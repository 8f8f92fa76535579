"""HAODiff's dual prompt encoder: a positive and a negative prompt from the LQ image.

    enc = load_haodiff_encoder(Path("weights/img_encoder_weights.pth"))
    pos, neg = enc(lq)          # lq (B,3,H,W) in [-1,1] -> two (B,77,1024)

The LQ is resized bilinearly to 512x512 (in [-1,1], as HAODiff feeds it), a multi-branch SwinIR
(``swinir_features``) gives one 128x128 token map per branch; branch 0 feeds the "main" head
(positive prompt), the other branches concatenated on channels feed the "aux" head (negative
prompt). Each head: Linear -> + learned position embedding (128*128 tokens) -> Performer ->
8x8 patches unfolded to 256 tokens -> Linear -> 77 learned queries attend (MultiheadAttention)
-> LayerNorm. The file layout and the numbers are docs/reference.md §released.

The encoder is built from the ``swinir_kwargs`` / ``performer_kwargs`` recorded in the file;
keys the file leaves out take the values of HAODiff's own class. Every tensor of the file must
then fit the built model (names and shapes); anything else is a WeightsError naming the
kwargs and the tensors that disagree. Tensors HAODiff's inference also ignores (the SDXL
"embedding_changer" heads kept from training, the text-fusion layer, the Performer's duplicate
references and redraw counter) are dropped and counted in ``ignored``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from osdhuman.models.errors import WeightsError
from osdhuman.models.performer import Performer
from osdhuman.models.swinir_features import SwinIRFeatures, SwinIRFeaturesConfig
from osdhuman.models.tensor_files import load_tensor_file, state_dict_mismatch

__all__ = ["HAODIFF_ENCODER_FILE", "HAODiffPrompt", "PoolHeadConfig", "load_haodiff_encoder"]

HAODIFF_ENCODER_FILE = "img_encoder_weights.pth"
GRID = 128  # the heads' token grid is fixed at 128 x 128 (512 px input, 4x downsampling)
PATCH = 8  # tokens unfolded 8 x 8 -> (128/8)^2 = 256 tokens
INPUT_SIZE = 512
_IGNORED_PREFIXES = ("embedding_changer1.", "embedding_changer2.", "fusion.")


@dataclass
class PoolHeadConfig:
    """The released ``performer_kwargs`` (values HAODiff's class assumes when absent)."""

    dim_head: int = 128
    embed_dim: int = 1024
    out_tokens: int = 77
    num_layers: int = 4
    num_heads_performer: int = 6
    num_heads_pool: int = 8


class PerformerPoolHead(nn.Module):
    """tokens (B, 128*128, in_dim) -> prompt (B, out_tokens, embed_dim)."""

    def __init__(self, in_dim: int, mid_dim: int, c: PoolHeadConfig, nb_features: int, ff_mult: int):
        super().__init__()
        self.mid_dim = mid_dim
        self.proj1 = nn.Linear(in_dim, mid_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, GRID * GRID, mid_dim))
        self.encoder = Performer(mid_dim, c.num_layers, c.num_heads_performer, c.dim_head, nb_features, ff_mult)
        self.linear_embed = nn.Linear(mid_dim * PATCH * PATCH, c.embed_dim)
        self.query_tokens = nn.Parameter(torch.zeros(1, c.out_tokens, c.embed_dim))
        self.attn_pool = nn.MultiheadAttention(c.embed_dim, c.num_heads_pool, batch_first=True)
        self.norm = nn.LayerNorm(c.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = self.encoder(self.proj1(x) + self.pos_embed)  # (B,16384,mid)
        x = x.transpose(1, 2).reshape(B, self.mid_dim, GRID, GRID)
        x = F.unfold(x, PATCH, stride=PATCH).transpose(1, 2)  # (B,256,mid*64), channel-major patches
        x = self.linear_embed(x)  # (B,256,E)
        q = self.query_tokens.expand(B, -1, -1)
        out, _ = self.attn_pool(q, x, x)
        return self.norm(out)  # (B,77,E)


class HAODiffPrompt(nn.Module):
    """lq (B,3,H,W) in [-1,1] -> (positive, negative), each (B, 77, embed_dim)."""

    dual = True  # gives a negative prompt for classifier-free guidance

    def __init__(self, swin: SwinIRFeaturesConfig, head: PoolHeadConfig, nb_features: int, ff_mult: int = 4):
        super().__init__()
        if swin.grid != GRID or INPUT_SIZE // swin.downscale // swin.patch_size != GRID:
            raise ValueError(f"img_size={swin.img_size}, upscale={swin.upscale}, downsample={swin.downsample}, "
                             f"patch_size={swin.patch_size} give a {swin.grid}x{swin.grid} token grid; the "
                             f"Performer heads need {GRID}x{GRID} (img_size 512, upscale 4, patch_size 1)")
        if len(swin.kept_branches) < 2:
            raise ValueError(f"branch_num={swin.branch_num} with skip_branch={swin.skip_branch} leaves "
                             f"{len(swin.kept_branches)} branch(es); the negative prompt needs at least 2")
        self.swin_config, self.head_config = swin, head
        C = swin.embed_dim
        self.feature_extractor = SwinIRFeatures(swin)
        self.main_performer = PerformerPoolHead(C, C, head, nb_features, ff_mult)
        self.aux_performer = PerformerPoolHead(C * (len(swin.kept_branches) - 1), C, head, nb_features, ff_mult)
        self.ignored: list[str] = []

    def forward(self, lq: torch.Tensor, hq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(lq, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear")  # [-1,1], no antialias
        feats = self.feature_extractor(x)  # [(B,16384,C)] per branch
        pos = self.main_performer(feats[0])
        neg = self.aux_performer(torch.cat(feats[1:], dim=2))
        return pos, neg


# ------------------------------------------------------------------------------ loading
def _config(cls, kwargs: dict, where: Path, name: str):
    """A dataclass from recorded kwargs; keys it does not use are left to the caller to report."""
    known = {f.name for f in fields(cls)}
    vals = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k in known}
    try:
        return cls(**vals)
    except TypeError as exc:
        raise WeightsError(f"{where}: {name} not usable: {exc}") from None


def _head_shapes(sd: dict, prefix: str) -> tuple[int, int]:
    """(nb_features, ff_mult) of a head from its tensors (the package derives them, the file keeps them)."""
    proj = sd.get(f"{prefix}.encoder.net.layers.0.0.fn.fast_attention.projection_matrix")
    w1 = sd.get(f"{prefix}.encoder.net.layers.0.1.fn.fn.w1.weight")
    if proj is None or w1 is None:
        raise WeightsError(f"{prefix}: no Performer layer 0 tensors")
    return int(proj.shape[0]), int(w1.shape[0] // w1.shape[1])


def load_haodiff_encoder(path: Path, data: dict | None = None) -> HAODiffPrompt:
    """The encoder of an ``img_encoder_weights.pth`` dict, every tensor checked; WeightsError if not."""
    path = Path(path)
    data = data if data is not None else load_tensor_file(path)[0]
    need = ("model_state_dict", "swinir_kwargs", "performer_kwargs")
    if not all(k in data for k in need) or not isinstance(data["model_state_dict"], dict):
        raise WeightsError(f"{path}: not HAODiff's encoder file: expected keys {', '.join(need)}; "
                           f"it holds: {', '.join(map(str, list(data)[:8]))}")
    sk, pk = data["swinir_kwargs"], data["performer_kwargs"]
    if not isinstance(sk, dict) or not isinstance(pk, dict):
        raise WeightsError(f"{path}: swinir_kwargs / performer_kwargs must be dicts")
    sd = {k: v for k, v in data["model_state_dict"].items() if torch.is_tensor(v)}
    ignored = [k for k in sd if k.startswith(_IGNORED_PREFIXES) or ".proj_updater." in k]
    sd = {k: v for k, v in sd.items() if k not in set(ignored)}
    swin = _config(SwinIRFeaturesConfig, sk, path, "swinir_kwargs")
    head = _config(PoolHeadConfig, pk, path, "performer_kwargs")
    try:
        nb, ff = _head_shapes(sd, "main_performer")
        model = HAODiffPrompt(swin, head, nb, ff)
    except (WeightsError, ValueError) as exc:
        raise WeightsError(f"{path}: the recorded kwargs do not describe this file: {exc} "
                           f"(swinir_kwargs={_short(sk)}, performer_kwargs={_short(pk)})") from None
    if (problem := state_dict_mismatch(sd, model.state_dict(), "kwargs")) is not None:
        raise WeightsError(f"{path}: the tensors do not fit the recorded kwargs (swinir_kwargs={_short(sk)}, "
                           f"performer_kwargs={_short(pk)}): {problem}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True)
    model.ignored = ignored
    return model.eval().requires_grad_(False)


def _short(d: dict) -> str:
    keep = ("img_size", "upscale", "embed_dim", "depths", "num_heads", "window_size", "branch_num", "skip_branch",
            "dim_head", "embed_dim", "num_layers", "num_heads_performer", "num_heads_pool")
    return "{" + ", ".join(f"{k}: {d[k]}" for k in keep if k in d) + "}"
