"""LPIPS with a VGG16 trunk (Zhang et al., 2018), the perceptual term of paper Eq. 4.

The network is the ``lpips`` package's own (v0.1, ``net="vgg"``), built with a random trunk
and no weights so that it fetches and unpickles nothing; we load its two weight files
ourselves, each with ``torch.load(weights_only=True)``:
- the VGG16 ImageNet weights torchvision uses (``vgg16-397923af.pth``), by default from
  torchvision's cache ``$TORCH_HOME/hub/checkpoints/`` (``~/.cache/torch/hub/checkpoints``);
- the LPIPS linear-layer weights ``weights/v0.1/vgg.pth`` (7 KB, BSD-2-Clause, Richard Zhang
  et al.) that ship inside the installed package.
Missing files raise :class:`LPIPSWeightsError` with a message saying where to put them.
Tests may build the module with a random VGG trunk (``random_backbone=True``), which is
never the default. Building the package's network costs ~1.5 s more than a bare VGG trunk
(it initialises torchvision's whole VGG16, classifier included, then keeps the features):
once per training run, so we take it (measured 2026-12-07: 1.3-1.8 s against 0.1 s).
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["LPIPSConfig", "LPIPS", "LPIPSWeightsError", "build_lpips", "default_vgg_path", "default_linear_path"]

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
_CHANNELS = (64, 128, 256, 512, 512)  # VGG16 widths at relu1_2 .. relu5_3, the five LPIPS levels


class LPIPSWeightsError(RuntimeError):
    """A weight file LPIPS needs is missing or does not fit."""


@dataclass
class LPIPSConfig:
    # VGG16 ImageNet weights (torchvision's file); null = torchvision's hub cache.
    vgg_weights: str | None = None
    # LPIPS v0.1 linear weights (vgg.pth); null = the file inside the installed `lpips` package.
    linear_weights: str | None = None
    # Tests only: random VGG trunk (and, if no linear file is found, equal level weights).
    random_backbone: bool = False


def default_vgg_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def default_linear_path() -> Path | None:
    """``weights/v0.1/vgg.pth`` of the installed ``lpips`` package, found without importing it."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "weights" / "v0.1" / "vgg.pth"
        if p.is_file():
            return p
    return None


class LPIPS(nn.Module):
    """LPIPS(x, y) -> (B,) distance; x, y: (B, 3, H, W) in [-1, 1]. All weights frozen.

    ``net`` is the ``lpips`` package's network; ``features`` lists its VGG16 layers with
    torchvision's ``vgg16().features`` indices, ``lins`` its five 1x1 linear layers."""

    def __init__(self) -> None:
        super().__init__()
        import lpips  # imports torchvision's model zoo: only when LPIPS is really built

        with warnings.catch_warnings():  # torchvision's deprecated ``pretrained=False`` inside lpips
            warnings.simplefilter("ignore")
            self.net = lpips.LPIPS(net="vgg", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
        trunk = [getattr(self.net.net, f"slice{i}") for i in range(1, 6)]
        self.features = nn.ModuleDict({name: m for s in trunk for name, m in s.named_children()})
        self.lins = nn.ModuleList(lin.model[-1] for lin in self.net.lins)  # the 1x1 convs (dropout first)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:  # always eval: the package's dropout stays off
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y).flatten()  # (B, 1, 1, 1) -> (B,)


def _load(path: Path, what: str) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / not a torch file
        raise LPIPSWeightsError(f"{path}: cannot read {what} ({exc})") from exc
    if not isinstance(sd, dict):
        raise LPIPSWeightsError(f"{path}: {what} is not a state dict")
    return sd


def build_lpips(cfg: LPIPSConfig) -> LPIPS:
    """An LPIPS(VGG) module with its weights loaded, or a clear error saying which file is missing."""
    model = LPIPS()
    # 1. VGG16 trunk
    if cfg.random_backbone:
        g = torch.Generator().manual_seed(0)
        for m in model.features.values():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, generator=g)
                nn.init.zeros_(m.bias)
    else:
        vgg_path = Path(cfg.vgg_weights).expanduser() if cfg.vgg_weights else default_vgg_path()
        if not vgg_path.is_file():
            raise LPIPSWeightsError(
                f"LPIPS needs the VGG16 ImageNet weights file {VGG16_FILE}, not found at {vgg_path}. "
                f"Download it from {VGG16_URL} and put it at {default_vgg_path()} (torchvision's cache), "
                f"or set lpips.vgg_weights=/path/to/{VGG16_FILE} in the training config."
            )
        sd = _load(vgg_path, "VGG16 weights")
        feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        own = model.features.state_dict()
        missing = [k for k in own if k not in feats]
        if missing:
            raise LPIPSWeightsError(
                f"{vgg_path}: not torchvision's VGG16 layout (missing features.{missing[0]} and "
                f"{len(missing) - 1} more); expected the file {VGG16_FILE} from {VGG16_URL}"
            )
        try:
            model.features.load_state_dict({k: feats[k] for k in own})
        except RuntimeError as exc:
            raise LPIPSWeightsError(f"{vgg_path}: VGG16 tensor shapes do not fit ({exc})") from exc
    # 2. linear layers
    lin_path = Path(cfg.linear_weights).expanduser() if cfg.linear_weights else default_linear_path()
    if lin_path is None or not lin_path.is_file():
        if cfg.random_backbone:
            for lin, c in zip(model.lins, _CHANNELS):
                nn.init.constant_(lin.weight, 1.0 / c)
            return model
        raise LPIPSWeightsError(
            "LPIPS needs its linear-layer weights weights/v0.1/vgg.pth "
            + (f"(not found at {lin_path}). " if lin_path else "(the `lpips` package is not installed). ")
            + "Run `pip install lpips` (the file ships inside its wheel) or set "
            "lpips.linear_weights=/path/to/vgg.pth in the training config."
        )
    sd = _load(lin_path, "LPIPS linear weights")
    for i, lin in enumerate(model.lins):
        key = f"lin{i}.model.1.weight"
        if key not in sd or tuple(sd[key].shape) != tuple(lin.weight.shape):
            raise LPIPSWeightsError(
                f"{lin_path}: expected tensor {key} of shape {tuple(lin.weight.shape)} (LPIPS v0.1 vgg.pth)"
            )
        lin.weight.data.copy_(sd[key].float())
    return model
