"""``osdhuman build-dataset``: the HQ-ACF pipeline (paper 3.1) from detection datasets and folders."""

from __future__ import annotations

import argparse
import json
import sys

from osdhuman.cli._common import (
    add_config_args,
    check_device,
    check_min,
    check_output_dir,
    resolve_config,
)

EPILOG = """sources (repeatable --source, optionally NAME=... to name them):
  coco:ANNOTATIONS.json:IMAGE_DIR                       COCO / Objects365 (category 'person')
  openimages:BOXES.csv:CLASS_DESCRIPTIONS.csv:IMAGE_DIR  Open Images ('Human body' and synonyms)
  crowdhuman:ANNOTATION.odgt:IMAGE_DIR                  CrowdHuman full-body boxes
  voc:ANNOTATIONS_DIR:IMAGE_DIR                         Pascal VOC XML ('person')
  folder:DIR                                            unlabelled images, person detector

example:
  osdhuman build-dataset --source coco:instances_train2017.json:train2017 \\
      --source voc:VOC2012/Annotations:VOC2012/JPEGImages --split-source voc=test --out persona/
"""


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
    p.add_argument("--device", help="device for IQA metrics and YOLO (default cpu)")
    p.add_argument("--keep-fraction", type=float, metavar="F", help="top fraction of the pool to keep (default 1/3)")
    p.add_argument("--split-source", action="append", default=[], metavar="NAME=SPLIT",
                   help="put every crop of source NAME into SPLIT (train/val/test), repeatable")
    p.add_argument("--val-fraction", type=float, metavar="F", help="fraction of the other selected crops for val")
    p.add_argument("--test-fraction", type=float, metavar="F", help="fraction of the other selected crops for test")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of each source (a quick trial)")
    p.add_argument("--dry-run", action="store_true",
                   help="parse the sources, print what would be processed, and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=run)


def _overrides(args) -> list[str]:
    from osdhuman.cli import UsageError
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
    from osdhuman.cli import UsageError
    from osdhuman.curation.config import CurationConfig
    from osdhuman.curation.detect import DetectorUnavailable
    from osdhuman.curation.runner import OutputDirError, build_dataset
    from osdhuman.curation.scoring import ScoringUnavailable
    from osdhuman.curation.sources import SourceError, parse_specs

    check_min(args.limit, "--limit", 0)
    check_min(args.workers, "--workers", 0)
    cfg = resolve_config(CurationConfig, args, _overrides(args))
    if not cfg.sources:
        raise UsageError("no --source given (e.g. --source coco:annotations.json:images/)")
    check_device(args.device)
    try:
        # the output must not land in a folder we read (a folder: source would ingest it next run)
        check_output_dir(args.out, [a for s in parse_specs(cfg.sources) for a in s.args])
        if args.dry_run:
            from osdhuman.curation.runner import parse_all

            for p in parse_all(cfg):
                n_boxes = sum(len(i.boxes) for i in p.images if i.boxes is not None)
                boxes = "detector" if p.spec.kind == "folder" else f"{n_boxes} person boxes"
                print(f"{p.spec.name}: {p.spec.kind} {':'.join(p.spec.args)}: {len(p.images)} images, {boxes}, "
                      f"{len(p.rejects)} annotation rows rejected")
            return 0
        result = build_dataset(cfg, args.out, progress=not args.no_progress)
    except (SourceError, OutputDirError, ScoringUnavailable, DetectorUnavailable) as exc:
        raise UsageError(str(exc)) from None
    print(result.summary())
    print(f"report: {result.out / 'report.html'}", file=sys.stdout)
    return 0
