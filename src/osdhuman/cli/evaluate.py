"""``osdhuman evaluate`` (paper Table 2) and ``osdhuman dataset-quality`` (paper Table 1)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osdhuman.cli import UsageError
from osdhuman.cli._common import (
    add_config_args,
    check_device,
    check_min,
    check_output_dir,
    output_lock,
    resolve_config,
)
from osdhuman.outputs import atomic_write_text

# osdhuman.evaluation and osdhuman.imageio (~0.3 s: OpenCV, numba metrics) are imported inside the
# functions that score, so `osdhuman --help` stays fast.

EVAL_EPILOG = """metrics (--metrics, comma-separated names or one preset):
  paper-val   dists,lpips,psnr_y,ssim_y,fid,clipiqa,maniqa,musiq,niqe (PERSONA-Val, needs --reference)
  paper-test  clipiqa,maniqa,musiq,niqe (PERSONA-Test, no reference)
  offline     psnr_y,ssim_y,niqe,brisque,piqe (no download, no pyiqa needed)
  also: lpips dists fid clipiqa maniqa musiq niqe brisque piqe laplacian_var psnr_y ssim_y
A metric whose weights are not on disk is reported n/a with the file it needs; the rest run.

example:
  osdhuman evaluate --method OSDHuman=out/osdhuman --method OSEDiff=out/osediff \\
      --reference persona/val/hq --metrics paper-val -o eval/val
ablation table (paper Table 4; each run evaluated on Val and Test first):
  osdhuman evaluate --ablation Null=eval/null-val,eval/null-test --ablation DAPE=eval/dape-val,eval/dape-test \\
      --ablation "HFIE (HQ)=eval/hq-val,eval/hq-test" --ablation "HFIE (LQ)=eval/lq-val,eval/lq-test" \\
      --row-header "Prompt extractor" -o eval/table4
"""

DQ_EPILOG = """example:
  osdhuman dataset-quality --dataset PERSONA=persona/images/train --dataset COCO=coco_person -o eval/datasets
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score restored folders against HQ references (paper Table 2)",
        description="Score each method's restored images (paired with --reference by file stem) and write "
                    "per_image.csv, summary.json, table.md (paper Table 2 layout), plots/<metric>.png, "
                    "issues.csv and the resolved settings to OUTDIR.", epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", action="append", default=[], metavar="NAME=DIR",
                   help="a method's restored images (repeatable; rows of the table, in this order)")
    p.add_argument("--ablation", action="append", default=[], metavar="RUN=EVAL_DIR[,EVAL_DIR...]",
                   help="instead of scoring: lay out an ablation table (paper Tables 3 and 4), one row per run from "
                        "earlier evaluate output folders (e.g. the run's PERSONA-Val and PERSONA-Test evaluations; "
                        "EVAL_DIR@METHOD picks a method of a folder holding several); writes OUTDIR/table_ablation.md")
    p.add_argument("--row-header", metavar="TEXT", help="first column's header of the ablation table (default: Run)")
    p.add_argument("--reference", metavar="HQ_DIR", help="HQ images, paired with results by file stem")
    _common(p)
    p.add_argument("--title", help="table title (default: the reference folder's name)")
    p.add_argument("--merge-with", action="append", default=[], metavar="EARLIER_OUTDIR",
                   help="also write table_merged.md: the column groups of earlier evaluate outputs, then this "
                        "one (e.g. PERSONA-Val beside PERSONA-Test, as the paper's Table 2)")
    p.set_defaults(func=run_evaluate)

    q = subparsers.add_parser(
        "dataset-quality", help="no-reference IQA means per dataset (paper Table 1)",
        description="No-reference IQA means per dataset folder (default BRISQUE, NIQE, CLIPIQA, MANIQA, MUSIQ) "
                    "in the paper's Table 1 layout; metrics without local weights are marked n/a.", epilog=DQ_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--dataset", action="append", default=[], metavar="NAME=DIR", required=True,
                   help="a dataset's image folder (repeatable; rows of the table)")
    _common(q)
    q.add_argument("--max-images", type=int, metavar="N", help="score an evenly spaced subset of N images per dataset")
    q.set_defaults(func=run_dataset_quality)


def _common(p) -> None:
    p.add_argument("-o", "--out", "--output-dir", dest="out", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--metrics", metavar="LIST|PRESET", help="metric names, comma-separated, or a preset (see below)")
    p.add_argument("--backend", choices=["auto", "pyiqa", "offline"], help="metric implementation (default auto)")
    p.add_argument("--device", help="where pyiqa metrics run: auto (default: cuda when present), cpu, cuda, cuda:1, ...; "
                                    "the offline metrics always run on the CPU")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per batch (default 8)")
    p.add_argument("--digits", choices=["paper", "sig4"], help="number format of the table (default paper)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(p)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"{flag} {item!r}: expected NAME=DIR")
        name = name.strip()
        if name in out:
            raise UsageError(f"{flag} {name!r} given twice")
        out[name] = path.strip()
    return out


def _overrides(args) -> list[str]:
    extra = []
    if args.metrics is not None:
        extra.append(f"metrics={json.dumps([m.strip() for m in args.metrics.split(',') if m.strip()])}")
    for attr in ("backend", "device", "batch_size", "digits", "title", "max_images"):
        v = getattr(args, attr, None)
        if v is not None:
            extra.append(f"{attr}={json.dumps(v)}")
    return extra


def _check(args, cfg, folders: dict[str, str]) -> None:
    """Command-line checks made before any image is read: ``folders`` maps 'FLAG NAME' -> DIR."""
    from osdhuman.imageio import list_images

    check_min(cfg.batch_size, "--batch-size", 1)
    check_device(cfg.device)
    check_output_dir(args.out, folders.values())
    for what, d in folders.items():  # a missing folder is reported by the library, naming it
        if Path(d).is_dir() and not list_images(d, recursive=cfg.recursive):
            raise UsageError(f"{what}: {d}: no image files found")


SHOWN_ISSUES = 10  # issues listed on stderr; every one is a row of issues.csv


def _report(result, what: str) -> None:
    print(result.table)
    kinds: dict[str, int] = {}
    for i in result.issues:
        kinds[i.kind] = kinds.get(i.kind, 0) + 1
    if kinds:
        print("issues: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
              + f" (details in {result.out_dir / 'issues.csv'})", file=sys.stderr)
        for i in result.issues[:SHOWN_ISSUES]:
            print(f"  [{i.kind}] {i.group}/{i.key}: {i.detail}", file=sys.stderr)
        if len(result.issues) > SHOWN_ISSUES:
            print(f"  ... and {len(result.issues) - SHOWN_ISSUES} more (see {result.out_dir / 'issues.csv'})", file=sys.stderr)
    for n, why in result.unavailable.items():
        print(f"unavailable: {n}: {why}", file=sys.stderr)
    print(f"{what} written to {result.out_dir}/ (table.md, summary.json, per_image.csv, plots/)")


def run_ablation(args) -> int:
    """``--ablation``: one table from earlier evaluate outputs (rows = runs); nothing is scored."""
    from osdhuman.evaluation.tables import ablation_table

    if args.method or args.reference:
        raise UsageError("--ablation lays out earlier evaluate outputs: give it without --method / --reference")
    runs = {name: [d.strip() for d in dirs.split(",") if d.strip()] for name, dirs in _pairs(args.ablation, "--ablation").items()}
    try:
        table = ablation_table(runs, row_header=args.row_header or "Run", digits=args.digits or "paper")
    except ValueError as exc:
        raise UsageError(f"--ablation: {exc}") from None
    out = Path(args.out)
    with output_lock(out):
        atomic_write_text(out / "table_ablation.md", table)
        atomic_write_text(out / "ablation.json", json.dumps({"row_header": args.row_header or "Run", "runs": runs}, indent=2))
    print(table)
    print(f"ablation table written to {out}/table_ablation.md")
    return 0


def run_evaluate(args) -> int:
    from osdhuman.evaluation import EvaluateConfig, evaluate_methods, merged_table

    if args.ablation:
        return run_ablation(args)
    if not args.method:
        raise UsageError("evaluate: give --method NAME=DIR (repeatable), or --ablation RUN=EVAL_DIR,... for an ablation table")
    methods = _pairs(args.method, "--method")
    cfg = resolve_config(EvaluateConfig, args, _overrides(args))
    folders = {f"--method {n}": d for n, d in methods.items()}
    if args.reference:
        folders["--reference"] = args.reference
    _check(args, cfg, folders)
    for d in args.merge_with:
        if not (Path(d) / "summary.json").is_file():
            raise UsageError(f"--merge-with {d}: no summary.json there (not an evaluate output folder)")
    with output_lock(args.out):  # a second run into this folder stops here
        try:
            result = evaluate_methods(methods, args.reference, args.out, cfg, progress=not args.no_progress)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        _report(result, "evaluation")
        if args.merge_with:
            table = merged_table([*args.merge_with, args.out], digits=cfg.digits)

            atomic_write_text(Path(args.out) / "table_merged.md", table)
            print(table)
    return 0


def run_dataset_quality(args) -> int:
    from osdhuman.evaluation import DatasetQualityConfig, dataset_quality

    datasets = _pairs(args.dataset, "--dataset")
    cfg = resolve_config(DatasetQualityConfig, args, _overrides(args))
    check_min(cfg.max_images, "--max-images", 0)
    _check(args, cfg, {f"--dataset {n}": d for n, d in datasets.items()})
    with output_lock(args.out):  # a second run into this folder stops here
        try:
            result = dataset_quality(datasets, args.out, cfg, progress=not args.no_progress)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    _report(result, "dataset quality")
    return 0
