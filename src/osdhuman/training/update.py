"""One training iteration (paper 3.2, docs/reference.md §training): the generator update then the regularizer update.

    generator loss (Eq. 4) -> backward -> clip -> AdamW step
    regularizer loss (Eq. 7, on the detached latents) -> backward -> clip -> AdamW step

With gradient accumulation each phase runs over all micro-batches before its step (DDP
gradient sync only on the last one). A non-finite loss or gradient norm on any process
skips the step on every process. Used by ``train`` and by ``benchmarks/train_step.py``.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn

from osdhuman.models import build_osdhuman
from osdhuman.models.pretrained import load_pretrained
from osdhuman.training.config import TrainConfig
from osdhuman.training.lpips import build_lpips

__all__ = ["Updater", "autocast", "build_for_training"]


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _grad_norm_and_clip(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if max_norm and max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(grads, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in grads])


def _all_ranks(accelerator, flag: bool) -> bool:
    if accelerator is None or accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() == accelerator.num_processes)


@dataclass
class Updater:
    """Holds what one iteration touches; ``iteration(micro)`` runs it and returns (metrics, finite)."""

    step_module: nn.Module  # OSDHumanTrainStep, possibly DDP-wrapped
    opt_g: torch.optim.Optimizer
    opt_r: torch.optim.Optimizer | None
    gen_params: list[nn.Parameter]
    reg_params: list[nn.Parameter]
    cfg: TrainConfig
    device: torch.device
    ac_dtype: torch.dtype | None
    accelerator: object = None
    scaler_g: torch.amp.GradScaler | None = None
    scaler_r: torch.amp.GradScaler | None = None

    def __post_init__(self) -> None:
        fp16 = self.ac_dtype == torch.float16
        self.use_scaler = fp16
        if self.scaler_g is None:
            self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=fp16)
        if self.scaler_r is None:
            self.scaler_r = torch.amp.GradScaler(self.device.type, enabled=fp16)

    def _sync(self, k: int, n: int):
        if k == n - 1 or self.accelerator is None:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.step_module)

    def iteration(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[dict[str, float], bool]:
        """micro: [(lq, hq)] micro-batches on the device, (B, 3, H, W) in [-1, 1]."""
        n, cfg = len(micro), self.cfg
        # 1. generator: Eq. 4 -> backward -> clip -> step
        keys = ("loss", "mse", "lpips", "vsd", "mse_lpips")
        sums = torch.zeros(len(keys), device=self.device)
        latents = []
        for k, (lq, hq) in enumerate(micro):
            with self._sync(k, n):
                with autocast(self.device, self.ac_dtype):
                    o = self.step_module("generator", lq, hq)
                self.scaler_g.scale(o["loss"] / n).backward()
            sums += torch.stack([o[key].detach().float() for key in keys]) / n
            latents.append((o["latent"], o["prompt"]))
        vals = sums.tolist()  # one device sync
        finite = _all_ranks(self.accelerator, all(map(_isfinite, vals)))
        gnorm_g = float("nan")
        if finite:
            self.scaler_g.unscale_(self.opt_g)
            gnorm_g = float(_grad_norm_and_clip(self.gen_params, cfg.optim.max_grad_norm))
            finite = self.use_scaler or _isfinite(gnorm_g)  # the fp16 scaler skips inf steps itself
        if finite:
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        self.opt_g.zero_grad(set_to_none=True)

        # 2. regularizer: Eq. 7 -> backward -> clip -> step, on the detached latents and prompts
        reg_loss, gnorm_r = float("nan"), float("nan")
        if self.opt_r is not None and finite:
            rsum = torch.zeros((), device=self.device)
            for k, (z, p) in enumerate(latents):
                with self._sync(k, n):
                    with autocast(self.device, self.ac_dtype):
                        r = self.step_module("regularizer", z, p)
                    self.scaler_r.scale(r["loss"] / n).backward()
                rsum += r["reg"].float() / n
            reg_loss = float(rsum)
            rfinite = _all_ranks(self.accelerator, _isfinite(reg_loss))
            if rfinite:
                self.scaler_r.unscale_(self.opt_r)
                gnorm_r = float(_grad_norm_and_clip(self.reg_params, cfg.optim.max_grad_norm))
                rfinite = self.use_scaler or _isfinite(gnorm_r)
            if rfinite:
                self.scaler_r.step(self.opt_r)
                self.scaler_r.update()
            else:
                finite = False
            self.opt_r.zero_grad(set_to_none=True)
        metrics = {**{f"loss/{k}": v for k, v in zip(keys, vals)}, "loss/regularizer": reg_loss,
                   "grad_norm/generator": gnorm_g, "grad_norm/regularizer": gnorm_r,
                   "lr/generator": self.opt_g.param_groups[0]["lr"], "nonfinite": float(not finite)}
        if self.opt_r is not None:
            metrics["lr/regularizer"] = self.opt_r.param_groups[0]["lr"]
        return metrics, finite


def _isfinite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(cfg: TrainConfig) -> torch.dtype | None:
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.mixed_precision]


def cast_frozen(model: nn.Module, cfg: TrainConfig, device: torch.device) -> None:
    """Frozen weights to ``frozen_dtype``; trainable ones stay float32 (the VAE decoder too under fp16)."""
    name = cfg.frozen_dtype
    ac = autocast_dtype(cfg)
    if name == "auto":
        dtype = ac if (ac is not None and device.type != "cpu") else torch.float32
    else:
        dtype = _DTYPES[name]
    if dtype == torch.float32:
        return
    if ac is None:
        raise ValueError(f"frozen_dtype={name} needs mixed_precision bf16 or fp16 (LoRA weights stay float32)")
    for pname, p in model.named_parameters():
        if p.requires_grad:
            continue
        if dtype == torch.float16 and (".decoder." in f".{pname}" or "post_quant_conv" in pname):
            continue  # an fp16 VAE decoder overflows
        p.data = p.data.to(dtype)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """The model's own switch if it has one, else diffusers' on every sub-model that supports it."""
    fn = getattr(model, "enable_gradient_checkpointing", None)
    if callable(fn):
        fn()
        return
    done = False
    for sub in model.modules():
        if sub is not model and getattr(sub, "_supports_gradient_checkpointing", False) and hasattr(sub, "enable_gradient_checkpointing"):
            sub.enable_gradient_checkpointing()
            done = True
    if not done:
        raise ValueError("gradient_checkpointing=true but this model exposes no way to enable it")


def initial_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``cfg.init_weights`` (any supported format), on cfg.model's frozen bases."""

    m = cfg.model
    model, summary = load_pretrained(cfg.init_weights, base_model=m.base_model, hfie_encoder_path=m.hfie_encoder_path,
                                     compute_null_prompt=m.compute_null_prompt)
    print(f"osdhuman train: init {summary}", file=sys.stderr)
    return model


def build_for_training(cfg: TrainConfig, device: torch.device):
    """(model, lpips, generator params, regularizer params): the model with its regularizer
    adapter on ``device``, frozen dtype applied, trainable tensors in float32."""

    lpips = build_lpips(cfg.lpips) if cfg.loss.lambda_lpips != 0 else None  # fails fast on missing weights
    model = initial_model(cfg) if cfg.init_weights else build_osdhuman(cfg.model)
    if cfg.loss.lambda_vsd != 0:
        model.add_regularizer()
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.to(device)
    cast_frozen(model, cfg, device)
    gen = [p for p in model.generator_parameters() if p.requires_grad]
    reg = [p for p in model.regularizer_parameters() if p.requires_grad] if cfg.loss.lambda_vsd != 0 else []
    for p in gen + reg:
        if p.dtype != torch.float32:
            p.data = p.data.float()
    if lpips is not None:
        lpips.to(device)
    return model, lpips, gen, reg


def make_optimizer(params: list[nn.Parameter], lr: float, cfg: TrainConfig) -> torch.optim.AdamW:
    o = cfg.optim
    return torch.optim.AdamW(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)
