"""Real-ESRGAN second-order degradation (paper 4.2; docs/reference.md §degradation): fast, batched, per-image
parameters, reproducible from one seed per image.

Public API::

    from osdhuman.degradation import DegradationConfig, Degrader, make_pairs, degrade_folder

    cfg = DegradationConfig()                       # defaults = docs/reference.md §degradation table
    cfg = load_config(DegradationConfig, "configs/degradation.yaml")   # or from YAML
    deg = Degrader(cfg)                             # no parameters, no state
    lq = deg(hq, seeds)                             # hq (B, 3, H, W) float in [0, 1], seeds: B ints
                                                    # -> lq (B, 3, H, W) float32 in [0, 1], 8-bit levels
    lq, params = deg(hq, seeds, return_params=True) # params: list of ImageParams (.to_dict())
    lq_m11, hq_m11 = make_pairs(hq_m11, seeds, deg) # training pairs in [-1, 1]
    degrade_folder(hq_dir, lq_dir, seed=0)          # what `osdhuman degrade` runs

An image's LQ depends only on (its pixels, its seed, the config): not on the batch it travels
in. On a CPU it is computed image by image in numpy / OpenCV / Pillow (cpu.py: no torch, one
thread per image, ``workers`` images in parallel), bit-identical run to run whatever the thread
count. On CUDA the batch runs in torch as one ragged canvas (per-image sizes, kernels and
modes in batched ops); its noise comes from CUDA generators, so CPU and CUDA give different
(equally distributed) LQs for one seed. Degrader(cfg, batched=True) runs the CUDA code path on
a CPU (tests, debugging); it agrees with the CPU path to float rounding.

Importing this package does not import torch (``osdhuman degrade`` on a CPU never does):
``Degrader`` and ``make_pairs`` load the torch path on first use.
"""

from osdhuman.degradation.config import (
    DegradationConfig,
    FinalConfig,
    KernelConfig,
    NoiseConfig,
    ResizeConfig,
    StageConfig,
)
from osdhuman.degradation.folder import DegradeSummary, degrade_folder
from osdhuman.degradation.kernels import build_kernels
from osdhuman.degradation.params import (
    ImageParams,
    KernelParams,
    NoiseParams,
    ResizeParams,
    sample_params,
)

_TORCH_NAMES = {"Degrader", "make_pairs"}  # in pipeline.py, which imports torch


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from osdhuman.degradation import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DegradationConfig",
    "DegradeSummary",
    "Degrader",
    "FinalConfig",
    "ImageParams",
    "KernelConfig",
    "KernelParams",
    "NoiseConfig",
    "NoiseParams",
    "ResizeConfig",
    "ResizeParams",
    "StageConfig",
    "build_kernels",
    "degrade_folder",
    "make_pairs",
    "sample_params",
]
