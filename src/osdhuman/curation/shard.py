"""One unit of resumable work: a shard of source images through every stage up to IQA scores.

``prepare_image`` runs the paper's per-image stages (blur filter, box filters, square crop,
centre NMS, resize) and ``ShardWorker`` adds IQA scoring. Both backends (local processes and
Ray Data) call ``ShardWorker`` on the same shard lists, so they produce the same rows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from osdhuman.curation import dedup, stages
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.detect import make_detector
from osdhuman.curation.schema import metric_column
from osdhuman.curation.scoring import load_metrics
from osdhuman.curation.sources import SourceImage, reject_row
from osdhuman.imageio import ImageReadError, orient_points, read_rgb_info


def crop_id(source: str, key: str, box_index: int) -> str:
    """Readable, file-name-safe id ``<source>_<image key without extension>_<box index>``.

    Keys that need sanitising or are long get a short hash of the key; two images whose ids
    would still collide (``a.jpg`` and ``a.png``) are disambiguated by the runner.
    """
    stem = key.rsplit(".", 1)[0] if "." in key.rsplit("/", 1)[-1] else key
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")
    if safe != stem or len(safe) > 48 or not safe:
        safe = f"{safe[:40]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}".strip("-")
    return f"{source}_{safe}_{box_index}"


def disambiguate(ids: list[str], keys: list[str]) -> list[str]:
    """Append a hash of the image key to ids that occur for more than one image key."""
    owners: dict[str, set] = {}
    for i, k in zip(ids, keys):
        owners.setdefault(i, set()).add(k)
    return [f"{i}-{hashlib.sha1(k.encode()).hexdigest()[:8]}" if len(owners[i]) > 1 else i for i, k in zip(ids, keys)]


@dataclass
class PreparedImage:
    rows: list[dict] = field(default_factory=list)  # candidate crops (manifest rows)
    crops: list[np.ndarray] = field(default_factory=list)  # (size, size, 3) uint8 for rows kept by NMS
    rejects: list[dict] = field(default_factory=list)


def _boxes_in_image(item: SourceImage, rgb_shape, info) -> tuple[np.ndarray | None, str | None, str]:
    """Annotated boxes in oriented-image pixels, or (None, reason, detail)."""
    h, w = rgb_shape[:2]
    boxes = np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4)
    if item.normalized:
        return boxes * np.array([w, h, w, h]), None, ""
    if item.size is not None and tuple(item.size) != (w, h):
        if info.orientation != 1 and tuple(item.size) == tuple(info.raw_size):
            pts = orient_points(boxes.reshape(-1, 2), info.orientation, *info.raw_size).reshape(-1, 4)
            return np.concatenate([np.minimum(pts[:, :2], pts[:, 2:]), np.maximum(pts[:, :2], pts[:, 2:])], 1), None, ""
        return None, "annotation_size_mismatch", f"annotated {item.size[0]}x{item.size[1]}, image is {w}x{h}"
    return boxes, None, ""


def prepare_image(item: SourceImage, cfg: CurationConfig, detector=None) -> PreparedImage:
    out = PreparedImage()

    def reject(stage: str, reason: str, detail: str = "", box=None):
        out.rejects.append(reject_row(item.source, item.key, item.path, reason, detail, box, stage))

    # annotated boxes that can never pass the size / crowd filters need no decoding at all
    # (clipping to the image and EXIF rotation never make a box's long or short side longer)
    if item.boxes is not None and not item.normalized and len(item.boxes):
        pre = np.asarray(item.boxes, dtype=np.float64).reshape(-1, 4)
        early = stages.box_rejections(pre, cfg.boxes)
        if all(r in ("box_too_small", "too_many_people") for r in early):
            for b, r in zip(pre, early):
                reject("boxes", r, f"{b[2] - b[0]:.0f}x{b[3] - b[1]:.0f} (not decoded)", b.tolist())
            return out
    # read (EXIF orientation applied, 8-bit RGB)
    try:
        rgb, info = read_rgb_info(item.path)
    except ImageReadError as exc:
        reject("read", exc.reason, exc.detail)
        return out
    h, w = rgb.shape[:2]
    # 1. blur filter on the whole image; the hashes of duplicate control share this decode and luma
    luma = stages.gray(rgb)
    lap = stages.laplacian_variance(luma)
    hashes = {"content_hash": dedup.content_hash(rgb), **dict(zip(("phash", "phash_mirror"), dedup.perceptual_hashes(luma)))}
    if lap < cfg.blur.min_laplacian_var:
        reject("blur", "blurry", f"laplacian_var {lap:.2f} < {cfg.blur.min_laplacian_var}")
        return out
    # person boxes: annotations or the detector
    if item.boxes is None:
        boxes = np.asarray(detector(rgb), dtype=np.float64).reshape(-1, 4) if detector is not None else np.zeros((0, 4))
        if len(boxes) == 0:
            reject("detect", "no_person_detected")
            return out
    else:
        boxes, reason, detail = _boxes_in_image(item, rgb.shape, info)
        if boxes is None:
            reject("annotations", reason, detail)
            return out
    # boxes are clipped to the image: only the visible part of a person counts
    boxes = boxes.copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    # 2. low-resolution and overly dense boxes
    reasons = stages.box_rejections(boxes, cfg.boxes)
    # 3. square crops
    cand: list[tuple[int, tuple[int, int, int]]] = []
    for k, (b, r) in enumerate(zip(boxes, reasons)):
        if (b[2] - b[0]) <= 0 or (b[3] - b[1]) <= 0:
            reject("boxes", "box_outside_image", "", b.tolist())
            continue
        if r is not None:
            reject("boxes", r, f"{b[2] - b[0]:.0f}x{b[3] - b[1]:.0f}", b.tolist())
            continue
        sq = stages.square_crop_box(b, w, h, cfg.crop.oversize)
        if sq is None:
            reject("crop", "crop_exceeds_image", f"side {max(b[2] - b[0], b[3] - b[1]):.0f} > {min(w, h)}", b.tolist())
            continue
        cand.append((k, sq))
    # 4. NMS by distance to the image centre
    box_centres = np.array([[(boxes[k, 0] + boxes[k, 2]) / 2, (boxes[k, 1] + boxes[k, 3]) / 2] for k, _ in cand]).reshape(-1, 2)
    keep = stages.nms_centre([sq for _, sq in cand], w, h, cfg.nms.iou_threshold, box_centres)
    for (k, sq), kept in zip(cand, keep):
        b = boxes[k]
        out.rows.append({
            "crop_id": crop_id(item.source, item.key, k), "source": item.source, "source_image": item.key,
            "source_path": item.path, "image_w": w, "image_h": h, "box_index": k,
            "person_x0": float(b[0]), "person_y0": float(b[1]), "person_x1": float(b[2]), "person_y1": float(b[3]),
            "crop_x0": sq[0], "crop_y0": sq[1], "crop_size": sq[2],
            "people_in_crop": stages.people_in_crop(boxes, sq), "people_in_image": len(boxes),
            "laplacian_var": lap, "box_flags": item.flags[k] if item.flags else None, **hashes,
            "reject_reason": None if kept else "nms_suppressed",
        })
        if kept:  # 5. resize to 512 (only crops that survived)
            out.crops.append(stages.resize_square(stages.extract_crop(rgb, sq, cfg.crop.pad_value), cfg.crop))
    return out


def crop_pixels(row: dict, cfg: CurationConfig) -> np.ndarray:
    """The square crop of a manifest row at its source resolution (crop_size, crop_size, 3) uint8,
    decoded again from its source image (padded as when it was scored)."""
    rgb, _ = read_rgb_info(row["source_path"])
    sq = (int(row["crop_x0"]), int(row["crop_y0"]), int(row["crop_size"]))
    return stages.extract_crop(rgb, sq, cfg.crop.pad_value)


class ShardWorker:
    """Callable on a list of SourceImage: (candidate rows with metric columns, reject rows).

    The detector and the IQA metrics are built once per worker, on first use.
    """

    def __init__(self, cfg: CurationConfig, metrics: list | None = None):
        self.cfg = cfg
        self._metrics = metrics
        self._detector = None

    @property
    def metrics(self) -> list:
        if self._metrics is None:
            self._metrics = load_metrics(self.cfg.iqa)
        return self._metrics

    def detector(self):
        if self._detector is None:
            self._detector = make_detector(self.cfg.detector)
        return self._detector

    def __call__(self, items: list[SourceImage]) -> tuple[list[dict], list[dict]]:
        rows, rejects, crops = self.prepare(items)
        self.attach_scores(rows, self.score_crops(np.stack(crops) if crops else None))
        return rows, rejects

    def prepare(self, items: list[SourceImage]) -> tuple[list[dict], list[dict], list[np.ndarray]]:
        """Stages 1-5 of every image: (candidate rows, reject rows, crops of the rows kept by NMS)."""
        rows: list[dict] = []
        rejects: list[dict] = []
        crops: list[np.ndarray] = []
        for item in items:
            det = self.detector() if item.boxes is None else None
            try:
                p = prepare_image(item, self.cfg, det)
            except Exception as exc:  # noqa: BLE001 - one odd image must not stop the run: recorded
                rejects.append(reject_row(item.source, item.key, item.path, "processing_error", repr(exc)[:500],
                                          None, "prepare"))
                continue
            rows.extend(p.rows)
            rejects.extend(p.rejects)
            crops.extend(p.crops)
        return rows, rejects, crops

    def score_crops(self, crops: np.ndarray | None) -> dict[str, np.ndarray]:
        """6. IQA scores of crops (N, size, size, 3) uint8, per metric (N,)."""
        if crops is None or not len(crops):
            return {m.info.name: np.zeros(0) for m in self.metrics}
        return {m.info.name: np.asarray(m(crops), dtype=np.float64) for m in self.metrics}

    def attach_scores(self, rows: list[dict], scores: dict[str, np.ndarray]) -> None:
        """Metric columns on every row: the scores of the rows kept by NMS (in order), NaN on others."""
        scored = [r for r in rows if r["reject_reason"] is None]
        for m in self.metrics:
            values = scores[m.info.name]
            assert len(values) == len(scored)
            for r in rows:
                r.setdefault(metric_column(m.info.name), float("nan"))
            for r, v in zip(scored, values):
                r[metric_column(m.info.name)] = float(v)
