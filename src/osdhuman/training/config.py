"""TrainConfig: every knob of an OSDHuman training run (paper 3.2 / 4.2, docs/reference.md §training).

Loaded from YAML then ``--set key=value`` overrides (``osdhuman.config.load_config``); the
resolved config is saved as ``OUTPUT/config.yaml`` beside every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from osdhuman.config import SEED_MAX, rule
from osdhuman.degradation.config import DegradationConfig
from osdhuman.models.config import OSDHumanConfig
from osdhuman.training.lpips import LPIPSConfig

__all__ = [
    "TrainConfig",
    "TrainDataConfig",
    "OptimConfig",
    "LossConfig",
    "VSDConfig",
    "CheckpointConfig",
    "LoggingConfig",
    "LPIPSConfig",
]


@dataclass
class TrainDataConfig:
    """Where the HQ training crops come from; LQ is synthesised on the fly (paper 4.2)."""

    # a PERSONA manifest written by `osdhuman build-dataset` (.parquet / .jsonl / its folder)
    # or a folder of images
    source: str = "demo_out"
    # held-out images for validation: a manifest / folder, or null = the source's "val" split
    val_source: str | None = None
    # HQ crop side (paper: 512): the VAE downsamples by 8, LPIPS's VGG halves it 4 times
    size: int = rule(512, ge=16, multiple_of=8)
    # "center" crops of curated 512 images (PERSONA) or LSDIR-style "random" crops of a folder
    crop: Literal["random", "center"] = "random"
    hflip: bool = True
    num_workers: int = rule(0, ge=0)
    shuffle: bool = True
    num_val: int = rule(8, ge=0)  # held-out pairs in every validation pass
    val_seed: int = rule(1234, ge=0, le=SEED_MAX)  # degradation seeds of the held-out LQ images


@dataclass
class OptimConfig:
    """Two AdamW optimisers (generator, regularizer), constant schedule (docs/reference.md §training)."""

    lr: float = rule(5e-5, gt=0)
    regularizer_lr: float | None = rule(None, gt=0)  # null = lr
    betas: tuple[float, float] = rule((0.9, 0.999), ge=0, le=0.999999)
    weight_decay: float = rule(1e-2, ge=0)
    eps: float = rule(1e-8, gt=0)
    max_grad_norm: float = rule(1.0, ge=0)  # clip for each optimiser; 0 disables


@dataclass
class LossConfig:
    """Paper Eq. 4: L = lambda_mse * MSE + lambda_lpips * LPIPS + lambda_vsd * VSD."""

    lambda_mse: float = rule(1.0, ge=0)
    lambda_lpips: float = rule(2.0, ge=0)  # lambda1
    lambda_vsd: float = rule(1.0, ge=0)  # lambda2; 0 disables VSD and the regularizer update


@dataclass
class VSDConfig:
    """Paper Eq. 6-7 with docs/reference.md §training's choices."""

    t_min: int = rule(20, ge=0)  # VSD timesteps uniform in {t_min, ..., t_max - 1}
    t_max: int = rule(980, ge=0)
    guidance_scale: float = rule(7.5, ge=0)  # CFG of the frozen teacher; 1.0 = no guidance (our choice: docs/reference.md)
    # unconditional branch of CFG: the model's null-prompt (" ") embedding, or zeros when the
    # base model has no text encoder (random presets without one)
    uncond: Literal["null", "zeros"] = "null"
    normalizer: Literal["mean_abs", "none"] = "mean_abs"  # w = mean_CHW |z - x0_fix|
    normalizer_eps: float = rule(1e-8, gt=0)
    reg_t_min: int = rule(0, ge=0)  # Eq. 7 timesteps uniform in {reg_t_min, ..., reg_t_max - 1}
    reg_t_max: int = rule(1000, ge=0)


@dataclass
class CheckpointConfig:
    every: int = rule(1000, ge=0)  # steps between checkpoints (0: only at the end)
    keep: int = rule(3, ge=0)  # newest checkpoints kept (rotation); 0 keeps all


@dataclass
class LoggingConfig:
    every: int = rule(10, ge=0)  # steps between TensorBoard / metrics.jsonl records
    val_every: int = rule(1000, ge=0)  # steps between validation passes (0: only at the end)
    val_at_start: bool = True  # a validation pass before the first step (baseline)
    tensorboard: bool = True
    progress: bool = True  # tqdm bar


@dataclass
class TrainConfig:
    model: OSDHumanConfig = field(default_factory=OSDHumanConfig)
    # start the generator from released / earlier weights (any format `restore --weights`
    # reads; the LoRA layout comes from the files, model.base_model / hfie_encoder_path from here)
    init_weights: str | None = None
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    vsd: VSDConfig = field(default_factory=VSDConfig)
    lpips: LPIPSConfig = field(default_factory=LPIPSConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    seed: int = rule(0, ge=0, le=SEED_MAX)
    max_steps: int = rule(35000, ge=0)  # optimiser steps (paper: 35k at global batch 16)
    batch_size: int = rule(4, ge=1)  # PER DEVICE (process) and micro-batch; global = batch * accumulation * processes
    grad_accum_steps: int = rule(1, ge=1)
    # images per optimiser step over all processes (paper: 16). When set, grad_accum_steps is
    # derived from it: global / (batch_size * processes), which must divide exactly (else an
    # error at start); null = batch_size * grad_accum_steps * processes, whatever that is
    global_batch_size: int | None = rule(None, ge=1)
    # autocast precision; trainable weights always stay float32. (YAML reads a bare `no` as
    # false, which is accepted and means "no".)
    mixed_precision: Literal["no", "fp16", "bf16"] | bool = "bf16"
    # dtype of the FROZEN weights (UNet/VAE/HFIE encoder bases); "auto" = the autocast dtype
    # on GPU, float32 on CPU. The VAE decoder stays float32 under fp16 (overflow).
    frozen_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    gradient_checkpointing: bool = False
    device: str | None = None  # null = accelerate's choice (GPU per process if any); "cpu" forces CPU
    max_nonfinite: int = rule(10, ge=0)  # stop after this many non-finite steps in a row

    def __post_init__(self) -> None:
        if self.mixed_precision is False:
            self.mixed_precision = "no"
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if not (0 <= self.vsd.t_min < self.vsd.t_max <= self.model.num_train_timesteps):
            raise ValueError(f"vsd timesteps [{self.vsd.t_min}, {self.vsd.t_max}) outside the schedule")
        if not (0 <= self.vsd.reg_t_min < self.vsd.reg_t_max <= self.model.num_train_timesteps):
            raise ValueError(f"regularizer timesteps [{self.vsd.reg_t_min}, {self.vsd.reg_t_max}) outside the schedule")
