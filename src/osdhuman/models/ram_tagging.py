"""RAM's tagging path: image_proj tokens -> 2-layer cross-attention decoder -> one logit per tag.

Recognize-anything (``ram/models/ram.py``, docs/reference.md §weights): ``label_embed`` (C x 512) goes through
``relu(wordvec_proj)`` (512 -> 768) and queries the 145 x 512 image tokens in a BERT config
(hidden 768, 2 layers, 4 heads, intermediate 3072, layer-norm eps 1e-12) whose embeddings and
self-attention are deleted; ``fc`` (768 -> 1) gives one logit per tag; sigmoid above the
per-class thresholds of ``ram_tag_list_threshold.txt`` selects tags of ``ram_tag_list.txt``.

Which library, and why some of it is ours:

* ``transformers``' ``BertSelfOutput`` / ``BertIntermediate`` / ``BertOutput`` fit RAM's
  layers as they are (same key names: ``.dense``, ``.LayerNorm``).
* Its ``BertSelfAttention`` builds key / value as Linear(hidden, hidden); RAM's cross-attention
  reads 512-wide image tokens (``encoder_width``), so ``RamCrossAttentionCore`` is ours
  (query / key / value names as RAM's, attention by ``F.scaled_dot_product_attention``).
* The two text files are not in the checkpoint: the user points at them, or keeps them beside
  the checkpoint (``find_tag_files``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from osdhuman.models.errors import WeightsError

# transformers' BERT blocks are imported inside the builders (~1 s).

__all__ = [
    "RAM_TAG_FILES_URL",
    "RamTaggingHead",
    "TagVocabulary",
    "find_tag_files",
    "join_tags",
    "load_ram_tagging",
    "osediff_prompt",
    "read_tag_files",
    "select_tags",
    "tagging_keys",
]

RAM_TAG_FILES_URL = "https://github.com/xinyu1205/recognize-anything/tree/main/ram/data"
TAG_LIST_NAME = "ram_tag_list.txt"
THRESHOLD_SUFFIX = "_threshold.txt"


# ----------------------------------------------------------------------------- modules
class _BertDims:
    """The few BertConfig fields transformers' layer pieces read (no BertConfig needed)."""

    def __init__(self, hidden: int, intermediate: int, eps: float):
        self.hidden_size = hidden
        self.intermediate_size = intermediate
        self.layer_norm_eps = eps
        self.hidden_dropout_prob = 0.0
        self.hidden_act = "gelu"


class RamCrossAttentionCore(nn.Module):
    """RAM's ``crossattention.self``: queries (B,C,hidden) attend to image tokens (B,N,width)."""

    def __init__(self, hidden: int, width: int, heads: int):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(width, hidden)
        self.value = nn.Linear(width, hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, n, d/heads)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(image)), self._split(self.value(image))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(q.shape[-1]))  # (B,h,C,d/h)
        return out.transpose(1, 2).flatten(2)  # (B, C, hidden)


class RamCrossAttention(nn.Module):
    """``crossattention``: core attention + ``output`` (dense, residual, LayerNorm)."""

    def __init__(self, dims: _BertDims, width: int, heads: int):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertSelfOutput

        self.self = RamCrossAttentionCore(dims.hidden_size, width, heads)
        self.output = BertSelfOutput(dims)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, image), x)


class RamTaggingLayer(nn.Module):
    """One decoder layer: cross-attention, then the feed-forward (no self-attention)."""

    def __init__(self, dims: _BertDims, width: int, heads: int):
        super().__init__()
        from transformers.models.bert.modeling_bert import BertIntermediate, BertOutput

        self.crossattention = RamCrossAttention(dims, width, heads)
        self.intermediate = BertIntermediate(dims)
        self.output = BertOutput(dims)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        a = self.crossattention(x, image)  # (B, C, hidden)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class _Decoder(nn.Module):
    """Holds ``encoder.layer.{i}`` so that state-dict names equal RAM's ``tagging_head.*``."""

    def __init__(self, dims: _BertDims, width: int, heads: int, layers: int):
        super().__init__()
        self.encoder = _Encoder([RamTaggingLayer(dims, width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layer:
            x = layer(x, image)
        return x


class RamTaggingHead(nn.Module):
    """image_proj tokens (B, N, width) -> tag logits (B, num_tags).

    Parameters keep RAM's names: ``label_embed``, ``wordvec_proj``, ``tagging_head.*``, ``fc``.
    """

    def __init__(self, num_tags: int, hidden: int = 768, layers: int = 2, heads: int = 4,
                 intermediate: int = 3072, width: int = 512, eps: float = 1e-12):
        super().__init__()
        dims = _BertDims(hidden, intermediate, eps)
        self.label_embed = nn.Parameter(torch.randn(num_tags, width) * 0.02)  # (C, width)
        self.wordvec_proj = nn.Linear(width, hidden) if hidden != width else nn.Identity()  # as RAM (512 wide)
        self.tagging_head = _Decoder(dims, width, heads, layers)
        self.fc = nn.Linear(hidden, 1)

    @property
    def num_tags(self) -> int:
        return int(self.label_embed.shape[0])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = F.relu(self.wordvec_proj(self.label_embed.to(tokens.dtype)))  # (C, hidden)
        q = q.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, C, hidden)
        return self.fc(self.tagging_head(q, tokens)).squeeze(-1)  # (B, C)


# ----------------------------------------------------------------------------- tag files
@dataclass
class TagVocabulary:
    """The tag names and per-class thresholds that accompany a RAM checkpoint."""

    tags: list[str]
    thresholds: torch.Tensor  # (C,) float32
    tag_list_path: str = ""
    thresholds_path: str = ""

    def __len__(self) -> int:
        return len(self.tags)


def _files_help() -> str:
    return (f"RAM's tag files {TAG_LIST_NAME} and ram_tag_list_threshold.txt (4,585 lines each) accompany "
            f"the checkpoint; get them from {RAM_TAG_FILES_URL} and pass --ram-tag-list FILE (the threshold "
            f"file is read from beside it) or keep both beside the RAM checkpoint")


def find_tag_files(tag_list: str | None, thresholds: str | None, checkpoint: str | None) -> tuple[Path, Path]:
    """(tag list, thresholds): given paths, else ``ram_tag_list.txt`` beside ``checkpoint``;
    the thresholds default to ``<tag list stem>_threshold.txt`` beside the tag list.
    Raises WeightsError naming the missing file and where to get it."""
    if tag_list:
        tl = Path(tag_list).expanduser()
    elif checkpoint:
        tl = Path(checkpoint).expanduser().parent / TAG_LIST_NAME
    else:
        raise WeightsError("no RAM tag list given for the DAPE prompt. " + _files_help())
    th = Path(thresholds).expanduser() if thresholds else tl.with_name(tl.stem + THRESHOLD_SUFFIX)
    for what, p in (("tag list", tl), ("tag thresholds file", th)):
        if not p.is_file():
            raise WeightsError(f"{p}: RAM {what} not found. " + _files_help())
    return tl, th


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: cannot be read as UTF-8 text ({exc})") from None


def read_tag_files(tag_list: Path, thresholds: Path) -> TagVocabulary:
    """Read both files (one entry a line, as RAM reads them); checks they agree."""
    tags = _read_lines(tag_list)
    if not tags:
        raise WeightsError(f"{tag_list}: the RAM tag list is empty. " + _files_help())
    values = []
    for i, line in enumerate(_read_lines(thresholds), 1):
        try:
            v = float(line.strip())
        except ValueError:
            raise WeightsError(f"{thresholds}: line {i} is not a number ({line!r})") from None
        if not 0.0 <= v <= 1.0:
            raise WeightsError(f"{thresholds}: line {i}: threshold {v} is outside [0, 1]")
        values.append(v)
    if len(values) != len(tags):
        raise WeightsError(f"{thresholds}: {len(values)} thresholds for {len(tags)} tags in {tag_list}; "
                           "the two files must have one line per tag")
    return TagVocabulary(tags, torch.tensor(values, dtype=torch.float32), str(tag_list), str(thresholds))


def select_tags(logits: torch.Tensor, vocab: TagVocabulary, delete: list[int] | tuple[int, ...] = ()) -> list[list[str]]:
    """(B, C) logits -> per image the tags whose sigmoid exceeds their class threshold (RAM's
    ``generate_tag``: sigmoid in the logits' dtype, strict >, ``delete_tag_index`` dropped)."""
    keep = torch.sigmoid(logits) > vocab.thresholds.to(logits.device)  # (B, C)
    if delete:
        keep[:, list(delete)] = False
    return [[vocab.tags[i] for i in row.nonzero().flatten().tolist()] for row in keep.cpu()]


def join_tags(tags: list[str]) -> str:
    """OSEDiff's tag string (its RAM joins with ", "; the original RAM uses " | ")."""
    return ", ".join(tags)


def osediff_prompt(tags: list[str], suffix: str = "") -> str:
    """The prompt text of OSEDiff's test_osediff.py: f"{tags}, {user_prompt},"."""
    return f"{join_tags(tags)}, {suffix},"


# ----------------------------------------------------------------------------- loading
def tagging_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tagging-head tensors of a RAM state dict under our names (``vision_multi.*`` is
    the older name of ``tagging_head.*``, renamed as RAM's loader does)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("vision_multi."):
            k = "tagging_head." + k[len("vision_multi."):]
        if k == "label_embed" or k.startswith(("tagging_head.encoder.", "wordvec_proj.", "fc.")):
            out[k] = v
    return out


def load_ram_tagging(head: RamTaggingHead, state_dict: dict[str, torch.Tensor], path: str) -> list[str]:
    """Load RAM's tagging tensors into ``head`` (every one must be there with its shape)."""
    sd = state_dict.get("model", state_dict)
    found = tagging_keys(sd)
    own = head.state_dict()
    if "label_embed" not in found:
        raise WeightsError(
            f"{path}: no RAM tagging head (label_embed, tagging_head.*, wordvec_proj.*, fc.*): DAPE needs the full "
            "ram_swin_large_14m.pth (the reduced file of `osdhuman export-encoder` keeps only the image encoder)")
    if found["label_embed"].shape[0] != head.num_tags:
        raise WeightsError(f"{path}: label_embed has {found['label_embed'].shape[0]} tags but the tag list has "
                           f"{head.num_tags} lines; use the {TAG_LIST_NAME} that accompanies this checkpoint")
    missing = sorted(set(own) - set(found))
    wrong = [f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in found and found[k].shape != own[k].shape]
    if missing or wrong:
        raise WeightsError(f"{path}: RAM tagging head does not match ({len(missing)} missing, {len(wrong)} wrong shape; "
                           f"e.g. {(wrong + missing)[:3]})")
    head.load_state_dict({k: found[k] for k in own})
    return sorted(own)
