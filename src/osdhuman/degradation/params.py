"""Per-image parameter draws of the second-order degradation, as plain records.

Every random choice of the pipeline except the per-pixel noise is drawn here from the image's
own seed (``random.Random(seed)``: fast, platform-independent, and independent of the batch the
image travels in). The per-pixel noise uses generators seeded from ``noise_seed`` values drawn
here first (torch's CPU generator stream, which rng.py reproduces without torch; CUDA generators
on the batched CUDA path), so one seed fixes everything.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

from osdhuman.degradation.config import (
    DegradationConfig,
    KernelConfig,
    NoiseConfig,
    ResizeConfig,
)

__all__ = [
    "ImageParams",
    "KernelParams",
    "NoiseParams",
    "ResizeParams",
    "StageParams",
    "sample_kernel",
    "sample_noise",
    "sample_params",
    "sample_resize",
    "sample_sinc",
]

_ISO = ("iso", "generalized_iso", "plateau_iso")


@dataclass
class KernelParams:
    """One blur kernel. ``kind``: a Real-ESRGAN kind, "sinc" or "identity"; ``size``: odd support."""

    kind: str
    size: int
    sigma_x: float | None = None
    sigma_y: float | None = None
    rotation: float | None = None  # radians
    beta: float | None = None  # generalized / plateau shape
    omega: float | None = None  # sinc cutoff (radians per pixel)


@dataclass
class ResizeParams:
    direction: str  # "up" / "down" / "keep" / "fixed"
    scale: float | None  # the drawn factor (None for a fixed target size)
    mode: str  # area / bilinear / bicubic
    size: tuple[int, int]  # output (h, w)
    # scale_factor semantics (F.interpolate(scale_factor=s)): sampling step 1/s; else in/out
    use_scale_factor: bool = False


@dataclass
class NoiseParams:
    type: str  # "gaussian" / "poisson"
    level: float  # gaussian sigma on the 0-255 scale, or poisson scale
    gray: bool
    seed: int  # torch.Generator seed of the per-pixel draws


@dataclass
class StageParams:
    blur: KernelParams | None  # None = not applied
    resize: ResizeParams
    noise: NoiseParams
    jpeg_quality: int | None  # None = no JPEG in this stage


@dataclass
class ImageParams:
    """Everything drawn for one image (JSON-ready through :meth:`to_dict`)."""

    seed: int
    hq_size: tuple[int, int]
    stage1: StageParams
    stage2: StageParams
    final_order: str  # "resize_first" (resize + sinc, then JPEG) / "jpeg_first"
    final_resize: ResizeParams
    final_sinc: KernelParams | None  # None = identity
    final_jpeg_quality: int
    back_resize: ResizeParams | None  # None = LQ stays at HQ size / scale

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _uniform(rng: random.Random, lo_hi) -> float:
    lo, hi = lo_hi
    return rng.uniform(lo, hi)


def _beta(rng: random.Random, lo_hi, split: bool) -> float:
    lo, hi = lo_hi
    if not split:
        return rng.uniform(lo, hi)
    # Real-ESRGAN: half the draws below 1 (sharper/flatter than Gaussian), half above
    return rng.uniform(lo, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, hi)


def sample_kernel(rng: random.Random, cfg: KernelConfig) -> KernelParams:
    """Real-ESRGAN ``random_mixed_kernels`` (p = 1 - sinc_prob) or a 2-D sinc (p = sinc_prob)."""
    size = rng.choice(cfg.sizes)
    if rng.random() < cfg.sinc_prob:
        omega = _uniform(rng, cfg.sinc_omega_small if size < cfg.sinc_small_below else cfg.sinc_omega_large)
        return KernelParams(kind="sinc", size=size, omega=omega)
    kind = rng.choices(cfg.kinds, weights=cfg.kind_probs)[0]
    sigma_x = _uniform(rng, cfg.sigma)
    if kind in _ISO:
        sigma_y, rotation = sigma_x, 0.0
    else:
        sigma_y = _uniform(rng, cfg.sigma)
        rotation = _uniform(rng, cfg.rotation)
    beta = None
    if kind.startswith("generalized"):
        beta = _beta(rng, cfg.beta_gaussian, cfg.beta_split_at_one)
    elif kind.startswith("plateau"):
        beta = _beta(rng, cfg.beta_plateau, cfg.beta_split_at_one)
    return KernelParams(kind=kind, size=size, sigma_x=sigma_x, sigma_y=sigma_y, rotation=rotation, beta=beta)


def sample_sinc(rng: random.Random, sizes: list[int], omega: tuple[float, float]) -> KernelParams:
    return KernelParams(kind="sinc", size=rng.choice(sizes), omega=_uniform(rng, omega))


def sample_resize(rng: random.Random, cfg: ResizeConfig, in_size: tuple[int, int],
                  target: tuple[float, float]) -> ResizeParams:
    """Up / down / keep. ``target``: the (float) HQ size / scale, for ``relative_to == "target"``."""
    direction = rng.choices(("up", "down", "keep"), weights=cfg.probs)[0]
    if direction == "up":
        s = _uniform(rng, cfg.up)
    elif direction == "down":
        s = _uniform(rng, cfg.down)
    else:
        s = 1.0
    mode = rng.choice(cfg.modes)
    if cfg.relative_to == "input":  # F.interpolate(scale_factor=s): floor(size * s)
        size = (max(1, math.floor(in_size[0] * s)), max(1, math.floor(in_size[1] * s)))
        return ResizeParams(direction, s, mode, size, use_scale_factor=True)
    size = (max(1, int(target[0] * s)), max(1, int(target[1] * s)))  # int(ori / scale * s)
    return ResizeParams(direction, s, mode, size, use_scale_factor=False)


def sample_noise(rng: random.Random, cfg: NoiseConfig) -> NoiseParams:
    noise_seed = rng.getrandbits(63)
    if rng.random() < cfg.gaussian_prob:
        kind, level = "gaussian", _uniform(rng, cfg.gaussian_sigma)
    else:
        kind, level = "poisson", _uniform(rng, cfg.poisson_scale)
    gray = rng.random() < cfg.gray_prob
    return NoiseParams(kind, level, gray, noise_seed)


def _quality(rng: random.Random, q) -> int | None:
    return None if q is None else rng.randint(int(q[0]), int(q[1]))


def sample_params(cfg: DegradationConfig, seed: int, hq_size: tuple[int, int]) -> ImageParams:
    """All parameters for one image of size ``hq_size`` = (H, W), from its ``seed`` alone."""
    rng = random.Random(int(seed))
    H, W = int(hq_size[0]), int(hq_size[1])
    target = (H / cfg.scale, W / cfg.scale)
    # stage 1: blur -> resize -> noise -> JPEG
    s1 = cfg.stage1
    blur1 = sample_kernel(rng, s1.kernel) if rng.random() < s1.blur_prob else None
    resize1 = sample_resize(rng, s1.resize, (H, W), target)
    stage1 = StageParams(blur1, resize1, sample_noise(rng, s1.noise), _quality(rng, s1.jpeg_quality))
    # stage 2
    s2 = cfg.stage2
    blur2 = sample_kernel(rng, s2.kernel) if rng.random() < s2.blur_prob else None
    resize2 = sample_resize(rng, s2.resize, resize1.size, target)
    stage2 = StageParams(blur2, resize2, sample_noise(rng, s2.noise), _quality(rng, s2.jpeg_quality))
    # final: (resize + sinc, JPEG) in random order
    f = cfg.final
    order = "resize_first" if rng.random() < f.resize_first_prob else "jpeg_first"
    lq_size = (max(1, H // cfg.scale), max(1, W // cfg.scale))
    final_resize = ResizeParams("fixed", None, rng.choice(f.modes), lq_size)
    sinc = sample_sinc(rng, f.sinc_sizes, f.sinc_omega) if rng.random() < f.sinc_prob else None
    quality = _quality(rng, f.jpeg_quality)
    back = ResizeParams("fixed", None, rng.choice(cfg.back_modes), (H, W)) if cfg.back_to_hq_size else None
    return ImageParams(int(seed), (H, W), stage1, stage2, order, final_resize, sinc, quality, back)
