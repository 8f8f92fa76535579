"""``train(cfg, output_dir)``: the OSDHuman training loop (paper 3.2, 4.2; docs/reference.md §training).

Numbered steps, as a pipeline (one function each):
 1. ``_start``: accelerate (process group, device; autocast precision is ours), the global
    batch, which checkpoint to resume.
 2. ``_build``: LPIPS weights (fail at start if missing), model + regularizer adapter, data
    (HQ crops in a resumable order; LQ synthesised on the device per sample seed), two AdamW
    optimisers (generator, regularizer; constant schedule).
 3. ``_resume``: trainable tensors, optimiser states, RNG, step and data position.
 4. ``_open_logs``: config.yaml, metrics.jsonl, TensorBoard, skipped.jsonl (continuing after a resume).
 5. ``_loop``, per iteration (seeded from (seed, step, rank), so any step replays exactly):
      generator loss (Eq. 4) -> backward -> clip -> step;
      regularizer loss (Eq. 7) -> backward -> clip -> step.
    Non-finite losses skip the iteration; ``max_nonfinite`` in a row stop the run. Logging
    (interval means over ranks), validation (PSNR/SSIM + LQ|restored|HQ grid), checkpoints.
 6. ``_finish``: a last validation, a checkpoint at the end and the weights in ``final/``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from osdhuman.config import save_config, to_dict
from osdhuman.outputs import atomic_dir
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
from osdhuman.training.run_logs import (
    IntervalMean,
    JsonlLog,
    SkippedLog,
    tensorboard,
    truncate_metrics,
)
from osdhuman.training.step import OSDHumanTrainStep
from osdhuman.training.update import (
    Updater,
    autocast,
    autocast_dtype,
    build_for_training,
    make_optimizer,
)
from osdhuman.training.validation import image_grid, psnr_y, save_grid_png, ssim_y

# accelerate is imported inside _start (~1 s): importing osdhuman.training does not load it.
if TYPE_CHECKING:  # annotations only: accelerate and TensorBoard are imported when a run starts
    from accelerate import Accelerator
    from torch.utils.tensorboard import SummaryWriter

    from osdhuman.models import OSDHuman
    from osdhuman.training.lpips import LPIPS

__all__ = ["TrainResult", "TrainingError", "step_seed", "train"]


class TrainingError(RuntimeError):
    """A run that cannot start or has to stop (message says why and what to do)."""


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    final_dir: Path | None
    last_checkpoint: Path | None
    last_metrics: dict[str, float]


def step_seed(seed: int, step: int, rank: int) -> int:
    """The global RNG seed of iteration ``step`` on process ``rank`` (timesteps, noise, VAE sampling)."""
    return (int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729) % (2**63 - 1)


def _trainable_names(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


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


@dataclass(frozen=True)
class _Context:
    """1. What the run is (fixed once accelerate has started)."""

    cfg: TrainConfig
    out: Path
    accelerator: Accelerator
    device: torch.device
    rank: int
    world: int
    is_main: bool
    ac_dtype: torch.dtype | None
    accum: int  # gradient accumulation steps

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    @property
    def use_scaler(self) -> bool:
        return self.ac_dtype == torch.float16

    @property
    def images_per_step(self) -> int:
        return self.cfg.batch_size * self.accum * self.world


@dataclass
class _Parts:
    """2. What the run trains with: model, LPIPS, data, parameters and their optimisers."""

    model: OSDHuman
    lpips: LPIPS | None
    gen_params: list[nn.Parameter]
    reg_params: list[nn.Parameter]
    names: dict[int, str]  # id(parameter) -> its name in the model
    data: TrainingData
    opt_g: torch.optim.Optimizer
    opt_r: torch.optim.Optimizer | None  # None without a regularizer adapter
    scaler_g: torch.amp.GradScaler
    scaler_r: torch.amp.GradScaler
    step_module: nn.Module | None = None  # the train step wrapped by accelerate (DDP when distributed)

    @property
    def trainable(self) -> dict[str, nn.Parameter]:
        return {self.names[id(p)]: p for p in self.gen_params + self.reg_params}


@dataclass
class _Counters:
    """3. Where the run is: saved in every checkpoint, restored by a resume."""

    step: int = 0
    position: int = 0  # images consumed from the data order
    nonfinite_run: int = 0  # non-finite iterations in a row


@dataclass
class _Logs:
    """4. Where the run writes as it goes (TensorBoard on process 0 only)."""

    jlog: JsonlLog
    skipped: SkippedLog
    writer: SummaryWriter | None = None

    def scalars(self, record: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in record.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.jlog.close()
        if self.writer is not None:
            self.writer.close()


def train(
    cfg: TrainConfig,
    output_dir: str | Path,
    *,
    resume: str | None = None,
    on_step_end: Callable[[int, dict[str, float]], None] | None = None,
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
    ctx, resume_path = _start(cfg, Path(output_dir), resume)
    parts = _build(ctx)
    at = _Counters()
    if resume_path is not None:
        at = _resume(ctx, parts, resume_path, allow_world_size_change)
    parts.step_module = _step_module(ctx, parts)
    logs = _open_logs(ctx, parts.data, at.step, resumed=resume_path is not None)
    final_dir, last_ckpt, metrics = None, None, {}
    try:
        metrics, last_ckpt = _loop(ctx, parts, logs, at, on_step_end)
        if ctx.is_main:
            metrics, last_ckpt, final_dir = _finish(ctx, parts, logs, at, metrics)
    finally:
        logs.close()
    ctx.accelerator.wait_for_everyone()
    ctx.accelerator.end_training()
    return TrainResult(ctx.out, at.step, final_dir, last_ckpt, metrics)


def _start(cfg: TrainConfig, out: Path, resume: str | None) -> tuple[_Context, Path | None]:
    """1. accelerate (autocast is ours: two optimisers need two grad scalers under fp16) and
    the checkpoint to resume from (None: a fresh run)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

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
    ac_dtype = autocast_dtype(cfg)
    if ac_dtype == torch.float16 and device.type == "cpu":
        raise TrainingError("mixed_precision=fp16 needs a GPU; use bf16 or no on CPU")
    world = accelerator.num_processes
    ctx = _Context(cfg, out, accelerator, device, accelerator.process_index, world, accelerator.is_main_process,
                   ac_dtype, _grad_accum(cfg, world))
    if ctx.is_main:
        print(f"global batch {ctx.images_per_step} = batch_size {cfg.batch_size} per device "
              f"x {ctx.accum} accumulation x {world} process(es)", file=sys.stderr)
    if resume is None:
        if list_checkpoints(ctx.ckpt_root):
            raise TrainingError(
                f"{out} already holds checkpoints; pass --resume latest to continue that run, "
                "or choose a new --output-dir"
            )
        return ctx, None
    path, damaged = resolve_resume_verified(resume, ctx.ckpt_root)
    for d, why in damaged if ctx.is_main else []:
        print(f"osdhuman train: skipped checkpoint {d}: {why}", file=sys.stderr)
    return ctx, path


def _build(ctx: _Context) -> _Parts:
    """2. LPIPS first (a missing weight file stops the run before anything heavy), the model, data, optimisers."""
    cfg, device = ctx.cfg, ctx.device
    torch.manual_seed(cfg.seed)
    try:
        model, lpips, gen_params, reg_params = build_for_training(cfg, device)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    try:
        data = build_training_data(cfg, device=device, rank=ctx.rank, world=ctx.world)
    except (FileNotFoundError, ValueError) as exc:  # no images, unreadable manifest, ...
        raise TrainingError(str(exc)) from exc
    opt_r = make_optimizer(reg_params, cfg.optim.regularizer_lr or cfg.optim.lr, cfg) if reg_params else None
    return _Parts(
        model, lpips, gen_params, reg_params, _trainable_names(model), data,
        opt_g=make_optimizer(gen_params, cfg.optim.lr, cfg), opt_r=opt_r,
        scaler_g=torch.amp.GradScaler(device.type, enabled=ctx.use_scaler),
        scaler_r=torch.amp.GradScaler(device.type, enabled=ctx.use_scaler),
    )


def _resume(ctx: _Context, parts: _Parts, path: Path, allow_world_size_change: bool) -> _Counters:
    """3. trainable tensors, optimiser states, grad scalers, RNG; returns the step, data position
    and non-finite count the checkpoint was saved at."""
    state, tensors, rng = load_checkpoint_state(path)
    _check_world_size(state, ctx.world, path, allow_world_size_change)
    diffs = _check_resume_config(state.get("config", {}), ctx.cfg, path)
    trainable = parts.trainable
    missing = [n for n in trainable if n not in tensors]
    if missing:
        raise CheckpointError(f"{path}/trainable.safetensors lacks {missing[:3]} (different model?)")
    with torch.no_grad():
        for n, p in trainable.items():
            p.copy_(tensors[n].to(p.dtype))
    _load_optimizer(parts.opt_g, parts.names, path / "optimizer-generator")
    if parts.opt_r is not None:
        _load_optimizer(parts.opt_r, parts.names, path / "optimizer-regularizer")
    if ctx.use_scaler and "scaler" in state:
        parts.scaler_g.load_state_dict(state["scaler"]["generator"])
        parts.scaler_r.load_state_dict(state["scaler"]["regularizer"])
    restore_rng(rng, state["rng"])
    at = _Counters(int(state["step"]), int(state["position"]), int(state.get("nonfinite_run", 0)))
    if ctx.is_main:
        print(f"resumed from {path} at step {at.step}" + (f" (config differs in: {', '.join(diffs)})" if diffs else ""))
    return at


def _step_module(ctx: _Context, parts: _Parts) -> nn.Module:
    """The train step (generator and regularizer losses), prepared by accelerate: LPIPS moved
    to the device, wrapped in DDP when distributed."""
    cfg = ctx.cfg
    module = OSDHumanTrainStep(parts.model, parts.lpips, cfg.loss, cfg.vsd,
                               sample_latent=cfg.model.latent_mode_train == "sample")
    module.set_uncond(_uncond_embedding(parts.model, cfg))
    return ctx.accelerator.prepare(module)


def _open_logs(ctx: _Context, data: TrainingData, step: int, resumed: bool) -> _Logs:
    """4. config.yaml, metrics.jsonl and TensorBoard continue from the checkpoint's step; the
    listing's left-out entries are reported once."""
    out = ctx.out
    writer = None
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(ctx.cfg, out / "config.yaml")
        truncate_metrics(out / "metrics.jsonl", step)  # a resumed run continues the log, no repeated steps
        # TensorBoard hides the events at steps >= purge_step: the killed run's steps after the
        # checkpoint's, which this run logs again (the checkpoint's own step is kept)
        writer = tensorboard(out, ctx.cfg.logging.tensorboard, purge_step=step + 1 if resumed else None)
    logs = _Logs(JsonlLog(out / "metrics.jsonl", ctx.is_main), SkippedLog(out / "skipped.jsonl"), writer)
    if ctx.is_main:
        for file, reason in data.listing_skipped:
            logs.skipped.add(file, reason)
        logs.skipped.add_batch({"skipped": data.val_skipped})
    return logs


def _checkpoint(ctx: _Context, parts: _Parts, at: _Counters) -> Path:
    """A resumable checkpoint of this step (process 0), the oldest rotated away."""
    st: dict[str, Any] = {
        "position": at.position,
        "nonfinite_run": at.nonfinite_run,
        "config": to_dict(ctx.cfg),
        "world_size": ctx.world,
    }
    if ctx.use_scaler:
        st["scaler"] = {"generator": parts.scaler_g.state_dict(), "regularizer": parts.scaler_r.state_dict()}
    optimizers = {"generator": parts.opt_g, **({"regularizer": parts.opt_r} if parts.opt_r is not None else {})}
    model = _unwrap(parts.step_module).model
    path = save_checkpoint(
        ctx.ckpt_root, at.step, write_weights=model.save_weights, trainable=parts.trainable,
        optimizers=optimizers, param_names=parts.names, state=st,
    )
    rotate_checkpoints(ctx.ckpt_root, ctx.cfg.checkpoint.keep)
    return path


@torch.no_grad()
def _restore_val(ctx: _Context, step_module: nn.Module, lq: torch.Tensor,
                 hq: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The validation LQ restored in batches (N, 3, S, S) in [-1, 1], and LPIPS per batch."""
    m, lp_mod, bs = _unwrap(step_module).model, _unwrap(step_module).lpips, ctx.cfg.batch_size
    restored, lps = [], []
    with autocast(ctx.device, ctx.ac_dtype):
        for i in range(0, lq.shape[0], bs):
            img = m(lq[i:i + bs], hq=hq[i:i + bs]).image.float()
            restored.append(img)
            if lp_mod is not None:
                lps.append(lp_mod(img, hq[i:i + bs].float()).float())
    return torch.cat(restored), lps


def _validate(ctx: _Context, step_module: nn.Module, val: tuple[torch.Tensor, torch.Tensor] | None,
              logs: _Logs, step: int) -> dict[str, float]:
    """PSNR-Y / SSIM-Y / MSE (/ LPIPS) on the fixed validation pairs and an LQ|restored|HQ grid."""
    if val is None or not ctx.is_main:
        return {}
    cfg, m = ctx.cfg, _unwrap(step_module).model
    was_training = m.training
    m.eval()
    lq, hq = val
    img, lps = _restore_val(ctx, step_module, lq, hq)
    rec = {
        "val/psnr_y": psnr_y(img, hq).mean().item(),
        "val/ssim_y": ssim_y(img, hq).mean().item(),
        "val/mse": torch.nn.functional.mse_loss(img, hq.float()).item(),
    }
    if lps:
        rec["val/lpips"] = torch.cat(lps).mean().item()
        rec["val/mse_lpips"] = cfg.loss.lambda_mse * rec["val/mse"] + cfg.loss.lambda_lpips * rec["val/lpips"]
    grid = image_grid(lq, img, hq)
    save_grid_png(grid, ctx.out / "val" / f"step-{step:08d}.png")
    logs.scalars(rec, step)
    if logs.writer is not None:
        logs.writer.add_image("val/lq_restored_hq", grid, step)
    logs.jlog.write({"step": step, **rec})
    m.train(was_training)
    return rec


def _next_micro_batches(ctx: _Context, data: TrainingData, skipped: SkippedLog, at: _Counters,
                        loader_iter) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``accum`` (lq, hq) pairs on the device; files the loader had to skip are reported."""
    micro = []
    for _ in range(ctx.accum):
        batch = next(loader_iter)
        skipped.add_batch(batch)
        micro.append(data.make_pair(batch))
    at.position += ctx.images_per_step
    return micro


def _log(ctx: _Context, logs: _Logs, step: int, interval: IntervalMean, clock: dict) -> None:
    logged = interval.reduce(ctx.accelerator, ctx.device)  # mean over the interval and over ranks
    now = time.perf_counter()
    logged["images_per_s"] = clock["images"] / max(now - clock["t"], 1e-9)
    clock.update(t=now, images=0)
    if ctx.is_main:
        logs.jlog.write({"step": step, **logged})
        logs.scalars(logged, step)


def _after_iteration(ctx: _Context, logs: _Logs, at: _Counters, metrics: dict, finite: bool) -> None:
    """Count a non-finite run; stop with a clear error after ``max_nonfinite`` in a row."""
    at.nonfinite_run = 0 if finite else at.nonfinite_run + 1
    if not finite and ctx.is_main:
        print(f"step {at.step}: non-finite loss or gradient, step skipped ({at.nonfinite_run} in a row)")
        logs.jlog.write({"step": at.step, **{k: v for k, v in metrics.items() if math.isfinite(v)}, "nonfinite": True})
    if at.nonfinite_run >= ctx.cfg.max_nonfinite:
        raise TrainingError(
            f"stopped at step {at.step}: {at.nonfinite_run} non-finite losses in a row "
            f"(max_nonfinite={ctx.cfg.max_nonfinite}). Lower optim.lr, use mixed_precision=bf16 "
            f"instead of fp16, or resume from an earlier checkpoint in {ctx.ckpt_root}"
        )


def _progress_bar(ctx: _Context, step: int):
    if not (ctx.is_main and ctx.cfg.logging.progress):
        return None

    return tqdm(total=ctx.cfg.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True)


def _updater(ctx: _Context, parts: _Parts) -> Updater:
    return Updater(parts.step_module, parts.opt_g, parts.opt_r, parts.gen_params, parts.reg_params, ctx.cfg,
                   ctx.device, ctx.ac_dtype, accelerator=ctx.accelerator, scaler_g=parts.scaler_g,
                   scaler_r=parts.scaler_r)


def _loop(ctx: _Context, parts: _Parts, logs: _Logs, at: _Counters,
          on_step_end) -> tuple[dict[str, float], Path | None]:
    """5. iterations up to max_steps: (last metrics, last checkpoint)."""
    cfg, step_module = ctx.cfg, parts.step_module
    loader_iter = parts.data.iterator(at.position)
    metrics: dict[str, float] = {}
    last_ckpt: Path | None = None
    step_module.train()
    if cfg.logging.val_at_start and at.step == 0:
        metrics.update(_validate(ctx, step_module, parts.data.val, logs, at.step))
    bar = _progress_bar(ctx, at.step)
    clock = {"t": time.perf_counter(), "images": 0}
    interval = IntervalMean()
    updater = _updater(ctx, parts)
    try:
        while at.step < cfg.max_steps:
            torch.manual_seed(step_seed(cfg.seed, at.step, ctx.rank))
            metrics, finite = updater.iteration(_next_micro_batches(ctx, parts.data, logs.skipped, at, loader_iter))
            at.step += 1
            clock["images"] += ctx.images_per_step
            interval.add(metrics)
            if at.step % max(cfg.logging.every, 1) == 0 or at.step == 1:
                _log(ctx, logs, at.step, interval, clock)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss/loss']:.4f}", refresh=False)
            _after_iteration(ctx, logs, at, metrics, finite)
            if cfg.logging.val_every > 0 and at.step % cfg.logging.val_every == 0:
                metrics.update(_validate(ctx, step_module, parts.data.val, logs, at.step))
            if cfg.checkpoint.every > 0 and at.step % cfg.checkpoint.every == 0 and at.step < cfg.max_steps:
                if ctx.is_main:
                    last_ckpt = _checkpoint(ctx, parts, at)
                ctx.accelerator.wait_for_everyone()
            if on_step_end is not None and ctx.is_main:
                on_step_end(at.step, metrics)
    finally:
        if bar is not None:
            bar.close()
    return metrics, last_ckpt


def _finish(ctx: _Context, parts: _Parts, logs: _Logs, at: _Counters, metrics: dict) -> tuple[dict, Path, Path]:
    """6. (process 0) a last validation unless this step had one, a checkpoint, ``final/``."""
    cfg = ctx.cfg
    if not (cfg.logging.val_every > 0 and at.step % cfg.logging.val_every == 0):
        metrics.update(_validate(ctx, parts.step_module, parts.data.val, logs, at.step))
    last_ckpt = _checkpoint(ctx, parts, at)
    final_dir = ctx.out / "final"
    atomic_dir(final_dir, _unwrap(parts.step_module).model.save_weights)
    return metrics, last_ckpt, final_dir


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


def _uncond_embedding(model: nn.Module, cfg: TrainConfig) -> torch.Tensor | None:
    """CFG's unconditional branch (docs/reference.md §training): the null-prompt embedding, or zeros."""
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
