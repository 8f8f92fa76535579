"""DAPE, OSEDiff's prompt extractor: RAM's tags (with OSEDiff's LoRA) -> CLIP text embedding.

    tags   = RAM(I) + LoRA from DAPE.pth           (RamTagger; sigmoid > per-class thresholds)
    text   = f"{', '.join(tags)}, {suffix},"       (OSEDiff's test_osediff.py)
    prompt = CLIP_text(text)                       (B, 77, cross_dim), SD-2.1's text encoder

OSEDiff loads ``DAPE.pth`` non-strictly over ``ram_swin_large_14m.pth`` (its ``ram_lora.py``).
Its LoRA are loralib layers, which we translate into peft LoRA (we use peft, not loralib):

* Swin ``attn.qkv`` = ``loralib.MergedLinear(dim, 3 dim, r=8, enable_lora=[True, False, True])``:
  ``lora_A`` (2r, dim), ``lora_B`` (2 dim, r), a grouped conv1d, so q rows get
  ``B[:dim] @ A[:r]`` and v rows ``B[dim:] @ A[r:]``, scale lora_alpha / r = 1/8. That is a
  peft LoRA of rank 2r on ``qkv`` with A as is and a block-structured B (3 dim, 2r), alpha 2.
  (An ``enable_lora`` of all three, B (3 dim, r), is read the same way.)
* Plain ``loralib.Linear`` (r=8, scale 1/8): the tagging head's cross-attention ``query`` /
  ``key`` (OSEDiff's ``bert_lora.py``) and Swin ``mlp.fc1`` / ``fc2`` if a file has them
  (SeeSR's code comments those out). RAM ties the tagging head's weights to the first layers
  of ``tag_encoder``, so in eval mode loralib merges BOTH modules' LoRA into the one shared
  weight: ``tag_encoder.encoder.layer.{i}`` LoRA is added to the tagging head's layer i.
* Other tensors of the file (a full state dict) replace RAM's, as a non-strict load does.

The LoRA is merged into the base weights at load (DAPE is frozen in OSEDiff's training too).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from osdhuman.models.config import (
    RAM_TAGGING,
    TINY_RAM_TAGGING,
    OSDHumanConfig,
    swin_kwargs,
)
from osdhuman.models.errors import WeightsError
from osdhuman.models.hfie import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RAM_URL,
    SwinEncoder,
    load_ram_encoder,
    read_ram_checkpoint,
    remap_ram_swin_keys,
)
from osdhuman.models.loading import seeded
from osdhuman.models.lora import merge_adapter
from osdhuman.models.ram_tagging import (
    RamTaggingHead,
    TagVocabulary,
    find_tag_files,
    load_ram_tagging,
    osediff_prompt,
    read_tag_files,
    select_tags,
    tagging_keys,
)

# peft is imported inside the functions that add or merge an adapter (it loads transformers, ~1 s).

__all__ = ["DAPEPrompt", "DapeLoadReport", "RamTagger", "apply_dape", "build_dape_prompt", "check_dape_inputs",
           "dape_lora_pieces"]

ADAPTER = "dape"
LORALIB_SCALE_ALPHA = 1.0  # loralib's default lora_alpha (OSEDiff / SeeSR never set it)
_SWIN = re.compile(r"^visual_encoder\.(layers\.\d+\.blocks\.\d+\.(?:attn\.qkv|mlp\.fc[12]))\.lora_([AB])$")
_HEAD = re.compile(r"^(tagging_head|vision_multi|tag_encoder)\.(encoder\.layer\.\d+\.crossattention\.self\.(?:query|key))"
                   r"\.lora_([AB])$")


class RamTagger(nn.Module):
    """RAM's tagging path: image (B,3,H,W) in [-1,1] -> tag logits (B, C) -> tags.

    Preprocessing as OSEDiff's test script: [0,1], bilinear resize (antialiased, torchvision's
    ``Resize`` on a tensor) to SxS, ImageNet normalisation; no clamp.
    """

    def __init__(self, encoder: SwinEncoder, head: RamTaggingHead, vocab: TagVocabulary, delete: list[int] | None = None):
        super().__init__()
        if head.num_tags != len(vocab):
            raise WeightsError(f"{vocab.tag_list_path}: {len(vocab)} tags but the tagging head has {head.num_tags}")
        self.encoder = encoder
        self.head = head
        self.vocab = vocab
        self.delete = list(delete or [])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> RamTagger:
        return super().train(False)  # frozen, always in eval mode

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        s = self.encoder.img_size
        x = (img.float() + 1.0) * 0.5  # (B,3,H,W) in [0,1]
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return ((x - self.mean) / self.std).to(self.head.fc.weight.dtype)  # (B,3,S,S)

    @torch.no_grad()
    def logits(self, img: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.preprocess(img)))  # (B, C)

    @torch.no_grad()
    def forward(self, img: torch.Tensor) -> list[list[str]]:
        return select_tags(self.logits(img), self.vocab, self.delete)


class DAPEPrompt(nn.Module):
    """Prompt extractor: (lq, hq=None) -> (B, 77, cross_dim) from the tags of one image.

    ``source`` "hq" (training, as OSEDiff) tags ``hq`` when it is given, else the LQ.
    ``last_prompts`` keeps the texts of the latest call (restore records them).
    """

    def __init__(self, tagger: RamTagger, text_encoder: nn.Module, tokenizer, source: str = "lq",
                 suffix: str = "", max_length: int = 77):
        super().__init__()
        if source not in ("lq", "hq"):
            raise ValueError(f"DAPE source must be 'lq' or 'hq', got {source!r}")
        self.tagger = tagger
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.source = source
        self.suffix = suffix
        self.max_length = max_length
        self.last_prompts: list[str] = []

    def train(self, mode: bool = True) -> DAPEPrompt:
        return super().train(False)  # tagger and text encoder are frozen

    @torch.no_grad()
    def texts(self, img: torch.Tensor) -> list[str]:
        return [osediff_prompt(tags, self.suffix) for tags in self.tagger(img)]

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt").input_ids  # (B, 77)
        dev = next(self.text_encoder.parameters()).device
        return self.text_encoder(ids.to(dev))[0]  # (B, 77, D)

    def forward(self, lq: torch.Tensor, hq: torch.Tensor | None = None) -> torch.Tensor:
        img = hq if (self.source == "hq" and hq is not None) else lq
        self.last_prompts = self.texts(img)
        return self.encode(self.last_prompts)


# ----------------------------------------------------------------------------- DAPE.pth
@dataclass
class _Piece:
    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r) in peft form (block-structured for merged qkv)
    scale: float


@dataclass
class DapeLoadReport:
    path: str
    lora_modules: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # non-LoRA tensors taken from the file
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"DAPE {Path(self.path).name}: LoRA on {len(self.lora_modules)} modules, "
                f"{len(self.replaced)} tensors replaced, {len(self.ignored)} ignored")


def _dape_help(path: str) -> str:
    return (f"Expected OSEDiff's DAPE.pth: a state dict of RAM with loralib LoRA keys such as "
            f"'visual_encoder.layers.0.blocks.0.attn.qkv.lora_A' (2r x dim) / '.lora_B' (2 dim x r) "
            f"for the Swin-L of the RAM checkpoint (see OSEDiff's README for the download). File: {path}")


def _merged_qkv(name: str, A: torch.Tensor, B: torch.Tensor, out: int, path: str) -> torch.Tensor:
    """loralib MergedLinear B (k dim, r) with k of 3 groups enabled -> peft B (3 dim, k r)."""
    dim = out // 3
    groups = B.shape[0] // dim if dim else 0
    if groups not in (2, 3) or groups * dim != B.shape[0] or A.shape[0] % groups:
        raise WeightsError(f"{path}: {name}: lora_B {tuple(B.shape)} / lora_A {tuple(A.shape)} do not fit a "
                           f"merged qkv of width {dim}. " + _dape_help(path))
    r = A.shape[0] // groups
    rows = (0, 2) if groups == 2 else (0, 1, 2)  # enable_lora [T, F, T] (SeeSR) or [T, T, T]
    full = B.new_zeros(out, groups * r)
    for g, row in enumerate(rows):
        full[row * dim:(row + 1) * dim, g * r:(g + 1) * r] = B[g * dim:(g + 1) * dim]
    return full


def _target(module_key: str) -> str:
    """DAPE.pth module name -> RamTagger module name."""
    m = _SWIN.match(module_key + ".lora_A")
    if m:
        return "encoder.swin." + m.group(1)
    m = _HEAD.match(module_key + ".lora_A")
    return "head.tagging_head." + m.group(2)


def dape_lora_pieces(state: dict[str, torch.Tensor], tagger: RamTagger, path: str) -> dict[str, list[_Piece]]:
    """The file's loralib LoRA as peft pieces per RamTagger module; WeightsError when a key
    names a module the Swin / head does not have, a pair is incomplete or shapes differ."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        m = _SWIN.match(k) or _HEAD.match(k)
        if m:
            pairs.setdefault(k[: -len(".lora_A")], {})[m.groups()[-1]] = v
    if not pairs:
        raise WeightsError(f"{path}: no LoRA keys for RAM's Swin (…attn.qkv.lora_A / lora_B). " + _dape_help(path))
    modules = dict(tagger.named_modules())
    pieces: dict[str, list[_Piece]] = {}
    for key, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise WeightsError(f"{path}: {key} has lora_{''.join(ab)} but not its pair. " + _dape_help(path))
        target = _target(key)
        mod = modules.get(target)
        if mod is None and key.startswith("tag_encoder."):
            continue  # tag_encoder layers above the tagging head's: not tied to it, unused for tags
        if not isinstance(mod, nn.Linear):
            raise WeightsError(f"{path}: {key}: the RAM Swin / tagging head has no such layer ({target}). " + _dape_help(path))
        A, B = ab["A"].float(), ab["B"].float()
        if target.endswith(".qkv"):
            B = _merged_qkv(key, A, B, mod.out_features, path)
        if A.shape[1] != mod.in_features or B.shape != (mod.out_features, A.shape[0]):
            raise WeightsError(f"{path}: {key}: lora_A {tuple(A.shape)} / lora_B {tuple(ab['B'].shape)} do not fit "
                               f"Linear({mod.in_features}, {mod.out_features}). " + _dape_help(path))
        groups = ab["B"].shape[0] // (mod.out_features // 3) if target.endswith(".qkv") else 1
        r = A.shape[0] // groups  # loralib's r (per enabled group)
        pieces.setdefault(target, []).append(_Piece(A, B, LORALIB_SCALE_ALPHA / r))
    return pieces


def _inject(tagger: RamTagger, pieces: dict[str, list[_Piece]]) -> None:
    """One peft adapter: per module rank = sum of the pieces' ranks; B pre-scaled only when
    the pieces' scales differ (else alpha = scale x rank)."""
    from peft import LoraConfig, inject_adapter_in_model

    merged: dict[str, tuple[torch.Tensor, torch.Tensor, int, float]] = {}
    for name, ps in pieces.items():
        same = len({p.scale for p in ps}) == 1
        A = torch.cat([p.A for p in ps], 0)
        B = torch.cat([p.B if same else p.B * p.scale for p in ps], 1)
        r = A.shape[0]
        merged[name] = (A, B, r, ps[0].scale * r if same else float(r))
    first = next(iter(merged.values()))
    cfg = LoraConfig(
        r=first[2], lora_alpha=first[3], target_modules=sorted(merged), init_lora_weights=False,
        rank_pattern={f"^{re.escape(n)}$": v[2] for n, v in merged.items()},
        alpha_pattern={f"^{re.escape(n)}$": v[3] for n, v in merged.items()},
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*peft_config.*")
        inject_adapter_in_model(cfg, tagger, adapter_name=ADAPTER)
    with torch.no_grad():
        for name, (A, B, _r, _a) in merged.items():
            layer = tagger.get_submodule(name)
            layer.lora_A[ADAPTER].weight.copy_(A)
            layer.lora_B[ADAPTER].weight.copy_(B)


def _replace_tensors(tagger: RamTagger, state: dict[str, torch.Tensor], report: DapeLoadReport) -> None:
    """Non-LoRA tensors of the file overwrite RAM's (OSEDiff's non-strict load)."""
    plain = {k: v for k, v in state.items() if torch.is_tensor(v) and ".lora_" not in k}
    mapped, ignored = remap_ram_swin_keys(plain)
    named = {"encoder." + k: v for k, v in mapped.items()}
    named.update({"head." + k: v for k, v in tagging_keys(plain).items()})
    own = tagger.state_dict()
    take = {k: v for k, v in named.items() if k in own and own[k].shape == v.shape}
    report.ignored = sorted(set(ignored) - set(tagging_keys(plain))) + sorted(set(named) - set(take))
    if take:
        tagger.load_state_dict(take, strict=False)
    report.replaced = sorted(take)


def _read_dape(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise WeightsError(f"DAPE file not found: {path}. " + _dape_help(path))
    try:
        raw = read_ram_checkpoint(path)
    except WeightsError as exc:
        raise WeightsError(f"{path}: not readable as DAPE.pth ({str(exc).split('. ')[0]}). " + _dape_help(path)) from None
    sd = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a state dict. " + _dape_help(path))
    return sd


def apply_dape(tagger: RamTagger, path: str | Path) -> DapeLoadReport:
    """Load ``DAPE.pth`` over RAM in ``tagger``: LoRA checked, injected with peft, merged."""

    path = str(path)
    state = _read_dape(path)
    pieces = dape_lora_pieces(state, tagger, path)  # checks every key before anything changes
    report = DapeLoadReport(path=path, lora_modules=sorted(pieces))
    _replace_tensors(tagger, state, report)
    _inject(tagger, pieces)
    merge_adapter(tagger, ADAPTER)
    tagger.requires_grad_(False)
    return report


# ----------------------------------------------------------------------------- building
def check_dape_inputs(cfg: OSDHumanConfig) -> TagVocabulary:
    """Cheap checks before any weights are read: RAM checkpoint given, tag files readable and
    consistent, DAPE file present, the base folder has a text encoder. Returns the tags."""
    if not cfg.is_random and not cfg.hfie_encoder_path:
        raise WeightsError(f"DAPE prompts need RAM's checkpoint ram_swin_large_14m.pth (image encoder and tagging "
                           f"head): pass --hfie-encoder FILE (download: {RAM_URL})")
    vocab = read_tag_files(*find_tag_files(cfg.ram_tag_list, cfg.ram_tag_thresholds, cfg.hfie_encoder_path))
    bad = [i for i in cfg.ram_delete_tags if not 0 <= i < len(vocab)]
    if bad:
        raise WeightsError(f"ram_delete_tags: index {bad[0]} is outside the {len(vocab)} tags of {vocab.tag_list_path}")
    if cfg.dape_path and not Path(cfg.dape_path).expanduser().is_file():
        raise WeightsError(f"DAPE file not found: {cfg.dape_path}. " + _dape_help(cfg.dape_path))
    folder = Path(cfg.base_model).expanduser()
    if not cfg.is_random and folder.is_dir():
        for sub in ("text_encoder", "tokenizer"):
            if not (folder / sub).is_dir():
                raise WeightsError(f"{folder / sub}: missing; DAPE prompts are encoded by SD-2.1's CLIP text encoder "
                                   f"(text_encoder/ and tokenizer/ of the base model folder)")
    return vocab


def _build_tagger(cfg: OSDHumanConfig, vocab: TagVocabulary) -> RamTagger:
    tiny = cfg.base_model == "tiny"
    swin = swin_kwargs(cfg.base_model, cfg.hfie_image_size)
    with seeded(cfg.seed + 3):
        encoder = SwinEncoder(**swin)
    with seeded(cfg.seed + 6):
        head = RamTaggingHead(len(vocab), **(TINY_RAM_TAGGING if tiny else RAM_TAGGING))
    if cfg.hfie_encoder_path:
        path = str(Path(cfg.hfie_encoder_path).expanduser())
        if not Path(path).is_file():
            raise WeightsError(f"RAM checkpoint not found: {path} (download: {RAM_URL})")
        raw = read_ram_checkpoint(path)
        if not isinstance(raw, dict):
            raise WeightsError(f"{path}: expected a RAM checkpoint (a dict), got {type(raw).__name__}")
        load_ram_tagging(head, raw, path)  # first: a clear error when the tagging head is absent
        load_ram_encoder(encoder, path, raw=raw)
    return RamTagger(encoder, head, vocab, cfg.ram_delete_tags)


def build_dape_prompt(cfg: OSDHumanConfig, vocab: TagVocabulary, text_encoder: nn.Module,
                      tokenizer) -> tuple[DAPEPrompt, str]:
    """(DAPEPrompt, one-line summary) for ``cfg`` (prompt source dape_hq / dape_lq)."""
    tagger = _build_tagger(cfg, vocab)
    note = "RAM tags without DAPE LoRA"
    if cfg.dape_path:
        note = apply_dape(tagger, str(Path(cfg.dape_path).expanduser())).summary()
    source = "hq" if cfg.prompt_source == "dape_hq" else "lq"
    prompt = DAPEPrompt(tagger, text_encoder, tokenizer, source=source, suffix=cfg.dape_prompt_suffix)
    return prompt, f"{note}; {len(vocab)} tags from {Path(vocab.tag_list_path).name}"
