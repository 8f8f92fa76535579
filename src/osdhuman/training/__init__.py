"""Training OSDHuman (paper 3.2 / 4.2, Eq. 4, 6, 7; docs/reference.md §training).

Public API::

    from osdhuman.config import load_config
    from osdhuman.training import TrainConfig, train

    cfg = load_config(TrainConfig, "configs/tiny.yaml", ["max_steps=20"])
    result = train(cfg, "runs/tiny")                 # resume="latest" to continue a run
    result.final_dir                                  # weights for `osdhuman restore --weights`

Command line (same thing)::

    osdhuman train --config configs/tiny.yaml --output-dir runs/tiny --max-steps 30
    osdhuman train --config configs/osdhuman.yaml --output-dir runs/osdhuman --resume latest
    accelerate launch --multi_gpu --num_processes 4 -m osdhuman.cli.train --config ... --output-dir ...

A run folder holds ``config.yaml`` (resolved), ``metrics.jsonl`` and ``tb/`` (TensorBoard:
every loss term, learning rates, grad norms, images/s, validation PSNR/SSIM and an
LQ | restored | HQ grid, also as ``val/step-*.png``), ``checkpoints/step-XXXXXXXX/`` (rotated;
see ``osdhuman.training.checkpoint``) and ``final/`` (``osdhuman restore --weights final``).
Iteration ``k`` seeds the global RNG from (seed, k, rank) and the data order is a function
of (seed, position), so a run resumed from any checkpoint ends with the same weights as an
uninterrupted one (bit-identical on CPU).

Weights needed for LPIPS: torchvision's ``vgg16-397923af.pth`` (its hub cache or
``lpips.vgg_weights``) and LPIPS's ``vgg.pth`` linear layers (``pip install lpips`` or
``lpips.linear_weights``); without them the run stops before it starts.

Losses as pure functions (``osdhuman.training.losses``): ``vsd_loss`` (Eq. 6),
``regularizer_loss`` (Eq. 7), ``generator_loss`` (Eq. 4); ``LPIPS`` / ``build_lpips`` (our
VGG16 LPIPS); checkpoints (``osdhuman.training.checkpoint``): atomic, safetensors + JSON.
"""

from osdhuman.training.checkpoint import CheckpointError, find_latest, list_checkpoints
from osdhuman.training.config import (
    CheckpointConfig,
    LoggingConfig,
    LossConfig,
    OptimConfig,
    TrainConfig,
    TrainDataConfig,
    VSDConfig,
)
from osdhuman.training.losses import (
    add_noise,
    cfg_eps,
    generator_loss,
    regularizer_loss,
    sample_timesteps,
    vsd_loss,
    x0_from_eps,
)
from osdhuman.training.lpips import LPIPS, LPIPSConfig, LPIPSWeightsError, build_lpips
from osdhuman.training.step import OSDHumanTrainStep, teacher_and_regularizer_x0
from osdhuman.training.trainer import TrainingError, TrainResult, step_seed, train

__all__ = [
    "TrainConfig", "TrainDataConfig", "OptimConfig", "LossConfig", "VSDConfig", "CheckpointConfig",
    "LoggingConfig", "LPIPSConfig",
    "train", "TrainResult", "TrainingError", "step_seed",
    "OSDHumanTrainStep", "teacher_and_regularizer_x0",
    "vsd_loss", "regularizer_loss", "generator_loss", "add_noise", "x0_from_eps", "cfg_eps", "sample_timesteps",
    "LPIPS", "build_lpips", "LPIPSWeightsError",
    "CheckpointError", "find_latest", "list_checkpoints",
]
