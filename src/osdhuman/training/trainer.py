"""``train(cfg, output_dir)``: the OSDHuman training loop (paper 3.2, 4.2; FACTS 3).

Numbered steps, as a pipeline:
 1. accelerate: process group, device; autocast precision chosen here (not by accelerate).
 2. LPIPS weights (fail at start if missing), model + regularizer adapter, frozen dtype.
 3. data: HQ crops in a resumable order; LQ synthesised on the device per sample seed.
 4. two AdamW optimisers (generator, regularizer), constant schedule.
 5. resume: trainable tensors, optimiser states, RNG, step and data position.
 6. per iteration (seeded from (seed, step, rank), so any step replays exactly):
      generator loss (Eq. 4) -> backward -> clip -> step;
      regularizer loss (Eq. 7) -> backward -> clip -> step.
    Non-finite losses skip the iteration; ``max_nonfinite`` in a row stop the run.
 7. logging (TensorBoard + metrics.jsonl), validation (PSNR/SSIM + LQ|restored|HQ grid),
    checkpoints with rotation, a checkpoint at the end and the weights in ``final/``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from osdhuman.config import save_config, to_dict
from osdhuman.outputs import atomic_write_text
from osdhuman.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint_state,
    optimizer_state_from_files,
    resolve_resume_verified,
    restore_rng,
    rotate_checkpoints,
    save_checkpoint,
)
from osdhuman.training.config import TrainConfig
from osdhuman.training.data import TrainingData, build_training_data
from osdhuman.training.step import OSDHumanTrainStep
from osdhuman.training.update import Updater, autocast, autocast_dtype, build_for_training, make_optimizer
from osdhuman.training.validation import image_grid, psnr_y, save_grid_png, ssim_y

__all__ = ["train", "TrainResult", "TrainingError", "step_seed"]


class TrainingError(RuntimeError):
    """A run that cannot start or has to stop (message says why and what to do)."""


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    final_dir: Optional[Path]
    last_checkpoint: Optional[Path]
    last_metrics: dict[str, float]
    stopped_early: bool = False


def step_seed(seed: int, step: int, rank: int) -> int:
    """The global RNG seed of iteration ``step`` on process ``rank`` (timesteps, noise, VAE sampling)."""
    return (int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729) % (2**63 - 1)


def _trainable_names(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


class _JsonlLog:
    def __init__(self, path: Path, enabled: bool):
        self.f = open(path, "a") if enabled else None

    def write(self, rec: dict) -> None:
        if self.f:
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") and isinstance(module.module, nn.Module) else module


def _check_resume_config(saved: dict, cfg: TrainConfig, path: Path) -> list[str]:
    """Keys that differ between the checkpoint's config and this run's (model keys are fatal)."""
    now = to_dict(cfg)
    diffs = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}{k}.")
        elif a != b:
            diffs.append(prefix[:-1])

    walk(saved, now, "")
    fatal = [d for d in diffs if d.startswith("model.") or d in ("batch_size", "seed", "grad_accum_steps", "global_batch_size")]
    if fatal:
        raise CheckpointError(
            f"{path}: the checkpoint was trained with a different configuration ({', '.join(fatal)}); "
            "resume with the run's saved config.yaml or start a new --output-dir"
        )
    return diffs


def train(
    cfg: TrainConfig,
    output_dir: str | Path,
    *,
    resume: Optional[str] = None,
    on_step_end: Optional[Callable[[int, dict[str, float]], None]] = None,
    allow_world_size_change: bool = False,
) -> TrainResult:
    """Train OSDHuman as configured; write checkpoints, logs and ``final/`` under ``output_dir``.

    ``resume``: None (fresh run; refuses an output dir that already holds checkpoints),
    "latest" (newest checkpoint in output_dir, or a fresh start if there is none), or a
    checkpoint path; a damaged newer checkpoint is skipped for the newest intact one (said
    on stderr). Resuming with another number of processes than the checkpoint's is refused
    unless ``allow_world_size_change``. ``on_step_end(step, metrics)`` is called after every
    iteration on the main process (tests use it to interrupt a run).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    out = Path(output_dir)
    ckpt_root = out / "checkpoints"

    # 1. accelerate (autocast is ours: two optimisers need two grad scalers under fp16)
    if cfg.device not in (None, "cpu", "cuda", "auto"):
        raise TrainingError(
            f"device={cfg.device!r}: use 'cpu' or leave it null; choose GPUs with CUDA_VISIBLE_DEVICES "
            "or `accelerate launch --num_processes N`"
        )
    accelerator = Accelerator(
        cpu=(cfg.device == "cpu"),
        mixed_precision="no",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    device = accelerator.device
    rank, world, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    ac_dtype = autocast_dtype(cfg)
    if ac_dtype == torch.float16 and device.type == "cpu":
        raise TrainingError("mixed_precision=fp16 needs a GPU; use bf16 or no on CPU")

    accum = _grad_accum(cfg, world)
    if is_main:
        print(f"global batch {cfg.batch_size * accum * world} = batch_size {cfg.batch_size} per device "
              f"x {accum} accumulation x {world} process(es)", file=sys.stderr)

    resume_path: Optional[Path] = None
    if resume is not None:
        resume_path, damaged = resolve_resume_verified(resume, ckpt_root)
        for d, why in damaged if is_main else []:
            print(f"osdhuman train: skipped checkpoint {d}: {why}", file=sys.stderr)
    elif list_checkpoints(ckpt_root):
        raise TrainingError(
            f"{out} already holds checkpoints; pass --resume latest to continue that run, "
            "or choose a new --output-dir"
        )

    # 2. LPIPS first (a missing weight file stops the run before anything heavy), then the model
    torch.manual_seed(cfg.seed)
    try:
        model, lpips, gen_params, reg_params = build_for_training(cfg, device)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    names = _trainable_names(model)
    trainable_names = [names[id(p)] for p in gen_params + reg_params]

    # 3. data
    try:
        data: TrainingData = build_training_data(cfg, device=device, rank=rank, world=world)
    except (FileNotFoundError, ValueError) as exc:  # no images, unreadable manifest, ...
        raise TrainingError(str(exc)) from exc

    # 4. optimisers
    opt_g = make_optimizer(gen_params, cfg.optim.lr, cfg)
    opt_r = make_optimizer(reg_params, cfg.optim.regularizer_lr or cfg.optim.lr, cfg) if reg_params else None
    use_scaler = ac_dtype == torch.float16
    scaler_g = torch.amp.GradScaler(device.type, enabled=use_scaler)
    scaler_r = torch.amp.GradScaler(device.type, enabled=use_scaler)

    # 5. resume
    step, position, nonfinite_run = 0, 0, 0
    if resume_path is not None:
        state, tensors, rng = load_checkpoint_state(resume_path)
        _check_world_size(state, world, resume_path, allow_world_size_change)
        diffs = _check_resume_config(state.get("config", {}), cfg, resume_path)
        by_name = dict(model.named_parameters())
        missing = [n for n in trainable_names if n not in tensors]
        if missing:
            raise CheckpointError(f"{resume_path}/trainable.safetensors lacks {missing[:3]} (different model?)")
        with torch.no_grad():
            for n in trainable_names:
                by_name[n].copy_(tensors[n].to(by_name[n].dtype))
        _load_optimizer(opt_g, names, resume_path / "optimizer-generator")
        if opt_r is not None:
            _load_optimizer(opt_r, names, resume_path / "optimizer-regularizer")
        if use_scaler and "scaler" in state:
            scaler_g.load_state_dict(state["scaler"]["generator"])
            scaler_r.load_state_dict(state["scaler"]["regularizer"])
        restore_rng(rng, state["rng"])
        step, position, nonfinite_run = int(state["step"]), int(state["position"]), int(state.get("nonfinite_run", 0))
        if is_main:
            print(f"resumed from {resume_path} at step {step}" + (f" (config differs in: {', '.join(diffs)})" if diffs else ""))

    step_module = OSDHumanTrainStep(model, lpips, cfg.loss, cfg.vsd, sample_latent=cfg.model.latent_mode_train == "sample")
    step_module.set_uncond(_uncond_embedding(model, cfg))
    step_module = accelerator.prepare(step_module)  # moves LPIPS, wraps in DDP when distributed

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        _truncate_metrics(out / "metrics.jsonl", step)  # a resumed run continues the log, no repeated steps
    writer = _tensorboard(out, cfg, purge_step=step if resume_path is not None else None) if is_main else None
    jlog = _JsonlLog(out / "metrics.jsonl", is_main)

    def write_weights(d: Path) -> None:
        _unwrap(step_module).model.save_weights(d)

    def checkpoint() -> Path:
        st: dict[str, Any] = {
            "position": position,
            "nonfinite_run": nonfinite_run,
            "config": to_dict(cfg),
            "world_size": world,
        }
        if use_scaler:
            st["scaler"] = {"generator": scaler_g.state_dict(), "regularizer": scaler_r.state_dict()}
        optimizers = {"generator": opt_g, **({"regularizer": opt_r} if opt_r is not None else {})}
        path = save_checkpoint(
            ckpt_root, step, write_weights=write_weights,
            trainable={n: by for n, by in zip(trainable_names, gen_params + reg_params)},
            optimizers=optimizers, param_names=names, state=st,
        )
        rotate_checkpoints(ckpt_root, cfg.checkpoint.keep)
        return path

    def validate() -> dict[str, float]:
        if data.val is None or not is_main:
            return {}
        m = _unwrap(step_module).model
        was_training = m.training
        m.eval()
        lq, hq = data.val
        restored, lps = [], []
        lp_mod = _unwrap(step_module).lpips
        with torch.no_grad(), autocast(device, ac_dtype):
            for i in range(0, lq.shape[0], cfg.batch_size):
                img = m(lq[i:i + cfg.batch_size], hq=hq[i:i + cfg.batch_size]).image.float()
                restored.append(img)
                if lp_mod is not None:
                    lps.append(lp_mod(img, hq[i:i + cfg.batch_size].float()).float())
        img = torch.cat(restored)  # (N, 3, S, S) in [-1, 1]
        rec = {
            "val/psnr_y": psnr_y(img, hq).mean().item(),
            "val/ssim_y": ssim_y(img, hq).mean().item(),
            "val/mse": torch.nn.functional.mse_loss(img, hq.float()).item(),
        }
        if lps:
            rec["val/lpips"] = torch.cat(lps).mean().item()
            rec["val/mse_lpips"] = cfg.loss.lambda_mse * rec["val/mse"] + cfg.loss.lambda_lpips * rec["val/lpips"]
        grid = image_grid(lq, img, hq)
        save_grid_png(grid, out / "val" / f"step-{step:08d}.png")
        if writer is not None:
            for k, v in rec.items():
                writer.add_scalar(k, v, step)
            writer.add_image("val/lq_restored_hq", grid, step)
        jlog.write({"step": step, **rec})
        m.train(was_training)
        return rec

    # 6. loop
    loader_iter = data.iterator(position)
    metrics: dict[str, float] = {}
    last_ckpt: Optional[Path] = None
    stopped_early = False
    step_module.train()
    if cfg.logging.val_at_start and step == 0:
        metrics.update(validate())
    bar = None
    if is_main and cfg.logging.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    t_last, imgs_since = time.perf_counter(), 0
    interval = _IntervalMean()
    updater = Updater(step_module, opt_g, opt_r, gen_params, reg_params, cfg, device, ac_dtype,
                      accelerator=accelerator, scaler_g=scaler_g, scaler_r=scaler_r)
    try:
        while step < cfg.max_steps:
            torch.manual_seed(step_seed(cfg.seed, step, rank))
            micro = [data.make_pair(next(loader_iter)) for _ in range(accum)]  # [(lq, hq)] on device
            position += cfg.batch_size * accum * world

            metrics, finite = updater.iteration(micro)

            step += 1
            nonfinite_run = 0 if finite else nonfinite_run + 1
            imgs_since += cfg.batch_size * accum * world
            if not finite and is_main:
                print(f"step {step}: non-finite loss or gradient, step skipped ({nonfinite_run} in a row)")
                jlog.write({"step": step, **{k: v for k, v in metrics.items() if math.isfinite(v)}, "nonfinite": True})
            interval.add(metrics)
            if step % max(cfg.logging.every, 1) == 0 or step == 1:
                logged = interval.reduce(accelerator, device)  # mean over the interval and over ranks
                now = time.perf_counter()
                logged["images_per_s"] = imgs_since / max(now - t_last, 1e-9)
                t_last, imgs_since = now, 0
                if is_main:
                    jlog.write({"step": step, **logged})
                    if writer is not None:
                        for k, v in logged.items():
                            writer.add_scalar(k, v, step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss/loss']:.4f}", refresh=False)
            if nonfinite_run >= cfg.max_nonfinite:
                stopped_early = True
                raise TrainingError(
                    f"stopped at step {step}: {nonfinite_run} non-finite losses in a row "
                    f"(max_nonfinite={cfg.max_nonfinite}). Lower optim.lr, use mixed_precision=bf16 "
                    f"instead of fp16, or resume from an earlier checkpoint in {ckpt_root}"
                )
            if cfg.logging.val_every > 0 and step % cfg.logging.val_every == 0:
                metrics.update(validate())
            if cfg.checkpoint.every > 0 and step % cfg.checkpoint.every == 0 and step < cfg.max_steps:
                if is_main:
                    last_ckpt = checkpoint()
                accelerator.wait_for_everyone()
            if on_step_end is not None and is_main:
                on_step_end(step, metrics)
        # 7. end of run: checkpoint + final weights
        final_dir = None
        if is_main:
            if not (cfg.logging.val_every > 0 and step % cfg.logging.val_every == 0):
                metrics.update(validate())
            last_ckpt = checkpoint()
            final_dir = out / "final"
            _atomic_dir(final_dir, write_weights)
    finally:
        if bar is not None:
            bar.close()
        jlog.close()
        if writer is not None:
            writer.close()

    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(out, step, final_dir, last_ckpt, metrics, stopped_early)


def _grad_accum(cfg: TrainConfig, world: int) -> int:
    """Gradient accumulation steps: derived from global_batch_size when it is set."""
    if cfg.global_batch_size is None:
        return cfg.grad_accum_steps
    per_step = cfg.batch_size * world
    if cfg.global_batch_size % per_step:
        raise TrainingError(
            f"global_batch_size={cfg.global_batch_size} is not a multiple of batch_size {cfg.batch_size} x "
            f"{world} process(es) = {per_step}; change batch_size, global_batch_size or the process count"
        )
    accum = cfg.global_batch_size // per_step
    if cfg.grad_accum_steps not in (1, accum):
        raise TrainingError(
            f"grad_accum_steps={cfg.grad_accum_steps} contradicts global_batch_size={cfg.global_batch_size} "
            f"(which needs {accum} on {world} process(es)); set only one of them"
        )
    return accum


def _check_world_size(state: dict, world: int, path: Path, allowed: bool) -> None:
    saved = state.get("world_size")
    if saved is None or int(saved) == world:
        return
    if not allowed:
        raise CheckpointError(
            f"{path}: saved by {saved} process(es), this run has {world}; the data order and global batch would "
            f"change. Launch {saved} processes, or pass --allow-world-size-change to continue anyway"
        )
    print(f"osdhuman train: resuming a {saved}-process checkpoint on {world} process(es) (--allow-world-size-change)",
          file=sys.stderr)


def _load_optimizer(opt, names, stem: Path) -> None:
    """optimizer_state_from_files with any damage reported as one CheckpointError naming the file."""
    try:
        optimizer_state_from_files(opt, names, stem)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in json, safetensors or torch
        raise CheckpointError(f"{stem}.json / .safetensors: cannot load optimizer state ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]})") from None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after ``step`` (written by a run killed after its last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by the kill
        if int(rec.get("step", 0)) <= step:
            keep.append(line + "\n")
    atomic_write_text(path, "".join(keep))


class _IntervalMean:
    """Running sums of the finite metrics since the last log record."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v) and not k.startswith("val/"):
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
                self.counts[k] = self.counts.get(k, 0) + 1

    def reduce(self, accelerator, device) -> dict[str, float]:
        """Interval means, averaged over processes (every rank calls this at the same step)."""
        keys = sorted(self.sums)
        local = torch.tensor([[self.sums[k], self.counts[k]] for k in keys], dtype=torch.float64, device=device)
        if accelerator.num_processes > 1 and keys:
            local = accelerator.reduce(local.float(), reduction="sum").double()
        self.sums, self.counts = {}, {}
        return {k: float(s / max(c, 1)) for k, (s, c) in zip(keys, local.tolist())}


def _atomic_dir(final: Path, write: Callable[[Path], Any]) -> None:
    import os
    import shutil

    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def _tensorboard(out: Path, cfg: TrainConfig, purge_step: Optional[int] = None):
    """SummaryWriter on out/tb; after a resume ``purge_step`` makes TensorBoard drop the killed
    run's events after the checkpoint, so the curves continue without repeated steps."""
    if not cfg.logging.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: metrics.jsonl still records everything
        return None
    return SummaryWriter(log_dir=str(out / "tb"), purge_step=purge_step)


def _uncond_embedding(model: nn.Module, cfg: TrainConfig) -> Optional[torch.Tensor]:
    """CFG's unconditional branch (FACTS 3): the null-prompt embedding, or zeros."""
    if cfg.loss.lambda_vsd == 0 or cfg.vsd.guidance_scale == 1.0:
        return None
    if cfg.vsd.uncond == "null":
        emb = getattr(model, "null_prompt_embeds", None)
        if emb is None:
            raise TrainingError(
                "vsd.uncond=null needs the null-prompt embedding, but the base model has no text "
                "encoder to compute it; use a base-model folder with text_encoder/ and tokenizer/, "
                "set vsd.uncond=zeros, or vsd.guidance_scale=1.0"
            )
        return emb
    d = getattr(model, "cross_attention_dim", None) or _cross_dim(model)
    return torch.zeros(1, cfg.model.hfie_query_len, d)  # (1, 77, D)


def _cross_dim(model: nn.Module) -> int:
    unet = getattr(model, "unet", None)
    if unet is not None and hasattr(unet, "config"):
        return int(unet.config.cross_attention_dim)
    raise TrainingError("cannot tell the prompt width of this model for vsd.uncond=zeros")
