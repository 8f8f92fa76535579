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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

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


@dataclass
class _Run:
    """Everything one training run holds between its phases."""

    cfg: TrainConfig
    out: Path
    accelerator: Accelerator
    device: torch.device
    rank: int
    world: int
    is_main: bool
    ac_dtype: torch.dtype | None
    accum: int
    resume_path: Path | None = None
    # 2. _build
    model: OSDHuman | None = None
    lpips: LPIPS | None = None
    gen_params: list[nn.Parameter] = field(default_factory=list)
    reg_params: list[nn.Parameter] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # id(parameter) -> its name in the model
    trainable_names: list[str] = field(default_factory=list)
    data: TrainingData | None = None
    opt_g: torch.optim.Optimizer | None = None
    opt_r: torch.optim.Optimizer | None = None  # None without a regularizer adapter
    scaler_g: torch.amp.GradScaler | None = None
    scaler_r: torch.amp.GradScaler | None = None
    # _prepare_step: the train step, wrapped by accelerate (DDP when distributed)
    step_module: nn.Module | None = None
    # 4. _open_logs
    writer: SummaryWriter | None = None
    jlog: JsonlLog | None = None
    skipped: SkippedLog | None = None
    # 5. _loop
    step: int = 0
    position: int = 0
    nonfinite_run: int = 0

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    @property
    def use_scaler(self) -> bool:
        return self.ac_dtype == torch.float16

    @property
    def images_per_step(self) -> int:
        return self.cfg.batch_size * self.accum * self.world


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
    run = _start(cfg, Path(output_dir), resume)
    _build(run)
    if run.resume_path is not None:
        _resume(run, allow_world_size_change)
    _prepare_step(run)
    _open_logs(run)
    final_dir, last_ckpt, metrics = None, None, {}
    try:
        metrics, last_ckpt = _loop(run, on_step_end)
        if run.is_main:
            metrics, last_ckpt, final_dir = _finish(run, metrics)
    finally:
        _close_logs(run)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return TrainResult(run.out, run.step, final_dir, last_ckpt, metrics)


def _start(cfg: TrainConfig, out: Path, resume: str | None) -> _Run:
    """1. accelerate (autocast is ours: two optimisers need two grad scalers under fp16)."""
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
    run = _Run(cfg, out, accelerator, device, accelerator.process_index, world, accelerator.is_main_process,
               ac_dtype, _grad_accum(cfg, world))
    if run.is_main:
        print(f"global batch {run.images_per_step} = batch_size {cfg.batch_size} per device "
              f"x {run.accum} accumulation x {world} process(es)", file=sys.stderr)
    if resume is not None:
        run.resume_path, damaged = resolve_resume_verified(resume, run.ckpt_root)
        for d, why in damaged if run.is_main else []:
            print(f"osdhuman train: skipped checkpoint {d}: {why}", file=sys.stderr)
    elif list_checkpoints(run.ckpt_root):
        raise TrainingError(
            f"{out} already holds checkpoints; pass --resume latest to continue that run, "
            "or choose a new --output-dir"
        )
    return run


def _build(run: _Run) -> None:
    """2. LPIPS first (a missing weight file stops the run before anything heavy), the model, data, optimisers."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed)
    try:
        run.model, run.lpips, run.gen_params, run.reg_params = build_for_training(cfg, run.device)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    run.names = _trainable_names(run.model)
    run.trainable_names = [run.names[id(p)] for p in run.gen_params + run.reg_params]
    try:
        run.data = build_training_data(cfg, device=run.device, rank=run.rank, world=run.world)
    except (FileNotFoundError, ValueError) as exc:  # no images, unreadable manifest, ...
        raise TrainingError(str(exc)) from exc
    run.opt_g = make_optimizer(run.gen_params, cfg.optim.lr, cfg)
    run.opt_r = make_optimizer(run.reg_params, cfg.optim.regularizer_lr or cfg.optim.lr, cfg) if run.reg_params else None
    run.scaler_g = torch.amp.GradScaler(run.device.type, enabled=run.use_scaler)
    run.scaler_r = torch.amp.GradScaler(run.device.type, enabled=run.use_scaler)


def _resume(run: _Run, allow_world_size_change: bool) -> None:
    """3. trainable tensors, optimiser states, grad scalers, RNG, step and data position."""
    path = run.resume_path
    state, tensors, rng = load_checkpoint_state(path)
    _check_world_size(state, run.world, path, allow_world_size_change)
    diffs = _check_resume_config(state.get("config", {}), run.cfg, path)
    missing = [n for n in run.trainable_names if n not in tensors]
    if missing:
        raise CheckpointError(f"{path}/trainable.safetensors lacks {missing[:3]} (different model?)")
    by_name = dict(run.model.named_parameters())
    with torch.no_grad():
        for n in run.trainable_names:
            by_name[n].copy_(tensors[n].to(by_name[n].dtype))
    _load_optimizer(run.opt_g, run.names, path / "optimizer-generator")
    if run.opt_r is not None:
        _load_optimizer(run.opt_r, run.names, path / "optimizer-regularizer")
    if run.use_scaler and "scaler" in state:
        run.scaler_g.load_state_dict(state["scaler"]["generator"])
        run.scaler_r.load_state_dict(state["scaler"]["regularizer"])
    restore_rng(rng, state["rng"])
    run.step, run.position = int(state["step"]), int(state["position"])
    run.nonfinite_run = int(state.get("nonfinite_run", 0))
    if run.is_main:
        print(f"resumed from {path} at step {run.step}" + (f" (config differs in: {', '.join(diffs)})" if diffs else ""))


def _prepare_step(run: _Run) -> None:
    cfg = run.cfg
    module = OSDHumanTrainStep(run.model, run.lpips, cfg.loss, cfg.vsd, sample_latent=cfg.model.latent_mode_train == "sample")
    module.set_uncond(_uncond_embedding(run.model, cfg))
    run.step_module = run.accelerator.prepare(module)  # moves LPIPS, wraps in DDP when distributed


def _open_logs(run: _Run) -> None:
    """4. config.yaml, metrics.jsonl and TensorBoard continue from the checkpoint's step; the
    listing's left-out entries are reported once."""
    out = run.out
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(run.cfg, out / "config.yaml")
        truncate_metrics(out / "metrics.jsonl", run.step)  # a resumed run continues the log, no repeated steps
        # TensorBoard hides the events at steps >= purge_step: the killed run's steps after the
        # checkpoint's, which this run logs again (the checkpoint's own step is kept)
        purge = run.step + 1 if run.resume_path is not None else None
        run.writer = tensorboard(out, run.cfg.logging.tensorboard, purge_step=purge)
    run.jlog = JsonlLog(out / "metrics.jsonl", run.is_main)
    run.skipped = SkippedLog(out / "skipped.jsonl")
    if run.is_main:
        for file, reason in run.data.listing_skipped:
            run.skipped.add(file, reason)
        run.skipped.add_batch({"skipped": run.data.val_skipped})


def _close_logs(run: _Run) -> None:
    if run.jlog is not None:
        run.jlog.close()
    if run.writer is not None:
        run.writer.close()


def _write_weights(run: _Run, folder: Path) -> None:
    _unwrap(run.step_module).model.save_weights(folder)


def _checkpoint(run: _Run) -> Path:
    st: dict[str, Any] = {
        "position": run.position,
        "nonfinite_run": run.nonfinite_run,
        "config": to_dict(run.cfg),
        "world_size": run.world,
    }
    if run.use_scaler:
        st["scaler"] = {"generator": run.scaler_g.state_dict(), "regularizer": run.scaler_r.state_dict()}
    optimizers = {"generator": run.opt_g, **({"regularizer": run.opt_r} if run.opt_r is not None else {})}
    path = save_checkpoint(
        run.ckpt_root, run.step, write_weights=lambda d: _write_weights(run, d),
        trainable={n: p for n, p in zip(run.trainable_names, run.gen_params + run.reg_params)},
        optimizers=optimizers, param_names=run.names, state=st,
    )
    rotate_checkpoints(run.ckpt_root, run.cfg.checkpoint.keep)
    return path


@torch.no_grad()
def _restore_val(run: _Run, lq: torch.Tensor, hq: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The validation LQ restored in batches (N, 3, S, S) in [-1, 1], and LPIPS per batch."""
    m, lp_mod, bs = _unwrap(run.step_module).model, _unwrap(run.step_module).lpips, run.cfg.batch_size
    restored, lps = [], []
    with autocast(run.device, run.ac_dtype):
        for i in range(0, lq.shape[0], bs):
            img = m(lq[i:i + bs], hq=hq[i:i + bs]).image.float()
            restored.append(img)
            if lp_mod is not None:
                lps.append(lp_mod(img, hq[i:i + bs].float()).float())
    return torch.cat(restored), lps


def _validate(run: _Run) -> dict[str, float]:
    """PSNR-Y / SSIM-Y / MSE (/ LPIPS) on the fixed validation pairs and an LQ|restored|HQ grid."""
    if run.data.val is None or not run.is_main:
        return {}
    cfg, m = run.cfg, _unwrap(run.step_module).model
    was_training = m.training
    m.eval()
    lq, hq = run.data.val
    img, lps = _restore_val(run, lq, hq)
    rec = {
        "val/psnr_y": psnr_y(img, hq).mean().item(),
        "val/ssim_y": ssim_y(img, hq).mean().item(),
        "val/mse": torch.nn.functional.mse_loss(img, hq.float()).item(),
    }
    if lps:
        rec["val/lpips"] = torch.cat(lps).mean().item()
        rec["val/mse_lpips"] = cfg.loss.lambda_mse * rec["val/mse"] + cfg.loss.lambda_lpips * rec["val/lpips"]
    grid = image_grid(lq, img, hq)
    save_grid_png(grid, run.out / "val" / f"step-{run.step:08d}.png")
    if run.writer is not None:
        for k, v in rec.items():
            run.writer.add_scalar(k, v, run.step)
        run.writer.add_image("val/lq_restored_hq", grid, run.step)
    run.jlog.write({"step": run.step, **rec})
    m.train(was_training)
    return rec


def _next_micro_batches(run: _Run, loader_iter) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``accum`` (lq, hq) pairs on the device; files the loader had to skip are reported."""
    micro = []
    for _ in range(run.accum):
        batch = next(loader_iter)
        run.skipped.add_batch(batch)
        micro.append(run.data.make_pair(batch))
    run.position += run.images_per_step
    return micro


def _log(run: _Run, interval: IntervalMean, clock: dict) -> None:
    logged = interval.reduce(run.accelerator, run.device)  # mean over the interval and over ranks
    now = time.perf_counter()
    logged["images_per_s"] = clock["images"] / max(now - clock["t"], 1e-9)
    clock.update(t=now, images=0)
    if run.is_main:
        run.jlog.write({"step": run.step, **logged})
        if run.writer is not None:
            for k, v in logged.items():
                run.writer.add_scalar(k, v, run.step)


def _after_iteration(run: _Run, metrics: dict, finite: bool) -> None:
    """Count a non-finite run; stop with a clear error after ``max_nonfinite`` in a row."""
    cfg = run.cfg
    run.nonfinite_run = 0 if finite else run.nonfinite_run + 1
    if not finite and run.is_main:
        print(f"step {run.step}: non-finite loss or gradient, step skipped ({run.nonfinite_run} in a row)")
        run.jlog.write({"step": run.step, **{k: v for k, v in metrics.items() if math.isfinite(v)}, "nonfinite": True})
    if run.nonfinite_run >= cfg.max_nonfinite:
        raise TrainingError(
            f"stopped at step {run.step}: {run.nonfinite_run} non-finite losses in a row "
            f"(max_nonfinite={cfg.max_nonfinite}). Lower optim.lr, use mixed_precision=bf16 "
            f"instead of fp16, or resume from an earlier checkpoint in {run.ckpt_root}"
        )


def _progress_bar(run: _Run):
    if not (run.is_main and run.cfg.logging.progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.cfg.max_steps, initial=run.step, desc="train", unit="step", dynamic_ncols=True)


def _loop(run: _Run, on_step_end) -> tuple[dict[str, float], Path | None, bool]:
    """5. iterations up to max_steps: (last metrics, last checkpoint, stopped early)."""
    cfg = run.cfg
    loader_iter = run.data.iterator(run.position)
    metrics: dict[str, float] = {}
    last_ckpt: Path | None = None
    run.step_module.train()
    if cfg.logging.val_at_start and run.step == 0:
        metrics.update(_validate(run))
    bar = _progress_bar(run)
    clock = {"t": time.perf_counter(), "images": 0}
    interval = IntervalMean()
    updater = Updater(run.step_module, run.opt_g, run.opt_r, run.gen_params, run.reg_params, cfg, run.device,
                      run.ac_dtype, accelerator=run.accelerator, scaler_g=run.scaler_g, scaler_r=run.scaler_r)
    try:
        while run.step < cfg.max_steps:
            torch.manual_seed(step_seed(cfg.seed, run.step, run.rank))
            metrics, finite = updater.iteration(_next_micro_batches(run, loader_iter))
            run.step += 1
            clock["images"] += run.images_per_step
            interval.add(metrics)
            if run.step % max(cfg.logging.every, 1) == 0 or run.step == 1:
                _log(run, interval, clock)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss/loss']:.4f}", refresh=False)
            _after_iteration(run, metrics, finite)
            if cfg.logging.val_every > 0 and run.step % cfg.logging.val_every == 0:
                metrics.update(_validate(run))
            if cfg.checkpoint.every > 0 and run.step % cfg.checkpoint.every == 0 and run.step < cfg.max_steps:
                if run.is_main:
                    last_ckpt = _checkpoint(run)
                run.accelerator.wait_for_everyone()
            if on_step_end is not None and run.is_main:
                on_step_end(run.step, metrics)
    finally:
        if bar is not None:
            bar.close()
    return metrics, last_ckpt


def _finish(run: _Run, metrics: dict) -> tuple[dict, Path, Path]:
    """6. (process 0) a last validation unless this step had one, a checkpoint, ``final/``."""
    cfg = run.cfg
    if not (cfg.logging.val_every > 0 and run.step % cfg.logging.val_every == 0):
        metrics.update(_validate(run))
    last_ckpt = _checkpoint(run)
    final_dir = run.out / "final"
    atomic_dir(final_dir, lambda d: _write_weights(run, d))
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
