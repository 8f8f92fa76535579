"""LoRA layers with several named adapters over ONE frozen base layer.

The generator UNet, the frozen teacher and the VSD regularizer (FACTS 3) are the same SD
UNet with different adapters switched on, so the 866 M base weights are held once. A layer
computes ``base(x) + (alpha / r) * up(down(x))`` for the active adapter (Hu et al. 2022);
for convolutions ``down`` is a conv with the base's kernel/stride/padding and ``up`` a 1x1
conv (peft's convention, so parameter counts match FACTS 1).

A layer may also keep a frozen copy of its ORIGINAL weight (``keep_original``): the generator
trains conv_in's full weight, the teacher and regularizer must still see SD's conv_in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNET_LORA_SUFFIXES", "LoRALayer", "inject_lora", "lora_layers", "lora_target_names"]

# FACTS 1 (OSEDiff, 258 modules at SD-2.1 size). Time-embedding layers, norms, biases excluded.
UNET_LORA_SUFFIXES = (
    r"conv_in", r"conv_out", r"conv1", r"conv2", r"conv_shortcut",
    r"downsamplers\.\d+\.conv", r"upsamplers\.\d+\.conv",
    r"proj_in", r"proj_out",
    r"attn[12]\.to_q", r"attn[12]\.to_k", r"attn[12]\.to_v", r"attn[12]\.to_out\.0",
    r"ff\.net\.0\.proj", r"ff\.net\.2",
)
_UNET_RE = re.compile(r"(^|\.)(" + "|".join(UNET_LORA_SUFFIXES) + r")$")
_EXCLUDE_RE = re.compile(r"(^|\.)(time_embedding|time_emb_proj|add_embedding|class_embedding)(\.|$)")


def _base_of(m: nn.Module) -> nn.Module:
    return m.base if isinstance(m, LoRALayer) else m


def lora_target_names(module: nn.Module, kind: Literal["unet", "vae_encoder"]) -> list[str]:
    """Names of the Linear / Conv2d sub-modules that get LoRA (FACTS 1).

    ``unet``: conv_in/out, resnet convs, up/down-sampler convs, proj_in/out, attention
    q/k/v/out, feed-forward (258 at SD-2.1 size). ``vae_encoder`` (call on the AutoencoderKL):
    every Conv2d / Linear in ``encoder.*`` plus ``quant_conv`` (32 at SD size).
    """
    names: list[str] = []
    inside: list[str] = []  # LoRALayer prefixes: their children (base, adapters) are not targets
    for name, m in module.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(m, LoRALayer):
            inside.append(name)
            m = m.base
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


def _parent(root: nn.Module, name: str) -> nn.Module:
    parent_name = name.rsplit(".", 1)[0] if "." in name else ""
    return root.get_submodule(parent_name) if parent_name else root


class LoRALayer(nn.Module):
    """A frozen ``nn.Linear`` / ``nn.Conv2d`` plus named low-rank adapters.

    ``active`` (an adapter name or None) selects the adapter; ``use_original`` makes the layer
    use the frozen copy of its original weight (see ``keep_original``).
    """

    def __init__(self, base: nn.Linear | nn.Conv2d):
        super().__init__()
        if not isinstance(base, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"LoRA supports nn.Linear and nn.Conv2d, got {type(base).__name__}")
        self.base = base
        self.lora_down = nn.ModuleDict()
        self.lora_up = nn.ModuleDict()
        self.scales: dict[str, float] = {}
        self.active: str | None = None
        self.use_original = False
        self.has_original = False

    # -- adapters -----------------------------------------------------------------------
    def add_adapter(
        self, name: str, rank: int, alpha: float, init: str = "gaussian",
        generator: torch.Generator | None = None,
    ) -> None:
        b = self.base
        dev, dt = b.weight.device, b.weight.dtype
        if isinstance(b, nn.Linear):
            down = nn.Linear(b.in_features, rank, bias=False, device=dev, dtype=dt)
            up = nn.Linear(rank, b.out_features, bias=False, device=dev, dtype=dt)
        else:
            down = nn.Conv2d(b.in_channels, rank, b.kernel_size, b.stride, b.padding, b.dilation,
                             bias=False, device=dev, dtype=dt)
            up = nn.Conv2d(rank, b.out_channels, 1, bias=False, device=dev, dtype=dt)
        if init not in ("gaussian", "kaiming"):
            raise ValueError(f"unknown lora_init {init!r} (gaussian | kaiming)")
        if dev.type != "meta":
            with torch.no_grad():  # drawn on the CPU (seeded generator), then copied
                a = torch.empty(down.weight.shape)
                if init == "gaussian":  # peft "gaussian": A ~ N(0, 1/r), B = 0
                    a.normal_(0.0, 1.0 / rank, generator=generator)
                else:
                    bound = 1.0 / math.sqrt(down.weight[0].numel())
                    a.uniform_(-bound, bound, generator=generator)
                down.weight.copy_(a)
                up.weight.zero_()
        self.lora_down[name] = down
        self.lora_up[name] = up
        self.scales[name] = float(alpha) / float(rank)

    def keep_original(self) -> None:
        """Store a frozen copy of the current weight/bias (non-persistent buffers)."""
        w = self.base.weight.detach().clone()
        bias = self.base.bias.detach().clone() if self.base.bias is not None else None
        self.register_buffer("original_weight", w, persistent=False)
        self.register_buffer("original_bias", bias, persistent=False)
        self.has_original = True

    def adapter_parameters(self, name: str) -> list[nn.Parameter]:
        if name not in self.lora_down:
            return []
        return [*self.lora_down[name].parameters(), *self.lora_up[name].parameters()]

    @torch.no_grad()
    def merge(self, name: str) -> None:
        """Fold adapter ``name`` into the base weight (inference speed); removes the adapter."""
        down, up, s = self.lora_down[name].weight, self.lora_up[name].weight, self.scales[name]
        if isinstance(self.base, nn.Linear):
            delta = up.float() @ down.float()  # (out, in)
        else:
            delta = torch.einsum("or,rikl->oikl", up.float()[:, :, 0, 0], down.float())
        self.base.weight += (s * delta).to(self.base.weight.dtype)
        del self.lora_down[name], self.lora_up[name]
        self.scales.pop(name)
        if self.active == name:
            self.active = None

    # -- forward ------------------------------------------------------------------------
    def _base_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.use_original and self.has_original):
            return self.base(x)
        w, b = self.original_weight, self.original_bias
        if isinstance(self.base, nn.Linear):
            return F.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
        c = self.base
        return F.conv2d(x, w.to(x.dtype), None if b is None else b.to(x.dtype), c.stride, c.padding, c.dilation, c.groups)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = self._base_forward(x)
        a = self.active
        if a is not None and a in self.lora_down:
            down = self.lora_down[a]
            delta = self.lora_up[a](down(x.to(down.weight.dtype)))
            y = y + (self.scales[a] * delta).to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return f"adapters={list(self.lora_down.keys())}, active={self.active}, use_original={self.use_original}"


def inject_lora(
    root: nn.Module, names: Iterable[str], adapter: str, rank: int, alpha: float,
    init: str = "gaussian", generator: torch.Generator | None = None,
) -> list[LoRALayer]:
    """Wrap each named Linear/Conv2d of ``root`` in a LoRALayer (once) and add ``adapter``."""
    layers = []
    for name in names:
        m = root.get_submodule(name)
        if not isinstance(m, LoRALayer):
            layer = LoRALayer(m)
            parent = _parent(root, name)
            setattr(parent, name.rsplit(".", 1)[-1], layer)
            m = layer
        if adapter in m.lora_down:
            raise ValueError(f"{name}: adapter {adapter!r} already exists")
        m.add_adapter(adapter, rank, alpha, init, generator)
        layers.append(m)
    return layers


def lora_layers(root: nn.Module) -> list[tuple[str, LoRALayer]]:
    return [(n, m) for n, m in root.named_modules() if isinstance(m, LoRALayer)]
