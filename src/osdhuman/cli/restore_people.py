"""The person-aware and upscaling flags of ``osdhuman restore`` (--people, --boxes,
--people-only, --save-crops, --upscale, --max-side, --context-margin[-style], --detector):
their parsing and the checks made before any model is loaded. The CLI builds the person
detector from ``osdhuman.curation.detect`` (the pipelines may not import curation) and hands
it, or the boxes of a ``--boxes`` file, to ``restore_paths``."""

from __future__ import annotations

import argparse
import json

from PIL import Image

from osdhuman.cli import UsageError

# osdhuman.pipelines (torch) and osdhuman.curation.detect (OpenCV / ultralytics) are imported inside
# the functions that check or use --people, --boxes and --upscale.


def add_people_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("whole photos of people and upscaling")
    g.add_argument("--people", action="store_true",
                   help="person-aware: restore each person as an HQ-ACF 512 crop and paste it back over the whole-photo pass")
    g.add_argument("--boxes", metavar="FILE", help="person boxes from a COCO-style JSON file instead of the detector (implies --people)")
    g.add_argument("--people-only", action="store_true", help="restore only the people; keep the rest of the photo as it is (implies --people)")
    g.add_argument("--save-crops", action="store_true", help="write OUTDIR/crops/<name>_people.png before/after contact sheets")
    g.add_argument("--detector", choices=["opencv", "yolo"], help="person detector for --people (default opencv, offline)")
    g.add_argument("--detector-weights", metavar="FILE", help="YOLO11 weights file for --detector yolo")
    g.add_argument("--context-margin", type=float, metavar="M", help="grow each person box: x M (scale, default 1.0) or + M px per side (pixels)")
    g.add_argument("--context-margin-style", choices=["scale", "pixels"], help="how --context-margin applies (default scale)")
    g.add_argument("--min-person-side", type=int, metavar="PX", help="people whose box's longer edge is shorter stay in the whole-photo pass (default 64)")
    g.add_argument("--upscale", type=float, metavar="S", help="resize the input by S in [1, 4] (bicubic) before restoring; output is S x input")
    g.add_argument("--max-side", type=int, metavar="PX", help="refuse outputs whose longer side would exceed PX (default 8192)")


def people_overrides(args: argparse.Namespace) -> list[str]:
    people = bool(args.people or args.boxes or args.people_only)
    pairs = {
        "people": True if people else None, "save_crops": True if args.save_crops else None,
        "person.people_only": True if args.people_only else None,
        "person.context_margin": args.context_margin, "person.context_margin_style": args.context_margin_style,
        "person.min_person_side": args.min_person_side, "upscale": args.upscale, "max_side": args.max_side,
    }
    return [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None]


def check_people_args(cfg, args: argparse.Namespace, files) -> tuple[object | None, dict | None]:
    """UsageError for bad flags, a bad box file or inputs that all exceed --max-side; returns
    (detector, boxes) for restore_paths."""
    from osdhuman.pipelines.upscale import MAX_UPSCALE, UpscaleError, check_upscale

    if not 1.0 <= cfg.upscale <= MAX_UPSCALE:
        raise UsageError(f"--upscale must be in [1, {MAX_UPSCALE:g}], got {cfg.upscale:g}")
    if cfg.max_side is not None and cfg.max_side < 64:
        raise UsageError(f"--max-side must be >= 64, got {cfg.max_side}")
    if cfg.save_crops and not cfg.people:
        raise UsageError("--save-crops needs --people (or --boxes)")
    for flag, value in (("--detector", args.detector), ("--detector-weights", args.detector_weights)):
        if value is not None and not cfg.people:  # it would be ignored: say so instead
            raise UsageError(f"{flag} needs --people (the detector finds the people --people restores)")
        if value is not None and args.boxes:
            raise UsageError(f"{flag} and --boxes both say where the people are; give one")
    too_big = []
    for f, _ in files:
        size = _header_size(f)
        if size is not None:
            try:
                check_upscale(*size, cfg.upscale, cfg.max_side)
            except UpscaleError as exc:
                too_big.append(f"{f}: {exc}")
    if too_big and len(too_big) == len(files):
        raise UsageError(too_big[0] + (f" (and {len(too_big) - 1} more)" if len(too_big) > 1 else ""))
    if not cfg.people:
        return None, None
    if args.boxes:
        from osdhuman.pipelines.box_file import BoxFileError, load_box_file, match_boxes

        try:
            return None, match_boxes(load_box_file(args.boxes), files, args.boxes)
        except BoxFileError as exc:
            raise UsageError(str(exc)) from None
    return _detector(args), None


def _header_size(path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            w, h = im.size
            return (h, w) if im.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (w, h)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the run itself
        return None


def _detector(args: argparse.Namespace):
    from osdhuman.curation.config import DetectorConfig
    from osdhuman.curation.detect import DetectorUnavailable, check_detector, make_detector

    dcfg = DetectorConfig(kind=args.detector or "opencv", weights=args.detector_weights)
    try:
        check_detector(dcfg)
        return make_detector(dcfg)
    except DetectorUnavailable as exc:
        raise UsageError(f"--detector {dcfg.kind}: {exc}") from None
