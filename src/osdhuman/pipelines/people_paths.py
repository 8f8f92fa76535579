"""The person-aware branch of ``restore_paths``: per input photo, the upscale check and the
person boxes (from the caller's detector or a ``--boxes`` file), then ``restore_people`` on a
group of photos, the per-photo report record and the ``--save-crops`` contact sheet.

The detector is any callable RGB uint8 (H, W, 3) -> boxes (N, 4); the command line passes
``osdhuman.curation.detect``'s (pipelines may not import curation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osdhuman.pipelines.box_file import check_boxes_inside
from osdhuman.pipelines.people import PeopleConfig, PeopleResult, Restorer, restore_people
from osdhuman.pipelines.progress import WorkProgress, image_units
from osdhuman.pipelines.upscale import UpscaleError, check_upscale, upscale_image

__all__ = ["InputRejected", "PeopleRun", "PreparedImage", "prepare_image"]

Detector = Callable[[np.ndarray], np.ndarray]


class InputRejected(ValueError):
    """One input cannot be restored as asked (``reason`` is a short code; nothing is written)."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass
class PreparedImage:
    src: Path
    image: np.ndarray  # (H, W, 3) uint8, upscaled
    boxes: np.ndarray | None  # (N, 4) in upscaled pixels; None when not in people mode
    boxes_from: str = "none"  # detector | box_file | none
    detect_seconds: float = 0.0


def _detect(src: Path, rgb: np.ndarray, detector: Detector | None, boxes: dict | None) -> tuple[np.ndarray, str, float]:
    t = time.perf_counter()
    if boxes is not None:
        found = boxes.get(src)
        if found is None:
            return np.zeros((0, 4)), "none", 0.0
        h, w = rgb.shape[:2]
        try:
            check_boxes_inside(found, w, h)
        except ValueError as exc:
            raise InputRejected("box_outside_image", str(exc)) from None
        return np.asarray(found, dtype=np.float64).reshape(-1, 4), "box_file", 0.0
    if detector is None:
        raise ValueError("people mode needs a detector callable or a boxes mapping")
    try:
        found = np.asarray(detector(rgb), dtype=np.float64).reshape(-1, 4)
    except Exception as exc:  # noqa: BLE001 - one photo the detector chokes on is recorded, the job goes on
        raise InputRejected("detect_failed", f"{type(exc).__name__}: {exc}") from None
    return found, "detector", time.perf_counter() - t


def prepare_image(src: Path, rgb: np.ndarray, scale: float, max_side: int | None, people: bool,
                  detector: Detector | None = None, boxes: dict | None = None) -> PreparedImage:
    """Upscale check, person boxes on the original photo (scaled with it), then the upscale."""
    h, w = rgb.shape[:2]
    try:
        check_upscale(w, h, scale, max_side)
    except UpscaleError as exc:
        raise InputRejected("too_large", str(exc)) from None
    found, source, secs = (_detect(src, rgb, detector, boxes) if people else (None, "none", 0.0))
    big = upscale_image(rgb, scale)
    if found is not None:
        found = found * np.array([big.shape[1] / w, big.shape[0] / h] * 2)
    return PreparedImage(src, big, found, source, secs)


@dataclass
class PeopleRun:
    """Restores groups of prepared photos person-aware and describes each for the report."""

    cfg: PeopleConfig
    restore: Restorer
    batch_size: int = 1
    keep_crops: bool = False
    tile_size: int = 512
    tile_overlap: int = 64
    log: Callable[[str], None] = print
    progress: WorkProgress | None = None
    records: list[dict] = field(default_factory=list)

    def expect(self, item: PreparedImage) -> None:
        """Tell the progress bar about the person crops (and a skipped background) of a photo."""
        if self.progress is None or item.boxes is None or not len(item.boxes):
            return
        b = item.boxes
        n = int((np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) >= self.cfg.min_person_side).sum())
        self.progress.add(n * image_units(self.cfg.crop_size, self.cfg.crop_size, self.tile_size, self.tile_overlap))
        if n and self.cfg.people_only:
            h, w = item.image.shape[:2]
            self.progress.add(-image_units(h, w, self.tile_size, self.tile_overlap))

    def run(self, items: list[PreparedImage]) -> list[PeopleResult]:
        boxes = [it.boxes if it.boxes is not None else np.zeros((0, 4)) for it in items]
        results = restore_people([it.image for it in items], boxes, self.restore, self.cfg,
                                 batch_size=self.batch_size, keep_crops=self.keep_crops)
        for it, b, res in zip(items, boxes, results):
            res.seconds["detect"] = it.detect_seconds
            if not res.plan.people:
                why = ("no boxes for it in the box file" if it.boxes_from == "none" else
                       "no person found" if not len(b) else
                       f"only people smaller than {self.cfg.min_person_side} px ({len(b)})")
                self.log(f"osdhuman restore: {it.src}: {why}; restored as a whole image")
            elif res.plan.small:
                self.log(f"osdhuman restore: {it.src}: {len(res.plan.small)} person box(es) smaller than "
                         f"{self.cfg.min_person_side} px left to the whole-photo pass (listed in the report)")
        return results

    def record(self, item: PreparedImage, res: PeopleResult, output: str, sheet: str | None, scale: float) -> dict:
        h, w = item.image.shape[:2]
        rec = {
            "input": str(item.src), "output": output, "size": [w, h], "upscale": scale,
            "boxes_from": item.boxes_from,
            "people": [{"box": [round(v, 1) for v in p.box], "crop": list(p.crop), "crop_side": p.crop[2],
                        "model_size": self.cfg.crop_size, "rank": p.rank} for p in reversed(res.plan.people)],
            "small_people": [[round(v, 1) for v in b] for b in res.plan.small],
            "whole_image_fallback": not res.plan.people,
            "seconds": {k: round(v, 4) for k, v in res.seconds.items()},
        }
        if sheet:
            rec["contact_sheet"] = sheet
        self.records.append(rec)
        return rec
