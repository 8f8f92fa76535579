"""``osdhuman build-dataset``: the HQ-ACF pipeline (paper 3.1) from detection datasets and folders."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from importlib.resources import files

from osdhuman.cli import UsageError
from osdhuman.cli._common import (
    add_config_args,
    check_device,
    check_min,
    check_output_dir,
    output_lock,
    resolve_config,
)

# osdhuman.curation (~0.5 s: OpenCV, numba kernels) and pandas are imported inside the functions that
# build or summarise a dataset, so `osdhuman --help` stays fast.

EPILOG = """sources (repeatable --source, optionally NAME=... to name them):
  coco:ANNOTATIONS.json:IMAGE_DIR                       COCO / Objects365 (category 'person')
  openimages:BOXES.csv:CLASS_DESCRIPTIONS.csv:IMAGE_DIR  Open Images ('Human body' and synonyms)
  crowdhuman:ANNOTATION.odgt:IMAGE_DIR                  CrowdHuman full-body boxes
  voc:ANNOTATIONS_DIR:IMAGE_DIR                         Pascal VOC XML ('person')
  folder:DIR                                            unlabelled images, person detector

example:
  osdhuman build-dataset --source coco:instances_train2017.json:train2017 \\
      --source voc:VOC2012/Annotations:VOC2012/JPEGImages --split-source voc=test --out persona/
  osdhuman build-dataset --preset persona --source coco=coco:... --source val=coco:... \\
      --source voc=voc:... --out persona/          (the paper's recipe: configs/persona.yaml)
"""

PRESETS = ("persona",)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build-dataset", help="build a PERSONA-style dataset of 512x512 human crops (HQ-ACF)",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", action="append", default=[], metavar="SPEC", help="input source (repeatable), see below")
    p.add_argument("-o", "--out", "--output-dir", dest="out", required=True, metavar="DIR", help="output directory (resumes when it holds an earlier run)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: one per CPU core)")
    p.add_argument("--backend", choices=["local", "ray"], help="local processes (default) or Ray Data (RAY_ADDRESS)")
    p.add_argument("--detector", choices=["opencv", "yolo"], help="person detector for folder: sources (default opencv)")
    p.add_argument("--detector-weights", metavar="FILE", help="YOLO weights for --detector yolo")
    p.add_argument("--metrics", metavar="LIST|PRESET",
                   help="IQA metrics, comma-separated, or a preset: offline (niqe,brisque,piqe), "
                        "paper (clipiqa,maniqa,musiq,niqe; needs pyiqa weights), laplacian")
    p.add_argument("--iqa-backend", choices=["auto", "pyiqa", "offline"], help="IQA implementation (default auto)")
    p.add_argument("--device", help="device for pyiqa metrics and YOLO (default cpu; offline metrics always run on the CPU)")
    p.add_argument("--keep-fraction", type=float, metavar="F", help="top fraction of the pool to keep (default 1/3)")
    p.add_argument("--split-source", action="append", default=[], metavar="NAME=SPLIT",
                   help="put every crop of source NAME into SPLIT (train/val/test), repeatable")
    p.add_argument("--val-fraction", type=float, metavar="F", help="fraction of the other selected crops for val")
    p.add_argument("--test-fraction", type=float, metavar="F", help="fraction of the other selected crops for test")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of each source (a quick trial)")
    p.add_argument("--preset", metavar="NAME", help=f"a recipe of settings: {', '.join(PRESETS)} (the paper's section 4.2); "
                                                  "instead of --config")
    p.add_argument("--allow-offline-metrics", action="store_true",
                   help="when the preset's IQA metrics lack weights, score with the offline set (niqe, brisque, piqe) "
                        "instead of stopping; the report says so")
    p.add_argument("--dry-run", action="store_true",
                   help="parse the sources, print what would be processed, and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=run)


def _overrides(args) -> list[str]:
    from osdhuman.curation.config import METRIC_PRESETS

    extra: list[str] = []
    if args.source:
        extra.append(f"sources={json.dumps(args.source)}")
    flag_map = [("workers", "exec.workers"), ("backend", "exec.backend"), ("detector", "detector.kind"),
                ("detector_weights", "detector.weights"), ("iqa_backend", "iqa.backend"),
                ("keep_fraction", "selection.keep_fraction"), ("val_fraction", "split.val_fraction"),
                ("test_fraction", "split.test_fraction"), ("limit", "exec.max_images_per_source")]
    for attr, key in flag_map:
        v = getattr(args, attr)
        if v is not None:
            extra.append(f"{key}={json.dumps(v)}")
    if args.device is not None:
        extra += [f"iqa.device={json.dumps(args.device)}", f"detector.device={json.dumps(args.device)}"]
    if args.metrics is not None:
        names = METRIC_PRESETS.get(args.metrics) or [m.strip() for m in args.metrics.split(",") if m.strip()]
        if not names:
            raise UsageError(f"--metrics {args.metrics!r}: no metric named")
        extra.append(f"iqa.metrics={json.dumps(names)}")
    for item in args.split_source:
        name, sep, split = item.partition("=")
        if not sep or split not in ("train", "val", "test") or not name:
            raise UsageError(f"--split-source {item!r}: expected NAME=train|val|test")
        extra.append(f"split.source_splits.{name}={split}")
    return extra


def run(args) -> int:
    from osdhuman.curation.config import CurationConfig
    from osdhuman.curation.detect import DetectorUnavailable, check_detector
    from osdhuman.curation.runner import OutputDirError, build_dataset
    from osdhuman.curation.scoring import ScoringUnavailable
    from osdhuman.curation.sources import SourceError, parse_specs

    check_min(args.limit, "--limit", 0)
    check_min(args.workers, "--workers", 0)
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise UsageError(f"--preset {args.preset!r}: unknown preset; available: {', '.join(PRESETS)}")
        if getattr(args, "config", None):
            raise UsageError("--preset and --config both name a config file; give one (--set changes single values)")
        args.config = str(preset_path(args.preset))
    cfg = resolve_config(CurationConfig, args, _overrides(args))
    if args.preset is not None:
        cfg.preset = args.preset
    if not cfg.sources:
        raise UsageError("no --source given (e.g. --source coco:annotations.json:images/)")
    check_device(args.device)
    try:
        # the output must not land in a folder we read (a folder: source would ingest it next run)
        specs = parse_specs(cfg.sources)
        check_output_dir(args.out, [a for s in specs for a in s.args])
        for note in unused_detector_flags(args, specs, cfg.detector.kind):
            warnings.warn(note, stacklevel=1)
        if args.dry_run:
            _dry_run(cfg)
            return 0
        if any(s.kind == "folder" for s in specs):  # the only sources a detector runs on
            check_detector(cfg.detector)  # before the output folder is made
        cfg, metrics = _metrics_or_fallback(cfg, args.allow_offline_metrics)
        with output_lock(args.out):  # a second run into this folder stops here
            result = build_dataset(cfg, args.out, progress=not args.no_progress, metrics=metrics)
    except (SourceError, OutputDirError, ScoringUnavailable, DetectorUnavailable) as exc:
        raise UsageError(str(exc)) from None
    _report_unusable_files(result.out / "rejects.parquet")
    print(result.summary())
    print(f"report: {result.out / 'report.html'}", file=sys.stdout)
    return 0


def unused_detector_flags(args, specs, kind: str) -> list[str]:
    """What a user would expect a detector flag to do but it will not (said once each, the run goes on)."""
    given = [f for f, v in (("--detector", args.detector), ("--detector-weights", args.detector_weights)) if v]
    notes = []
    if given and not any(s.kind == "folder" for s in specs):
        notes.append(f"{' and '.join(given)} not used: the detector finds people in folder: sources only, and every "
                     "source here has person boxes")
    elif args.detector_weights and kind != "yolo":
        notes.append(f"--detector-weights {args.detector_weights} not used: it is for --detector yolo (the detector is {kind})")
    return notes


def _dry_run(cfg) -> None:
    """Parse every source (records into a temporary folder, removed after) and print counts."""
    from osdhuman.curation.runner import parse_all, source_counts

    with tempfile.TemporaryDirectory(prefix="osdhuman-dry-run-") as tmp:
        recs = parse_all(cfg, tmp)
        counts = source_counts(recs, cfg.exec.max_images_per_source)
        for r in recs:
            boxes = "detector" if r.kind == "folder" else f"{counts[r.name][1]} person boxes"
            print(f"{r.name}: {r.spec.split('=', 1)[1]}: {counts[r.name][0]} images, {boxes}, "
                  f"{r.n_rejects} annotation rows rejected")


SHOWN_UNUSABLE = 50  # files named on stderr; every one is a row of rejects.parquet


def _report_unusable_files(rejects_path) -> None:
    """One stderr line per input file that could not be listed or read (the first 50)."""
    import pandas as pd

    try:
        rej = pd.read_parquet(rejects_path, columns=["path", "stage", "reason", "detail"])
    except (OSError, ValueError):
        return
    bad = rej[rej["stage"].isin(["list", "read"])]
    for path, reason, detail in bad[["path", "reason", "detail"]].head(SHOWN_UNUSABLE).itertuples(index=False):
        note = f" ({detail})" if isinstance(detail, str) and detail else ""
        print(f"osdhuman build-dataset: skipped {path}: {reason}{note}", file=sys.stderr)
    if len(bad) > SHOWN_UNUSABLE:
        print(f"osdhuman build-dataset: ... and {len(bad) - SHOWN_UNUSABLE} more unusable files "
              f"(stage list/read in {rejects_path})", file=sys.stderr)


def preset_path(name: str):
    """The preset's YAML (configs/<name>.yaml, shipped in the package as data_files/preset_<name>.yaml)."""
    return files("osdhuman").joinpath("data_files", f"preset_{name}.yaml")


def _metrics_or_fallback(cfg, allow_offline: bool):
    """(config, loaded metrics). Metrics without weights stop the run before work, naming the
    file; with ``allow_offline`` the offline set replaces them and the config records why."""
    from osdhuman.curation.config import METRIC_PRESETS
    from osdhuman.curation.scoring import ScoringUnavailable, load_metrics

    try:
        return cfg, load_metrics(cfg.iqa)
    except ScoringUnavailable as exc:
        if not allow_offline:
            raise ScoringUnavailable(f"{exc} (or pass --allow-offline-metrics to score with "
                                     f"{', '.join(METRIC_PRESETS['offline'])} instead)") from None
        note = (f"the configured metrics {', '.join(cfg.iqa.metrics)} could not run ({exc}); scored with the OFFLINE "
                f"set {', '.join(METRIC_PRESETS['offline'])} instead (--allow-offline-metrics): not the paper's metrics")
        warnings.warn(note, stacklevel=2)
        cfg.iqa.metrics = list(METRIC_PRESETS["offline"])
        cfg.iqa.backend = "offline"
        cfg.metrics_note = note
        return cfg, load_metrics(cfg.iqa)
