"""`osdhuman train`: train OSDHuman (paper 3.2 / 4.2) with MSE + LPIPS + VSD on accelerate.

    osdhuman train --config configs/osdhuman.yaml --output-dir runs/osdhuman \
        [--max-steps N] [--resume latest|PATH] [--set key=value ...]

N processes (GPUs, or CPU processes over gloo with ``--device cpu``):
``accelerate launch --multi_gpu --num_processes N -m osdhuman.cli.train ARGS`` or
``torchrun --nproc_per_node N -m osdhuman.cli.train ARGS``. ``accelerate launch --cpu
--num_processes N`` starts ONE process whatever N is (accelerate's simple launcher); that launch is
refused with the command that works. ARGS are those of ``osdhuman train``. Each
process takes batch_size images per micro-batch (per device); set global_batch_size to keep
the global batch fixed whatever N is. Checkpoints and logs are written by process 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from osdhuman.cli import UsageError
from osdhuman.cli._common import add_config_args, check_device, check_output_dir, output_lock, resolve_config

# osdhuman.training / osdhuman.models (torch, accelerate, diffusers) are imported inside run.


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the OSDHuman restorer (MSE + LPIPS + VSD)",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
        "  osdhuman train --config configs/tiny.yaml --output-dir runs/tiny --max-steps 20\n"
        "  osdhuman train --config configs/osdhuman.yaml --output-dir runs/osdhuman --set data.source=persona/manifest.parquet\n"
        "  osdhuman train --config configs/osdhuman.yaml --output-dir runs/osdhuman --resume latest\n",
    )
    add_config_args(p)
    p.add_argument("--output-dir", "-o", "--out", dest="output_dir", required=True, metavar="DIR",
                   help="run folder: config.yaml, checkpoints/, tb/, metrics.jsonl, val/, final/")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimiser steps (overrides max_steps)")
    p.add_argument("--resume", metavar="latest|PATH",
                   help="continue the run in --output-dir from its newest checkpoint ('latest') or from a checkpoint folder")
    p.add_argument("--device", metavar="DEV", help="'cpu' forces CPU (default: accelerate's choice)")
    p.add_argument("--allow-world-size-change", action="store_true",
                   help="resume a checkpoint saved by another number of processes (the data order and, without "
                        "global_batch_size, the global batch change)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from osdhuman.data.hq_crops import NoReadableImagesError
    from osdhuman.models import WeightsError
    from osdhuman.training import (
        CheckpointError,
        LPIPSWeightsError,
        TrainConfig,
        TrainingError,
        train,
    )
    from osdhuman.training.checkpoint import find_latest, sweep_stale_temp

    extra = []
    if args.max_steps is not None:
        if args.max_steps < 0:
            raise UsageError(f"--max-steps must be >= 0, got {args.max_steps}")
        extra.append(f"max_steps={args.max_steps}")
    if args.device:
        extra.append(f"device={args.device}")
    _check_launcher()
    cfg = resolve_config(TrainConfig, args, extra)
    out = Path(args.output_dir)
    _check_sources(cfg)
    check_device(cfg.device, "--device" if args.device else "device")
    check_output_dir(out, [cfg.data.source] if cfg.data.source else [])  # an image-folder source stays clean
    if args.resume == "latest" and find_latest(out / "checkpoints") is None:
        print(f"osdhuman train: no checkpoint in {out / 'checkpoints'} yet; starting a new run", file=sys.stderr)
    try:
        with output_lock(out, main_process_only=True) as lock:  # a second run into this folder stops here
            if lock is not None:  # process 0: what a killed or failed run left half-written goes
                sweep_stale_temp(out)
            result = train(cfg, args.output_dir, resume=args.resume,
                           allow_world_size_change=args.allow_world_size_change)
    except (LPIPSWeightsError, TrainingError, CheckpointError, WeightsError, NoReadableImagesError) as exc:
        print(f"osdhuman train: error: {exc}", file=sys.stderr)
        return 1
    if result.final_dir is not None:  # process 0 only
        print(f"trained {result.step} steps; final weights: {result.final_dir} "
              f"(use: osdhuman restore INPUT -o OUT --weights {result.final_dir})")
    return 0


def _requested_processes(launcher_argv: list[str]) -> int | None:
    """--num_processes N (or --num-processes=N) of an ``accelerate launch`` command line, else None."""
    if not any(a.endswith("accelerate") for a in launcher_argv[:2]) or "launch" not in launcher_argv[:3]:
        return None
    for i, a in enumerate(launcher_argv):
        for flag in ("--num_processes", "--num-processes"):
            if a == flag and i + 1 < len(launcher_argv):
                value = launcher_argv[i + 1]
            elif a.startswith(flag + "="):
                value = a.split("=", 1)[1]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _parent_argv() -> list[str]:
    """The launching process's command line (Linux /proc; empty elsewhere). The first entries may
    be an interpreter (``python .../accelerate launch ...``): they are dropped."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    while argv and "python" in os.path.basename(argv[0]):
        argv = argv[1:]
    return argv


def _check_launcher() -> None:
    """Refuse ``accelerate launch --cpu --num_processes N>1``: it would silently train on one process."""

    wanted = _requested_processes(_parent_argv())
    if wanted is None or wanted < 2 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    raise UsageError(
        f"accelerate launch started 1 process, not the {wanted} asked for (its --cpu launcher ignores "
        f"--num_processes); for {wanted} CPU processes run `accelerate launch --multi_gpu --num_processes "
        f"{wanted} -m osdhuman.cli.train ... --device cpu` or `torchrun --nproc_per_node {wanted} -m "
        "osdhuman.cli.train ... --device cpu`")


def _check_sources(cfg) -> None:
    """UsageError for a data path that does not exist (before the run folder is made)."""

    for key, value in (("data.source", cfg.data.source), ("data.val_source", cfg.data.val_source)):
        if value and not Path(value).exists():
            raise UsageError(f"{key}={value}: no such file or folder (an image folder or a manifest written by "
                             "`osdhuman build-dataset`)")


if __name__ == "__main__":  # `accelerate launch -m osdhuman.cli.train ...`
    from osdhuman.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
