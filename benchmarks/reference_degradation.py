"""A straightforward reference of the Real-ESRGAN second-order degradation, for speed comparison.

Written the way the OSEDiff / BasicSR code runs it: one image at a time, kernels built in
numpy, every blur a direct 21x21 convolution (F.conv2d on the reflect-padded image), the
Poisson level count with torch.unique. Same parameter table as osdhuman.degradation (docs/reference.md
§degradation). JPEG uses the same real codec as ours (torchvision), so the comparison measures
the rest of the pipeline; BasicSR's DiffJPEG would make the reference slower still.
Not used by the package; ``benchmarks/degradation.py`` times it beside ours.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special
from torchvision.io import decode_jpeg, encode_jpeg

KINDS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
PROBS = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
SIZES = list(range(7, 22, 2))


def _grid(k: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.arange(-(k // 2), k // 2 + 1, dtype=np.float64)
    return np.meshgrid(ax, ax)  # xx (column offset), yy (row offset)


def _quad(k: int, sx: float, sy: float, theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sx * sx, sy * sy]) @ rot.T)
    xx, yy = _grid(k)
    v = np.stack([xx, yy], -1)  # (k, k, 2)
    return np.einsum("...i,ij,...j->...", v, inv, v)


def _beta(lo: float, hi: float) -> float:
    return np.random.uniform(lo, 1) if np.random.uniform() < 0.5 else np.random.uniform(1, hi)


def sinc_kernel(omega: float, k: int) -> np.ndarray:
    xx, yy = _grid(k)
    r = np.sqrt(xx**2 + yy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ker = omega * special.j1(omega * r) / (2 * np.pi * r)
    ker[k // 2, k // 2] = omega**2 / (4 * np.pi)
    return ker / ker.sum()


def random_kernel(sigma: tuple[float, float], sinc_prob: float = 0.1) -> np.ndarray:
    k = random.choice(SIZES)
    if np.random.uniform() < sinc_prob:
        omega = np.random.uniform(np.pi / 3, np.pi) if k < 13 else np.random.uniform(np.pi / 5, np.pi)
        ker = sinc_kernel(omega, k)
    else:
        kind = random.choices(KINDS, PROBS)[0]
        sx = np.random.uniform(*sigma)
        if kind.endswith("_iso") or kind == "iso":
            sy, th = sx, 0.0
        else:
            sy, th = np.random.uniform(*sigma), np.random.uniform(-np.pi, np.pi)
        q = _quad(k, sx, sy, th)
        if kind in ("iso", "aniso"):
            ker = np.exp(-0.5 * q)
        elif kind.startswith("generalized"):
            ker = np.exp(-0.5 * q ** _beta(0.5, 4))
        else:
            ker = 1 / (q ** _beta(1, 2) + 1)
        ker = ker / ker.sum()
    p = (21 - k) // 2
    return np.pad(ker, ((p, p), (p, p)))


def filter2d(img: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """img (1, C, H, W); direct 21x21 correlation after reflect padding (BasicSR filter2D)."""
    k = torch.from_numpy(kernel).float()
    C = img.shape[1]
    p = F.pad(img, (10, 10, 10, 10), mode="reflect")
    return F.conv2d(p, k.expand(C, 1, 21, 21), groups=C)


def noise(img: torch.Tensor, sigma: tuple[float, float], pscale: tuple[float, float]) -> torch.Tensor:
    gray = np.random.uniform() < 0.4
    if np.random.uniform() < 0.5:
        s = np.random.uniform(*sigma) / 255.0
        n = torch.randn(1, 1 if gray else 3, *img.shape[-2:]) * s
        return (img + n).clamp(0, 1)
    scale = np.random.uniform(*pscale)
    src = (0.2989 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3]) if gray else img
    q = (src * 255).round().clamp(0, 255) / 255
    vals = 2 ** np.ceil(np.log2(len(torch.unique(q))))
    n = torch.poisson(q * vals) / vals - q
    return (img + n * scale).clamp(0, 1)


JPEG_CODEC = "torchvision"  # or "pil": BasicSR-style scripts round-trip through PIL (benchmarks/degrade_folder.py)


def jpeg(img: torch.Tensor) -> torch.Tensor:
    q = int(np.random.randint(30, 96))
    u8 = (img[0].clamp(0, 1) * 255).round().to(torch.uint8)
    if JPEG_CODEC == "pil":
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(u8.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=q)
        arr = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float()[None] / 255.0
    return decode_jpeg(encode_jpeg(u8, quality=q)).float()[None] / 255.0


def resize(img: torch.Tensor, probs, rng, size_fn) -> torch.Tensor:
    kind = random.choices(["up", "down", "keep"], probs)[0]
    s = np.random.uniform(1, rng[1]) if kind == "up" else np.random.uniform(rng[0], 1) if kind == "down" else 1.0
    return size_fn(img, s, random.choice(["area", "bilinear", "bicubic"]))


def degrade(hq: torch.Tensor) -> torch.Tensor:
    """hq (1, 3, H, W) in [0, 1] -> LQ (1, 3, H, W) on 8-bit levels."""
    H, W = hq.shape[-2:]
    k1, k2 = random_kernel((0.2, 3.0)), random_kernel((0.2, 1.5))
    sinc = sinc_kernel(np.random.uniform(np.pi / 3, np.pi), random.choice(SIZES)) if np.random.uniform() < 0.8 else None
    if sinc is not None:
        p = (21 - sinc.shape[0]) // 2
        sinc = np.pad(sinc, ((p, p), (p, p)))
    x = filter2d(hq, k1)
    x = resize(x, (0.2, 0.7, 0.1), (0.15, 1.5),
               lambda im, s, m: F.interpolate(im, scale_factor=s, mode=m) if m != "area"
               else F.interpolate(im, size=(int(im.shape[-2] * s), int(im.shape[-1] * s)), mode=m))
    x = noise(x, (1, 30), (0.05, 3))
    x = jpeg(x)
    if np.random.uniform() < 0.8:
        x = filter2d(x, k2)
    x = resize(x, (0.3, 0.4, 0.3), (0.3, 1.2),
               lambda im, s, m: F.interpolate(im, size=(int(H / 4 * s), int(W / 4 * s)), mode=m))
    x = noise(x, (1, 25), (0.05, 2.5))
    final = lambda im: F.interpolate(im, size=(H // 4, W // 4), mode=random.choice(["area", "bilinear", "bicubic"]))
    if np.random.uniform() < 0.5:
        x = final(x)
        x = filter2d(x, sinc) if sinc is not None else x
        x = jpeg(x)
    else:
        x = jpeg(x)
        x = final(x)
        x = filter2d(x, sinc) if sinc is not None else x
    x = F.interpolate(x, size=(H, W), mode=random.choice(["area", "bilinear", "bicubic"]))
    return (x.clamp(0, 1) * 255).round() / 255
