"""`osdhuman degrade`: synthesise LQ images with the Real-ESRGAN second-order degradation (paper 4.2).

    osdhuman degrade HQ_DIR -o LQ_DIR --seed S [--config FILE] [--set key=value ...]
        [--device cpu|cuda] [--batch-size N] [--threads N]

Writes LQ_DIR/<same relative name>.png for every readable image of HQ_DIR, params.jsonl (one
record per image: its seed and every drawn parameter), skipped.jsonl (every file left out and
why) and config.yaml (the resolved degradation config), these three last. This is how a
PERSONA-Val-style synthetic set is made. An image's LQ depends only on the image, its name,
--seed and the config. Into a folder that holds results it resumes: unchanged LQs are kept,
changed ones redone (said so), a file degrade did not write is never replaced (--overwrite
forces). A second run into the same LQ_DIR stops while the first holds its lock.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from osdhuman.cli import UsageError
from osdhuman.cli._common import add_config_args, check_device, check_min, check_output_dir, resolve_config
from osdhuman.config import SEED_MAX

# osdhuman.degradation is imported inside run (OpenCV, numba: ~0.3 s), and torch only for a device
# other than the CPU.


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "degrade",
        help="make LQ images from a folder of HQ images (Real-ESRGAN second-order degradation)",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
        "  osdhuman degrade persona/images/val -o persona_val_lq --seed 0\n"
        "  osdhuman degrade hq/ -o lq/ --seed 1 --config configs/degradation.yaml --device cuda --batch-size 64\n"
        "  osdhuman degrade hq/ -o lq/ --set stage2.blur_prob=0 --set final.sinc_prob=0\n",
    )
    p.add_argument("hq_dir", metavar="HQ_DIR", help="folder of HQ images (searched recursively)")
    p.add_argument("--output-dir", "-o", "--out", dest="output_dir", required=True, metavar="LQ_DIR",
                   help="output folder (must not be HQ_DIR or inside it)")
    p.add_argument("--seed", type=int, default=0, help="run seed; each image's seed is derived from it and its name")
    add_config_args(p)
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per call (default 8)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads: images degraded side by side on a CPU, torch's threads on another device "
                        "(default: the CPU count / torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="write every LQ again, replacing files already in LQ_DIR (default: resume - keep the LQ "
                        "whose input and parameters are unchanged, never replace a file degrade did not write)")
    p.add_argument("--writers", type=int, metavar="N", help="threads that encode and write PNGs (default: CPU count, at most 8)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from osdhuman.degradation import DegradationConfig, degrade_folder

    hq, lq = Path(args.hq_dir), Path(args.output_dir)
    if not hq.is_dir():
        raise UsageError(f"{hq}: not a folder")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_min(args.seed, "--seed", 0, maximum=SEED_MAX)  # the same range as a config file's seed
    try:
        lq.resolve().relative_to(hq.resolve())
        raise UsageError(f"{lq}: the output folder must not be {hq} or inside it")
    except ValueError:
        pass
    check_output_dir(lq)
    check_device(args.device)  # "cpu" passes without importing torch: the CPU path never does
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    device = args.device
    if device == "auto" or device.split(":")[0] != "cpu":
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if args.threads is not None:
            torch.set_num_threads(args.threads)
    if args.writers is not None and args.writers < 0:
        raise UsageError(f"--writers must be >= 0, got {args.writers}")
    cfg = resolve_config(DegradationConfig, args)
    try:
        summary = degrade_folder(hq, lq, seed=args.seed, cfg=cfg, device=device, batch_size=args.batch_size,
                                 progress=not args.no_progress, overwrite=args.overwrite, writers=args.writers,
                                 notify=lambda msg: print(f"osdhuman degrade: {msg}", file=sys.stderr),
                                 workers=args.threads)
    except ValueError as exc:
        print(f"osdhuman degrade: error: {exc}", file=sys.stderr)
        return 1
    _report(summary, lq)
    return 0 if summary.written + summary.kept > 0 or not summary.skipped else 1


def _report(summary, lq) -> None:
    for f, reason in summary.skipped:
        print(f"  skipped {f}: {reason}", file=sys.stderr)
    kept = f", kept {summary.kept} unchanged from an earlier run" if summary.kept else ""
    print(f"wrote {summary.written} LQ images to {lq}{kept} (params.jsonl, config.yaml)"
          + (f"; skipped {len(summary.skipped)} file(s), see {lq / 'skipped.jsonl'}" if summary.skipped else ""))
