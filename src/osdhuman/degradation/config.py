"""Typed config of the Real-ESRGAN second-order degradation (paper 4.2; docs/reference.md §degradation).

The defaults are the table in docs/reference.md §degradation (Real-ESRGAN as OSEDiff configures it).
Load from YAML with ``osdhuman.config.load_config(DegradationConfig, "configs/degradation.yaml")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from osdhuman.config import rule

__all__ = [
    "KERNEL_KINDS",
    "RESIZE_MODES",
    "DegradationConfig",
    "FinalConfig",
    "KernelConfig",
    "NoiseConfig",
    "ResizeConfig",
    "StageConfig",
]

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
ResizeMode = Literal["area", "bilinear", "bicubic"]
KernelKind = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]

_SIZES = [7, 9, 11, 13, 15, 17, 19, 21]


@dataclass
class KernelConfig:
    """One blur stage's kernel sampler (Real-ESRGAN ``random_mixed_kernels`` + 2-D sinc)."""

    sizes: list[int] = rule(factory=lambda: list(_SIZES), ge=1)  # odd sizes, drawn uniformly
    kinds: list[KernelKind] = field(default_factory=lambda: list(KERNEL_KINDS))
    kind_probs: list[float] = rule(factory=lambda: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], ge=0, le=1)
    sigma: tuple[float, float] = rule((0.2, 3.0), gt=0)  # both axes, pixels
    beta_gaussian: tuple[float, float] = rule((0.5, 4.0), ge=0)  # generalized Gaussian shape
    beta_plateau: tuple[float, float] = rule((1.0, 2.0), ge=0)  # plateau shape
    rotation: tuple[float, float] = rule((-math.pi, math.pi), ordered=True)  # anisotropic kernels only
    sinc_prob: float = rule(0.1, ge=0, le=1)  # a 2-D sinc (circular low-pass) instead of the mixed kernel
    sinc_omega_small: tuple[float, float] = rule((math.pi / 3, math.pi), ge=0)  # cutoff when size < sinc_small_below
    sinc_omega_large: tuple[float, float] = rule((math.pi / 5, math.pi), ge=0)
    sinc_small_below: int = rule(13, ge=0)
    # Real-ESRGAN draws beta from [lo, 1) or [1, hi] with p 0.5 each (so plateau beta = 1 half the
    # time with the default [1, 2]); False draws it uniformly from [lo, hi]
    beta_split_at_one: bool = True

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.kind_probs) or not self.kinds:
            raise ValueError(f"kernel kinds {self.kinds} and kind_probs {self.kind_probs} differ in length")
        if sum(self.kind_probs) <= 0:
            raise ValueError(f"kind_probs must have a positive sum, got {self.kind_probs}")
        if not self.sizes or any(s % 2 == 0 for s in self.sizes):
            raise ValueError(f"kernel sizes must be odd, got {self.sizes}")


@dataclass
class ResizeConfig:
    """Random up / down / keep resize with a random interpolation mode."""

    probs: tuple[float, float, float] = rule((0.2, 0.7, 0.1), ge=0, le=1)  # up, down, keep
    up: tuple[float, float] = rule((1.0, 1.5), ge=0, ordered=True)
    down: tuple[float, float] = rule((0.15, 1.0), ge=0, ordered=True)
    modes: list[ResizeMode] = field(default_factory=lambda: list(RESIZE_MODES))
    # "input": new size = floor(current size * s) (stage 1, F.interpolate(scale_factor=s));
    # "target": new size = int(HQ size / scale * s) (stage 2, Real-ESRGAN resizes towards size / 4)
    relative_to: Literal["input", "target"] = "input"

    def __post_init__(self) -> None:
        if sum(self.probs) <= 0:
            raise ValueError(f"resize probs must have a positive sum, got {self.probs}")
        if not self.modes:
            raise ValueError("resize modes must not be empty")


@dataclass
class NoiseConfig:
    """Gaussian (with ``gaussian_prob``) else Poisson noise; gray (same on all channels) with ``gray_prob``."""

    gaussian_prob: float = rule(0.5, ge=0, le=1)
    gaussian_sigma: tuple[float, float] = rule((1.0, 30.0), ge=0)  # on the 0-255 scale
    poisson_scale: tuple[float, float] = rule((0.05, 3.0), ge=0)
    gray_prob: float = rule(0.4, ge=0, le=1)


@dataclass
class StageConfig:
    """One degradation order: blur -> resize -> noise -> JPEG."""

    blur_prob: float = rule(1.0, ge=0, le=1)
    kernel: KernelConfig = field(default_factory=KernelConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # integer quality, uniform, both ends included; None = no JPEG in this stage (stage 2: the
    # final step holds its JPEG)
    jpeg_quality: tuple[int, int] | None = rule((30, 95), ge=1, le=100, ordered=True)


def _stage2() -> StageConfig:
    return StageConfig(
        blur_prob=0.8,
        kernel=KernelConfig(sigma=(0.2, 1.5)),
        resize=ResizeConfig(probs=(0.3, 0.4, 0.3), up=(1.0, 1.2), down=(0.3, 1.0), relative_to="target"),
        noise=NoiseConfig(gaussian_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
        jpeg_quality=None,
    )


@dataclass
class FinalConfig:
    """Final step: with ``resize_first_prob`` (resize to HQ/scale + sinc) then JPEG, else JPEG then (resize + sinc)."""

    resize_first_prob: float = rule(0.5, ge=0, le=1)
    modes: list[ResizeMode] = field(default_factory=lambda: list(RESIZE_MODES))
    sinc_prob: float = rule(0.8, ge=0, le=1)  # else the identity filter
    sinc_sizes: list[int] = rule(factory=lambda: list(_SIZES), ge=1)
    sinc_omega: tuple[float, float] = rule((math.pi / 3, math.pi), ge=0)
    jpeg_quality: tuple[int, int] = rule((30, 95), ge=1, le=100, ordered=True)


@dataclass
class DegradationConfig:
    """Real-ESRGAN second-order degradation; defaults = docs/reference.md §degradation.

    ``scale``: the LQ is produced at HQ size / scale and (``back_to_hq_size``) resized back to
    the HQ size with a random mode from ``back_modes``, then quantised to 8 bit.
    ``jpeg_codec``: "real" = libjpeg-turbo through Pillow (CPU) / nvJPEG through torchvision (CUDA)
    at an integer quality; "differentiable" = an in-torch JPEG approximation (DCT + quantisation
    tables) that keeps gradients (straight-through rounding; always the batched torch path).
    ``kernel_max_size``: kernels are zero-padded to this (odd) size, the reflect padding is its half.
    ``fft_blur``: the batched torch path blurs by FFT (exact same correlation, much faster than
    direct 21x21 conv); False uses direct grouped convolution. The CPU path (cpu.py) always takes
    its cheapest exact route (cpu_blur.py).
    """

    scale: int = rule(4, ge=1)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)
    final: FinalConfig = field(default_factory=FinalConfig)
    back_to_hq_size: bool = True
    back_modes: list[ResizeMode] = field(default_factory=lambda: list(RESIZE_MODES))
    jpeg_codec: Literal["real", "differentiable"] = "real"
    kernel_max_size: int = rule(21, ge=1)
    fft_blur: bool = True
    # FFT lengths are the smallest 5-smooth multiple of this >= image + padding, chosen per image
    # from its own size (so results never depend on the batch); larger = fewer FFT groups per
    # ragged batch on GPU, smaller = less padding work on CPU. 0 = auto: 4 image by image
    # (CPU: even lengths, odd ones transform 1.5-2x slower per pixel), 32 for whole batches (GPU)
    fft_size_multiple: int = rule(0, ge=0)

    def __post_init__(self) -> None:
        if self.kernel_max_size % 2 == 0:
            raise ValueError(f"kernel_max_size must be odd, got {self.kernel_max_size}")
        sizes = [*self.stage1.kernel.sizes, *self.stage2.kernel.sizes, *self.final.sinc_sizes]
        if max(sizes) > self.kernel_max_size:
            raise ValueError(f"kernel size {max(sizes)} exceeds kernel_max_size {self.kernel_max_size}")

