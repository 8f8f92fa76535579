"""Typed config of the Real-ESRGAN second-order degradation (paper 4.2; docs/reference.md §degradation).

The defaults are the table in docs/reference.md §degradation (Real-ESRGAN as OSEDiff configures it).
Load from YAML with ``osdhuman.config.load_config(DegradationConfig, "configs/degradation.yaml")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

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


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} is a probability and must be in [0, 1], got {p}")


def _check_range(name: str, r: tuple, low: float | None = None, high: float | None = None) -> None:
    if r[1] < r[0]:
        raise ValueError(f"{name} must be (lo, hi) with lo <= hi, got {tuple(r)}")
    if (low is not None and r[0] < low) or (high is not None and r[1] > high):
        raise ValueError(f"{name} must lie within [{low}, {high}], got {tuple(r)}")


@dataclass
class KernelConfig:
    """One blur stage's kernel sampler (Real-ESRGAN ``random_mixed_kernels`` + 2-D sinc)."""

    sizes: list[int] = field(default_factory=lambda: list(_SIZES))  # odd sizes, drawn uniformly
    kinds: list[KernelKind] = field(default_factory=lambda: list(KERNEL_KINDS))
    kind_probs: list[float] = field(default_factory=lambda: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03])
    sigma: tuple[float, float] = (0.2, 3.0)  # both axes, pixels
    beta_gaussian: tuple[float, float] = (0.5, 4.0)  # generalized Gaussian shape
    beta_plateau: tuple[float, float] = (1.0, 2.0)  # plateau shape
    rotation: tuple[float, float] = (-math.pi, math.pi)  # anisotropic kernels only
    sinc_prob: float = 0.1  # a 2-D sinc (circular low-pass) instead of the mixed kernel
    sinc_omega_small: tuple[float, float] = (math.pi / 3, math.pi)  # cutoff when size < sinc_small_below
    sinc_omega_large: tuple[float, float] = (math.pi / 5, math.pi)
    sinc_small_below: int = 13
    # Real-ESRGAN draws beta from [lo, 1) or [1, hi] with p 0.5 each (so plateau beta = 1 half the
    # time with the default [1, 2]); False draws it uniformly from [lo, hi]
    beta_split_at_one: bool = True

    def __post_init__(self) -> None:
        if len(self.kinds) != len(self.kind_probs) or not self.kinds:
            raise ValueError(f"kernel kinds {self.kinds} and kind_probs {self.kind_probs} differ in length")
        if any(p < 0 for p in self.kind_probs) or sum(self.kind_probs) <= 0:
            raise ValueError(f"kind_probs must be >= 0 with a positive sum, got {self.kind_probs}")
        if not self.sizes or any(s < 1 or s % 2 == 0 for s in self.sizes):
            raise ValueError(f"kernel sizes must be odd positive integers, got {self.sizes}")
        if self.sigma[0] <= 0 or self.sigma[1] < self.sigma[0]:
            raise ValueError(f"sigma range must be 0 < lo <= hi, got {self.sigma}")
        _check_range("beta_gaussian", self.beta_gaussian, low=0)
        _check_range("beta_plateau", self.beta_plateau, low=0)
        _check_range("rotation", self.rotation)
        _check_range("sinc_omega_small", self.sinc_omega_small, low=0)
        _check_range("sinc_omega_large", self.sinc_omega_large, low=0)
        _check_prob("sinc_prob", self.sinc_prob)


@dataclass
class ResizeConfig:
    """Random up / down / keep resize with a random interpolation mode."""

    probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    up: tuple[float, float] = (1.0, 1.5)
    down: tuple[float, float] = (0.15, 1.0)
    modes: list[ResizeMode] = field(default_factory=lambda: list(RESIZE_MODES))
    # "input": new size = floor(current size * s) (stage 1, F.interpolate(scale_factor=s));
    # "target": new size = int(HQ size / scale * s) (stage 2, Real-ESRGAN resizes towards size / 4)
    relative_to: Literal["input", "target"] = "input"

    def __post_init__(self) -> None:
        if any(p < 0 for p in self.probs) or sum(self.probs) <= 0:
            raise ValueError(f"resize probs must be >= 0 with a positive sum, got {self.probs}")
        if not self.modes:
            raise ValueError("resize modes must not be empty")
        _check_range("resize up", self.up, low=0)
        _check_range("resize down", self.down, low=0)


@dataclass
class NoiseConfig:
    """Gaussian (with ``gaussian_prob``) else Poisson noise; gray (same on all channels) with ``gray_prob``."""

    gaussian_prob: float = 0.5
    gaussian_sigma: tuple[float, float] = (1.0, 30.0)  # on the 0-255 scale
    poisson_scale: tuple[float, float] = (0.05, 3.0)
    gray_prob: float = 0.4

    def __post_init__(self) -> None:
        _check_prob("gaussian_prob", self.gaussian_prob)
        _check_prob("gray_prob", self.gray_prob)
        _check_range("gaussian_sigma", self.gaussian_sigma, low=0)
        _check_range("poisson_scale", self.poisson_scale, low=0)


@dataclass
class StageConfig:
    """One degradation order: blur -> resize -> noise -> JPEG."""

    blur_prob: float = 1.0
    kernel: KernelConfig = field(default_factory=KernelConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # integer quality, uniform, both ends included; None = no JPEG in this stage (stage 2: the
    # final step holds its JPEG)
    jpeg_quality: tuple[int, int] | None = (30, 95)

    def __post_init__(self) -> None:
        _check_prob("blur_prob", self.blur_prob)
        if self.jpeg_quality is not None:
            _check_range("jpeg_quality", self.jpeg_quality, low=1, high=100)


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

    resize_first_prob: float = 0.5
    modes: list[ResizeMode] = field(default_factory=lambda: list(RESIZE_MODES))
    sinc_prob: float = 0.8  # else the identity filter
    sinc_sizes: list[int] = field(default_factory=lambda: list(_SIZES))
    sinc_omega: tuple[float, float] = (math.pi / 3, math.pi)
    jpeg_quality: tuple[int, int] = (30, 95)

    def __post_init__(self) -> None:
        _check_prob("resize_first_prob", self.resize_first_prob)
        _check_prob("sinc_prob", self.sinc_prob)
        _check_range("sinc_omega", self.sinc_omega, low=0)
        _check_range("jpeg_quality", self.jpeg_quality, low=1, high=100)


@dataclass
class DegradationConfig:
    """Real-ESRGAN second-order degradation; defaults = docs/reference.md §degradation.

    ``scale``: the LQ is produced at HQ size / scale and (``back_to_hq_size``) resized back to
    the HQ size with a random mode from ``back_modes``, then quantised to 8 bit.
    ``jpeg_codec``: "real" = libjpeg-turbo (CPU) / nvJPEG (CUDA) through torchvision at an integer
    quality; "differentiable" = an in-torch JPEG approximation (DCT + quantisation tables) that
    keeps gradients (straight-through rounding).
    ``kernel_max_size``: kernels are zero-padded to this (odd) size, the reflect padding is its half.
    ``fft_blur``: blur by FFT (exact same correlation, much faster than direct 21x21 conv); False
    uses direct grouped convolution.
    """

    scale: int = 4
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2)
    final: FinalConfig = field(default_factory=FinalConfig)
    back_to_hq_size: bool = True
    back_modes: list[ResizeMode] = field(default_factory=lambda: list(RESIZE_MODES))
    jpeg_codec: Literal["real", "differentiable"] = "real"
    kernel_max_size: int = 21
    fft_blur: bool = True
    # FFT lengths are the smallest 5-smooth multiple of this >= image + padding, chosen per image
    # from its own size (so results never depend on the batch); larger = fewer FFT groups per
    # ragged batch on GPU, smaller = less padding work on CPU. 0 = auto: 4 image by image
    # (CPU: even lengths, odd ones transform 1.5-2x slower per pixel), 32 for whole batches (GPU)
    fft_size_multiple: int = 0

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.kernel_max_size % 2 == 0:
            raise ValueError(f"kernel_max_size must be odd, got {self.kernel_max_size}")
        sizes = [*self.stage1.kernel.sizes, *self.stage2.kernel.sizes, *self.final.sinc_sizes]
        if max(sizes) > self.kernel_max_size:
            raise ValueError(f"kernel size {max(sizes)} exceeds kernel_max_size {self.kernel_max_size}")
        for name, q in (("stage1", self.stage1.jpeg_quality), ("stage2", self.stage2.jpeg_quality),
                        ("final", self.final.jpeg_quality)):
            if q is None:
                continue
            lo, hi = q
            if not 1 <= lo <= hi <= 100:
                raise ValueError(f"{name}.jpeg_quality must satisfy 1 <= lo <= hi <= 100, got {(lo, hi)}")
