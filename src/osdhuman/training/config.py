"""TrainConfig: every knob of an OSDHuman training run (paper 3.2 / 4.2, docs/reference.md §training).

Loaded from YAML then ``--set key=value`` overrides (``osdhuman.config.load_config``); the
resolved config is saved as ``OUTPUT/config.yaml`` beside every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

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
    val_source: Optional[str] = None
    size: int = 512  # HQ crop side (paper: 512)
    # "center" crops of curated 512 images (PERSONA) or LSDIR-style "random" crops of a folder
    crop: Literal["random", "center"] = "random"
    hflip: bool = True
    num_workers: int = 0
    shuffle: bool = True
    num_val: int = 8  # held-out pairs in every validation pass
    val_seed: int = 1234  # degradation seeds of the held-out LQ images


@dataclass
class OptimConfig:
    """Two AdamW optimisers (generator, regularizer), constant schedule (docs/reference.md §training)."""

    lr: float = 5e-5
    regularizer_lr: Optional[float] = None  # null = lr
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # clip for each optimiser; 0 disables


@dataclass
class LossConfig:
    """Paper Eq. 4: L = lambda_mse * MSE + lambda_lpips * LPIPS + lambda_vsd * VSD."""

    lambda_mse: float = 1.0
    lambda_lpips: float = 2.0  # lambda1
    lambda_vsd: float = 1.0  # lambda2; 0 disables VSD and the regularizer update


@dataclass
class VSDConfig:
    """Paper Eq. 6-7 with docs/reference.md §training's choices."""

    t_min: int = 20  # VSD timesteps uniform in {t_min, ..., t_max - 1}
    t_max: int = 980
    guidance_scale: float = 7.5  # CFG of the frozen teacher; 1.0 = no guidance (our choice: docs/reference.md)
    # unconditional branch of CFG: the model's null-prompt (" ") embedding, or zeros when the
    # base model has no text encoder (random presets without one)
    uncond: Literal["null", "zeros"] = "null"
    normalizer: Literal["mean_abs", "none"] = "mean_abs"  # w = mean_CHW |z - x0_fix|
    normalizer_eps: float = 1e-8
    reg_t_min: int = 0  # Eq. 7 timesteps uniform in {reg_t_min, ..., reg_t_max - 1}
    reg_t_max: int = 1000


@dataclass
class CheckpointConfig:
    every: int = 1000  # steps between checkpoints (0: only at the end)
    keep: int = 3  # newest checkpoints kept (rotation); 0 keeps all


@dataclass
class LoggingConfig:
    every: int = 10  # steps between TensorBoard / metrics.jsonl records
    val_every: int = 1000  # steps between validation passes (0: only at the end)
    val_at_start: bool = True  # a validation pass before the first step (baseline)
    tensorboard: bool = True
    progress: bool = True  # tqdm bar


@dataclass
class TrainConfig:
    model: OSDHumanConfig = field(default_factory=OSDHumanConfig)
    # start the generator from released / earlier weights (any format `restore --weights`
    # reads; the LoRA layout comes from the files, model.base_model / hfie_encoder_path from here)
    init_weights: Optional[str] = None
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    vsd: VSDConfig = field(default_factory=VSDConfig)
    lpips: LPIPSConfig = field(default_factory=LPIPSConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    seed: int = 0
    max_steps: int = 35000  # optimiser steps (paper: 35k at global batch 16)
    batch_size: int = 4  # PER DEVICE (process) and micro-batch; global = batch * accumulation * processes
    grad_accum_steps: int = 1
    # images per optimiser step over all processes (paper: 16). When set, grad_accum_steps is
    # derived from it: global / (batch_size * processes), which must divide exactly (else an
    # error at start); null = batch_size * grad_accum_steps * processes, whatever that is
    global_batch_size: Optional[int] = None
    # autocast precision; trainable weights always stay float32. (YAML reads a bare `no` as
    # false, which is accepted and means "no".)
    mixed_precision: Union[Literal["no", "fp16", "bf16"], bool] = "bf16"
    # dtype of the FROZEN weights (UNet/VAE/HFIE encoder bases); "auto" = the autocast dtype
    # on GPU, float32 on CPU. The VAE decoder stays float32 under fp16 (overflow).
    frozen_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    gradient_checkpointing: bool = False
    device: Optional[str] = None  # null = accelerate's choice (GPU per process if any); "cpu" forces CPU
    max_nonfinite: int = 10  # stop after this many non-finite steps in a row

    def __post_init__(self) -> None:
        if self.mixed_precision is False:
            self.mixed_precision = "no"
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.batch_size < 1 or self.grad_accum_steps < 1:
            raise ValueError("batch_size and grad_accum_steps must be >= 1")
        if not (0 <= self.vsd.t_min < self.vsd.t_max <= self.model.num_train_timesteps):
            raise ValueError(f"vsd timesteps [{self.vsd.t_min}, {self.vsd.t_max}) outside the schedule")
        if not (0 <= self.vsd.reg_t_min < self.vsd.reg_t_max <= self.model.num_train_timesteps):
            raise ValueError(f"regularizer timesteps [{self.vsd.reg_t_min}, {self.vsd.reg_t_max}) outside the schedule")
