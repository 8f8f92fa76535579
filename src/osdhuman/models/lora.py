"""LoRA adapters on peft, several named adapters over ONE frozen base.

The generator UNet, the frozen teacher and the VSD regularizer (docs/reference.md §training) are the same SD
UNet with different peft adapters switched on, so the 866 M base weights are held once:
``generator`` and ``regularizer`` are two named peft LoRA adapters; the teacher runs with
adapters disabled. Every LoRA layer is peft's (``diffusers``' ``add_adapter`` ->
``peft.inject_adapter_in_model``), so the state dict speaks peft's key names
(``...to_q.lora_A.generator.weight``) and diffusers / peft tools read it.

Written here, and why:

* ``DualWeightConv2d``: OSEDiff trains conv_in's FULL weight and a LoRA on it, while the
  teacher and the regularizer must keep SD's original conv_in. peft cannot express this:
  it refuses to put an adapter on a module listed in ``modules_to_save``
  (``peft.tuners.tuners_utils``: "Adapters should never match on modules to save
  modules"), and a ``modules_to_save`` copy per adapter would give the regularizer a
  trainable conv_in it must not have. So conv_in becomes an ``nn.Conv2d`` subclass that
  keeps a frozen copy of its original weights and uses it when ``use_original`` is set;
  peft then wraps it like any other Conv2d (its LoRA, merge and state dict work unchanged).
* ``set_active_adapter``: peft's ``set_adapter`` also flips ``requires_grad`` (active
  adapter trainable, others frozen). Both adapters train in the same step, so after
  switching we put back the trainability the caller chose (``trainable``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import nn

from osdhuman.models.loading import seeded

# peft is imported inside the functions that use it (it loads transformers, ~1 s).

__all__ = [
    "UNET_LORA_SUFFIXES",
    "DualWeightConv2d",
    "MissingTargetError",
    "add_lora",
    "lora_layers",
    "lora_target_names",
    "merge_adapter",
    "set_active_adapter",
]

# docs/reference.md §generator (OSEDiff, 258 modules at SD-2.1 size). Time-embedding layers, norms, biases excluded.
UNET_LORA_SUFFIXES = (
    r"conv_in", r"conv_out", r"conv1", r"conv2", r"conv_shortcut",
    r"downsamplers\.\d+\.conv", r"upsamplers\.\d+\.conv",
    r"proj_in", r"proj_out",
    r"attn[12]\.to_q", r"attn[12]\.to_k", r"attn[12]\.to_v", r"attn[12]\.to_out\.0",
    r"ff\.net\.0\.proj", r"ff\.net\.2",
)
_UNET_RE = re.compile(r"(^|\.)(" + "|".join(UNET_LORA_SUFFIXES) + r")$")
_EXCLUDE_RE = re.compile(r"(^|\.)(time_embedding|time_emb_proj|add_embedding|class_embedding)(\.|$)")


def _tuner_layer_cls():
    from peft.tuners.tuners_utils import BaseTunerLayer

    return BaseTunerLayer


def lora_layers(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, peft LoRA layer) for every adapted module of ``root``."""
    base = _tuner_layer_cls()
    return [(n, m) for n, m in root.named_modules() if isinstance(m, base)]


def lora_target_names(module: nn.Module, kind: Literal["unet", "vae_encoder"]) -> list[str]:
    """Names of the Linear / Conv2d sub-modules that get LoRA (docs/reference.md §generator).

    ``unet``: conv_in/out, resnet convs, up/down-sampler convs, proj_in/out, attention
    q/k/v/out, feed-forward (258 at SD-2.1 size). ``vae_encoder`` (call on the AutoencoderKL):
    every Conv2d / Linear in ``encoder.*`` plus ``quant_conv`` (32 at SD size).
    Modules already wrapped by peft count once (by their own name, not ``.base_layer``).
    """
    tuner = _tuner_layer_cls()
    names: list[str] = []
    inside: list[str] = []  # peft layers: their children (base_layer, lora_A, ...) are not targets
    for name, m in module.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, tuner):
            inside.append(name)
            m = m.get_base_layer()
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        if kind == "unet":
            if _UNET_RE.search(name) and not _EXCLUDE_RE.search(name):
                names.append(name)
        elif kind == "vae_encoder":
            if name.startswith("encoder.") or name == "quant_conv":
                names.append(name)
        else:  # pragma: no cover - typed Literal
            raise ValueError(kind)
    return names


class DualWeightConv2d(nn.Conv2d):
    """A Conv2d whose (trainable) weight can be swapped for a frozen copy of its original.

    ``weight`` / ``bias`` are the generator's trained conv_in; ``original_weight`` /
    ``original_bias`` (non-persistent buffers) are SD's, used while ``use_original``.
    (peft builds conv_in's lora_A with ``type(base_layer)``: constructed plainly, this class
    is an ordinary Conv2d.)
    """

    use_original: bool = False

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> DualWeightConv2d:
        """Wrap ``conv``'s own parameters (not copied); its current weights become the original."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        b = conv.bias.detach().clone() if conv.bias is not None else None
        new.register_buffer("original_weight", conv.weight.detach().clone(), persistent=False)
        new.register_buffer("original_bias", b, persistent=False)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_original:
            return super().forward(x)
        b = self.original_bias
        return self._conv_forward(x, self.original_weight.to(x.dtype), None if b is None else b.to(x.dtype))


class MissingTargetError(ValueError):
    """LoRA asked for modules (``names``) that the model does not have as Linear / Conv2d."""

    def __init__(self, names: list[str]):
        self.names = names
        super().__init__(f"{len(names)} LoRA target module(s) not in the model: {', '.join(names[:5])}")


def add_lora(
    model: nn.Module, names: Sequence[str], adapter: str, rank: int, alpha: float,
    init: str = "gaussian", seed: int = 0, rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
) -> None:
    """Add peft LoRA adapter ``adapter`` on the named modules of a diffusers model.

    ``init``: "gaussian" (A ~ N(0, 1/r), B = 0: the untrained model equals its base) or
    "kaiming" (peft's default, B = 0 too). Drawn under ``seed`` without touching the global
    RNG. ``rank_pattern`` / ``alpha_pattern``: per-module exceptions (peft's own fields).
    """
    from peft import LoraConfig


    if init not in ("gaussian", "kaiming"):
        raise ValueError(f"unknown lora_init {init!r} (gaussian | kaiming)")
    if not names:
        raise ValueError(f"adapter {adapter!r}: no target modules")
    have = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d, _tuner_layer_cls()))}
    unknown = sorted(set(names) - have)
    if unknown:
        raise MissingTargetError(unknown)
    cfg = LoraConfig(
        r=int(rank), lora_alpha=float(alpha), target_modules=list(names),
        init_lora_weights="gaussian" if init == "gaussian" else True,
        rank_pattern={f"^{re.escape(k)}$": v for k, v in (rank_pattern or {}).items()},
        alpha_pattern={f"^{re.escape(k)}$": v for k, v in (alpha_pattern or {}).items()},
    )
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    with seeded(seed), warnings.catch_warnings():  # several adapters on one base: by design
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        model.add_adapter(cfg, adapter_name=adapter)
    for p in model.parameters():  # add_adapter freezes what it does not own: undo that
        if id(p) in trainable:
            p.requires_grad_(True)


def set_active_adapter(layers: Iterable[nn.Module], adapter: str | None,
                       trainable: Iterable[nn.Parameter] = ()) -> None:
    """Make ``adapter`` the active one on every peft layer (None: adapters disabled, the
    frozen base alone), then restore ``requires_grad`` on ``trainable``."""
    for layer in layers:
        if adapter is None:
            layer.enable_adapters(False)
        else:
            if adapter not in layer.lora_A:
                raise ValueError(f"adapter {adapter!r} not found (have {sorted(layer.lora_A)})")
            layer.enable_adapters(True)
            layer.set_adapter(adapter)
    for p in trainable:
        p.requires_grad_(True)


@torch.no_grad()
def merge_adapter(root: nn.Module, adapter: str) -> int:
    """Fold ``adapter`` into the base weights (peft's merge) and unwrap every LoRA layer back
    to its base module: inference only, irreversible. Returns the number of merged layers."""
    n = 0
    for name, layer in lora_layers(root):
        if adapter in layer.lora_A:
            layer.merge(adapter_names=[adapter])
            n += 1
        base = layer.get_base_layer()
        parent = root.get_submodule(name.rsplit(".", 1)[0]) if "." in name else root
        setattr(parent, name.rsplit(".", 1)[-1], base)
    if hasattr(root, "peft_config"):
        del root.peft_config
        root._hf_peft_config_loaded = False
    return n
