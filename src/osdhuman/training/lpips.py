"""LPIPS with a VGG16 trunk (Zhang et al., 2018), the perceptual term of paper Eq. 4.

Our own module, numerically the same as the reference ``lpips`` package (v0.1, net="vgg"):
inputs in [-1, 1] are shifted and scaled, VGG16 features are taken after relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3, each unit-normalised over channels, squared differences
weighted by a learned 1x1 linear layer per level, averaged over space and summed over
levels.

Two weight files are needed, both loaded with ``torch.load(weights_only=True)``:
- the VGG16 ImageNet weights torchvision uses (``vgg16-397923af.pth``), by default from
  torchvision's cache ``$TORCH_HOME/hub/checkpoints/`` (``~/.cache/torch/hub/checkpoints``);
- the LPIPS linear-layer weights ``weights/v0.1/vgg.pth`` (7 KB, BSD-2-Clause, Richard Zhang
  et al.), by default from the installed ``lpips`` PyPI package (which we never import).
Missing files raise :class:`LPIPSWeightsError` with a message saying where to put them.
Tests may build the module with a random VGG trunk (``random_backbone=True``), which is
never the default.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["LPIPSConfig", "LPIPS", "LPIPSWeightsError", "build_lpips", "default_vgg_path", "default_linear_path"]

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# torchvision vgg16 "D" features: conv widths, "M" = max-pool. We build up to relu5_3.
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # indices (in torchvision's features) of relu1_2 .. relu5_3
_CHANNELS = (64, 128, 256, 512, 512)


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
    """LPIPS(x, y) -> (B,) distance; x, y: (B, 3, H, W) in [-1, 1]. All weights frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = v
        self.features = nn.Sequential(*layers)  # same indices as torchvision's vgg16().features
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":  # always eval (no dropout / bn anyway)
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = (x - self.shift) / self.scale  # (B, 3, H, W)
        y = (y - self.shift) / self.scale
        fx, fy = self._taps(x), self._taps(y)
        total = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lins, fx, fy):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit norm over channels
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b).pow(2)).mean(dim=(1, 2, 3))  # (B,)
        return total


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
        for m in model.features:
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
