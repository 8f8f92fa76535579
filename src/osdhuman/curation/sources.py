"""Input sources of HQ-ACF: ``--source`` specs and their annotation parsers.

Spec grammar: ``[NAME=]KIND:ARG[:ARG...]`` with

    coco:ANNOTATIONS.json:IMAGE_DIR                    COCO and Objects365 (same format)
    openimages:BOXES.csv:CLASS_DESCRIPTIONS.csv:IMAGE_DIR
    crowdhuman:ANNOTATION.odgt:IMAGE_DIR
    voc:ANNOTATIONS_DIR:IMAGE_DIR                      Pascal VOC XML files (the paper's test source)
    folder:DIR                                         unlabelled; a person detector gives boxes

NAME (default: the kind, numbered when repeated) names the source in the manifest and in
``split.source_splits`` (e.g. ``voc:VOC2012/Annotations:VOC2012/JPEGImages`` then ``--split-source voc=test``).

Parsers read the whole annotation file before any image work starts, streaming it (COCO
json through ijson, CSV / .odgt line by line) and handing the images to a sink in order
(``curation/records.py`` spills them to parquet): an unreadable or invalid file raises
:class:`SourceError`; a malformed *row* becomes a reject record and the rest of the file is used. Boxes are ``[x0, y0, x1, y1]`` pixels of the image as displayed
(EXIF orientation applied); Open Images boxes are stored normalised and scaled at read time.
For COCO, whose annotations give the image size, boxes annotated on the stored (un-rotated)
pixels of an EXIF-rotated file are detected by that size and rotated with the image.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ijson
import numpy as np

from osdhuman.curation.config import LabelConfig
from osdhuman.curation.stages import box_iou
from osdhuman.imageio import scan_images

KIND_ARGS = {"coco": 2, "openimages": 3, "crowdhuman": 2, "voc": 2, "folder": 1}
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class SourceError(ValueError):
    """A --source spec or annotation file that cannot be used (raised before any work)."""


@dataclass
class SourceSpec:
    name: str
    kind: str
    args: list[str]

    @property
    def spec(self) -> str:
        return f"{self.name}={self.kind}:" + ":".join(self.args)


@dataclass
class SourceImage:
    """One input image and its person boxes (None: run the detector)."""

    source: str
    key: str  # image id inside the source
    path: str
    boxes: list[list[float]] | None = None
    size: tuple[int, int] | None = None  # (w, h) stated by the annotations
    normalized: bool = False  # boxes in [0, 1] (Open Images)
    flags: list[str] | None = None  # per box: recorded annotation flags, comma-joined ("IsOccluded,IsTruncated")

    def to_json(self) -> dict:
        return {"source": self.source, "key": self.key, "path": self.path, "boxes": self.boxes,
                "size": list(self.size) if self.size else None, "normalized": self.normalized,
                "flags": self.flags}

    @staticmethod
    def from_json(d: dict) -> SourceImage:
        return SourceImage(d["source"], d["key"], d["path"], d["boxes"],
                           tuple(d["size"]) if d.get("size") else None, d.get("normalized", False),
                           d.get("flags"))


@dataclass
class ParsedSource:
    spec: SourceSpec
    images: list[SourceImage] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)  # malformed / skipped annotation rows
    sink: Callable[[SourceImage], None] | None = None  # given: images go there (in order), not to .images

    def add(self, item: SourceImage) -> None:
        """Hand ``item`` on, unless its file lies outside the source's image folder: an annotation
        naming ``../../x.jpg`` or ``/abs/x.jpg`` becomes ``path_outside_image_dir`` rows instead."""
        image_dir = self.spec.args[-1]
        if outside_folder(item.path, image_dir):
            detail = f"{item.key!r} is not a file inside the image folder {image_dir}"
            for b in item.boxes or [None]:
                self.rejects.append(reject_row(self.spec.name, item.key, item.path, "path_outside_image_dir", detail, b))
            return
        if self.sink is None:
            self.images.append(item)
        else:
            self.sink(item)


def outside_folder(path: str, folder: str) -> bool:
    """Whether ``path`` is not below ``folder``, by name (``..`` and absolute names escape; links
    inside the folder are the user's own)."""
    rel = os.path.relpath(os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(folder)))
    return rel == "." or rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel)


def reject_row(source: str, key: str | None, path: str | None, reason: str, detail: str = "",
               box=None, stage: str = "annotations") -> dict:
    b = list(box) if box is not None else [None] * 4
    return {"source": source, "source_image": key, "path": path, "stage": stage, "reason": reason,
            "detail": detail, "box_x0": b[0], "box_y0": b[1], "box_x1": b[2], "box_y1": b[3]}


def parse_specs(specs: list[str]) -> list[SourceSpec]:
    """Parse and check ``--source`` strings (files readable, dirs exist); SourceError if not."""
    if not specs:
        raise SourceError("no --source given (e.g. --source coco:annotations.json:images/)")
    out: list[SourceSpec] = []
    counts: dict[str, int] = {}
    for raw in specs:
        name = None
        body = raw
        head = raw.split(":", 1)[0]
        if "=" in head:
            name, body = raw.split("=", 1)
            if not _NAME_RE.match(name):
                raise SourceError(f"--source {raw!r}: name {name!r} must be letters, digits, '_' or '-'")
        kind, _, rest = body.partition(":")
        if kind not in KIND_ARGS:
            raise SourceError(f"--source {raw!r}: unknown kind {kind!r}; expected one of {sorted(KIND_ARGS)}")
        args = rest.split(":") if rest else []
        if len(args) != KIND_ARGS[kind] or any(not a for a in args):
            usage = {"coco": "coco:ANNOTATIONS.json:IMAGE_DIR",
                     "openimages": "openimages:BOXES.csv:CLASS_DESCRIPTIONS.csv:IMAGE_DIR",
                     "crowdhuman": "crowdhuman:ANNOTATION.odgt:IMAGE_DIR", "voc": "voc:ANNOTATIONS_DIR:IMAGE_DIR",
                     "folder": "folder:DIR"}[kind]
            raise SourceError(f"--source {raw!r}: expected {usage}")
        *files, image_dir = args
        if kind == "voc":
            if not Path(files[0]).is_dir():
                raise SourceError(f"--source {raw!r}: annotation directory {files[0]} does not exist")
            files = []
        for f in files:
            p = Path(f)
            if not p.is_file():
                raise SourceError(f"--source {raw!r}: annotation file {f} does not exist")
            try:
                with open(p, "rb") as fh:
                    fh.read(1)
            except OSError as exc:
                raise SourceError(f"--source {raw!r}: cannot read {f} ({exc.strerror or exc})") from None
        if not Path(image_dir).is_dir():
            why = "is not a directory" if Path(image_dir).exists() else "does not exist"
            raise SourceError(f"--source {raw!r}: image directory {image_dir} {why}")
        counts[kind] = counts.get(kind, 0) + 1
        if name is None:
            name = kind if counts[kind] == 1 else f"{kind}{counts[kind]}"
        if any(s.name == name for s in out):
            raise SourceError(f"--source {raw!r}: source name {name!r} used twice; give NAME=... explicitly")
        out.append(SourceSpec(name, kind, [str(Path(a).resolve()) for a in args]))
    return out


def _num(v) -> float:
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"non-finite {v!r}")
    return f


def _json_items(path: str, prefix: str):
    """Stream the items of the array at ``prefix`` ("images.item") of a JSON file (ijson, C
    backend when built): the file is never held in memory whole. SourceError when not JSON."""

    try:
        with open(path, "rb") as fh:
            yield from ijson.items(fh, prefix, use_float=True)
    except ijson.JSONError as exc:
        raise SourceError(f"{path}: not a readable COCO json ({exc})") from None
    except OSError as exc:
        raise SourceError(f"{path}: not a readable COCO json ({exc.strerror or exc})") from None


def parse_coco(spec: SourceSpec, labels: LabelConfig, sink=None) -> ParsedSource:
    """COCO / Objects365 json, streamed in three passes (categories, images, annotations):
    memory holds compact arrays of the person boxes, not the file (Objects365 v2: ~2 M images,
    ~30 M boxes). Images are emitted in file-name order."""

    ann_path, image_dir = spec.args
    categories = [c for c in _json_items(ann_path, "categories.item") if isinstance(c, dict)]
    if not categories:
        raise SourceError(f"{ann_path}: not COCO format (needs 'images', 'annotations' and 'categories' lists)")
    wanted = {n.lower() for n in labels.coco_names}
    person_ids = {c.get("id") for c in categories if str(c.get("name", "")).lower() in wanted}
    if not person_ids:
        names = sorted({str(c.get("name")) for c in categories})[:20]
        raise SourceError(f"{ann_path}: no category named {sorted(wanted)} (has {names}); set labels.coco_names")
    out = ParsedSource(spec, sink=sink)
    table, bad = _coco_images(_json_items(ann_path, "images.item"), spec.name, out)
    reject_flags = [f for f in labels.coco_reject_flags if f]
    owner = array("q")  # image index of every kept box
    coords = array("d")  # x0, y0, x1, y1 of every kept box
    for i, a in enumerate(_json_items(ann_path, "annotations.item")):
        if not isinstance(a, dict) or a.get("category_id") not in person_ids:
            continue
        idx = table.index.get(a.get("image_id"))
        if idx is None:
            out.rejects.append(reject_row(spec.name, str(a.get("image_id")), None, "malformed_annotation",
                                          f"annotations[{i}]: unknown image_id {a.get('image_id')!r}"))
            continue
        key = table.names[idx]
        try:
            if "bbox" not in a:
                raise ValueError("missing (no 'bbox' key)")
            x, y, w, h = _box4(a["bbox"])
        except (TypeError, ValueError) as exc:
            out.rejects.append(reject_row(spec.name, key, os.path.join(image_dir, key), "malformed_annotation",
                                          f"annotations[{i}]: bbox {exc}"))
            continue
        box = [x, y, x + w, y + h]
        why = _coco_box_reject(a, bad, labels.skip_crowd, reject_flags)
        if why is not None:
            out.rejects.append(reject_row(spec.name, key, os.path.join(image_dir, key), why[0], f"annotations[{i}]: {why[1]}", box))
            continue
        owner.append(idx)
        coords.extend(box)
    own = np.frombuffer(owner, dtype=np.int64) if len(owner) else np.zeros(0, np.int64)
    xy = (np.frombuffer(coords, dtype=np.float64) if len(coords) else np.zeros(0)).reshape(-1, 4)
    order = np.argsort(own, kind="stable")  # boxes of one image together, in annotation order
    counts = np.bincount(own, minlength=len(table.names))
    starts = np.concatenate([[0], np.cumsum(counts)])
    for idx in sorted(np.nonzero(counts)[0].tolist(), key=table.names.__getitem__):
        name = table.names[idx]
        bs = xy[order[starts[idx]:starts[idx + 1]]].tolist()
        out.add(SourceImage(spec.name, name, os.path.join(image_dir, name), bs, (table.ws[idx], table.hs[idx])))
    return out


@dataclass
class _CocoImages:
    """The ``images`` list, compactly: id -> index, and per index file name, width, height."""

    index: dict = field(default_factory=dict)
    ids: list = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    ws: array = field(default_factory=lambda: array("q"))
    hs: array = field(default_factory=lambda: array("q"))


def _coco_box_reject(a: dict, bad: dict, skip_crowd: bool, reject_flags: list[str]) -> tuple[str, str] | None:
    """(reason, detail) for an annotation that is not one usable person box, else None."""
    if bad and a.get("image_id") in bad:
        return "duplicate_image_id", bad[a.get("image_id")]
    if skip_crowd and a.get("iscrowd", 0):
        return "crowd_box", "iscrowd=1"
    for f in reject_flags:
        if a.get(f):
            return f"{f.lower().removeprefix('is')}_box", f"{f}={a.get(f)}"
    return None


def _box4(b) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] -> four finite floats with w, h > 0 (ValueError / TypeError if not)."""
    if not isinstance(b, (list, tuple)):
        raise TypeError(f"{b!r} is not a list of 4 numbers [x, y, w, h]")
    if len(b) != 4:
        raise ValueError(f"{len(b)} numbers, expected 4")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b):
        raise ValueError(f"{list(b)!r} is not 4 numbers")
    x, y, w, h = float(b[0]), float(b[1]), float(b[2]), float(b[3])
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h)):
        raise ValueError(f"non-finite {list(b)}")
    if w <= 0 or h <= 0:
        raise ValueError(f"empty box {list(b)}")
    return x, y, w, h


def _coco_images(entries, source: str, out: ParsedSource) -> tuple[_CocoImages, dict]:
    """``images`` list -> (the table, {id: why} for ids whose key is not unique).

    An id listed twice, or two ids naming one file, would apply one image's boxes to another
    (and give two manifest rows one PNG): every annotation of such an id becomes a
    ``duplicate_image_id`` reject instead."""
    t = _CocoImages()
    repeats: dict = {}
    for i, im in enumerate(entries):
        try:
            name, w, h = str(im["file_name"]), int(im["width"]), int(im["height"])
            image_id = im["id"]
            hash(image_id)
        except (KeyError, TypeError, ValueError) as exc:
            out.rejects.append(reject_row(source, None, None, "malformed_annotation", f"images[{i}]: {exc!r}"))
            continue
        if image_id in t.index:
            repeats[image_id] = repeats.get(image_id, 1) + 1
            continue
        t.index[image_id] = len(t.names)
        t.ids.append(image_id)
        t.names.append(name)
        t.ws.append(w)
        t.hs.append(h)
    bad = {k: f"image id {k!r} listed {n} times" for k, n in repeats.items()}
    by_name = sorted(range(len(t.names)), key=t.names.__getitem__)
    j = 0
    while j < len(by_name):  # runs of equal file names
        k = j + 1
        while k < len(by_name) and t.names[by_name[k]] == t.names[by_name[j]]:
            k += 1
        if k - j > 1:
            ids = [t.ids[x] for x in sorted(by_name[j:k])]
            bad.update({x: f"file_name {t.names[by_name[j]]!r} listed under image ids {ids[:5]}" for x in ids})
        j = k
    return t, bad


def _read_class_names(path: str) -> dict[str, str]:
    mids: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                if len(row) >= 2 and row[0] != "LabelName":
                    mids[row[0]] = row[1]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{path}: not a readable class-descriptions csv ({exc})") from None
    if not mids:
        raise SourceError(f"{path}: no 'LabelName,DisplayName' rows")
    return mids


def parse_openimages(spec: SourceSpec, labels: LabelConfig, sink=None) -> ParsedSource:
    boxes_path, classes_path, image_dir = spec.args
    mids = _read_class_names(classes_path)
    wanted = {n.lower() for n in labels.openimages_names}
    person_mids = {m for m, n in mids.items() if n.lower() in wanted}
    if not person_mids:
        raise SourceError(f"{classes_path}: none of {sorted(wanted)} is a class; set labels.openimages_names")
    rank = {n.lower(): i for i, n in enumerate(labels.openimages_names)}
    person_rank = {m: rank[mids[m].lower()] for m in person_mids}
    out = ParsedSource(spec, sink=sink)
    per_image: dict[str, list[tuple]] = {}  # key -> [(box, label rank, line, recorded flags)]
    reject_flags = [f for f in labels.openimages_reject_flags if f]
    try:
        with open(boxes_path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            need = ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"]
            if header is None or any(c not in header for c in need):
                raise SourceError(f"{boxes_path}: not an Open Images boxes csv (header needs {need}, got {header})")
            col = {c: header.index(c) for c in header}
            recorded = [c for c in OPENIMAGES_FLAGS if c in col and c not in reject_flags]
            for lineno, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    key = row[0] if row else None
                    out.rejects.append(reject_row(spec.name, key, None, "malformed_annotation",
                                                  f"{Path(boxes_path).name} line {lineno}: {len(row)} fields, expected {len(header)}"))
                    continue
                if row[col["LabelName"]] not in person_mids:
                    continue
                key = row[col["ImageID"]]
                path = str(Path(image_dir) / f"{key}.jpg")
                try:
                    x0, x1, y0, y1 = (_num(row[col[c]]) for c in ("XMin", "XMax", "YMin", "YMax"))
                    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                        raise ValueError(f"box {x0},{y0},{x1},{y1} not inside [0, 1]")
                except ValueError as exc:
                    out.rejects.append(reject_row(spec.name, key, path, "malformed_annotation",
                                                  f"{Path(boxes_path).name} line {lineno}: {exc}"))
                    continue
                flagged = next((f for f in reject_flags if f in col and row[col[f]] == "1"), None)
                if flagged is not None:
                    out.rejects.append(reject_row(spec.name, key, path, OPENIMAGES_FLAGS.get(flagged, f"{flagged}_box"),
                                                  f"line {lineno}: {flagged}=1", [x0, y0, x1, y1]))
                    continue
                flags = ",".join(c for c in recorded if row[col[c]] == "1")
                per_image.setdefault(key, []).append(([x0, y0, x1, y1], person_rank[row[col["LabelName"]]], lineno, flags))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{boxes_path}: cannot read ({exc})") from None
    for key in sorted(per_image):
        path = str(Path(image_dir) / f"{key}.jpg")
        merged = merge_label_boxes(per_image[key], labels.merge_iou)
        for b, _, lineno, _ in per_image[key]:
            if lineno in merged:
                out.rejects.append(reject_row(spec.name, key, path, "merged_label", f"line {lineno}: {merged[lineno]}", b))
        entries = [e for e in per_image[key] if e[2] not in merged]
        out.add(SourceImage(spec.name, key, path, [e[0] for e in entries], None, True, [e[3] for e in entries]))
    return out


# Open Images box flags and the reject reason each gets when it is in labels.openimages_reject_flags
OPENIMAGES_FLAGS = {"IsGroupOf": "crowd_box", "IsDepiction": "depiction_box", "IsInside": "inside_box",
                    "IsOccluded": "occluded_box", "IsTruncated": "truncated_box"}


def merge_label_boxes(entries: list[tuple], merge_iou: float) -> dict[int, str]:
    """One person boxed under several human labels ("Person" and "Man") counts once.

    ``entries`` are ``(box, label rank, line, ...)``; boxes are visited by label preference
    (rank, then line) and a box whose IoU with a kept box *of another label* exceeds
    ``merge_iou`` is merged into that box. Returns {line of every merged box: why}."""


    order = sorted(range(len(entries)), key=lambda i: (entries[i][1], entries[i][2]))
    boxes = np.array([e[0] for e in entries], dtype=np.float64).reshape(-1, 4)
    iou = box_iou(boxes, boxes)  # (N, N)
    merged: dict[int, str] = {}
    kept: list[int] = []
    for i in order:
        into = next((j for j in kept if entries[j][1] != entries[i][1] and iou[i, j] > merge_iou), None)
        if into is None:
            kept.append(i)
        else:
            merged[entries[i][2]] = f"same person as line {entries[into][2]} (IoU {iou[i, into]:.2f})"
    return merged


def parse_crowdhuman(spec: SourceSpec, labels: LabelConfig, sink=None) -> ParsedSource:
    ann_path, image_dir = spec.args
    out = ParsedSource(spec, sink=sink)
    box_key = labels.crowdhuman_box
    n_ok = 0
    seen: dict[str, list[int]] = {}  # ID -> lines (an ID listed twice is a key collision)
    records: list[tuple[int, str, list]] = []
    try:
        with open(ann_path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):  # one JSON object per line: streamed
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    key = str(rec["ID"])
                    gts = rec["gtboxes"]
                    if not isinstance(gts, list):
                        raise TypeError("gtboxes is not a list")
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    out.rejects.append(reject_row(spec.name, None, None, "malformed_annotation",
                                                  f"{Path(ann_path).name} line {lineno}: {exc!r}"))
                    continue
                n_ok += 1
                seen.setdefault(key, []).append(lineno)
                records.append((lineno, key, _crowdhuman_boxes(spec.name, key, str(Path(image_dir) / f"{key}.jpg"),
                                                                gts, lineno, box_key, labels, out)))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{ann_path}: not a text .odgt file ({exc})") from None
    except OSError as exc:
        raise SourceError(f"{ann_path}: cannot read ({exc.strerror or exc})") from None
    if n_ok == 0 and out.rejects:
        raise SourceError(f"{ann_path}: no valid CrowdHuman .odgt line ({out.rejects[0]['detail']})")
    rejects = []
    for lineno, key, boxes in records:
        if len(seen[key]) > 1:
            path = str(Path(image_dir) / f"{key}.jpg")
            rejects += [reject_row(spec.name, key, path, "duplicate_image_id",
                                   f"line {lineno}: ID {key!r} on lines {seen[key][:5]}", b) for b in boxes]
    out.rejects.extend(rejects)
    for _lineno, key, boxes in sorted(records, key=lambda r: r[1]):  # emitted in ID order
        if len(seen[key]) == 1 and boxes:
            out.add(SourceImage(spec.name, key, str(Path(image_dir) / f"{key}.jpg"), boxes))
    return out


def _crowdhuman_boxes(source: str, key: str, path: str, gts: list, lineno: int, box_key: str,
                      labels: LabelConfig, out: ParsedSource) -> list[list[float]]:
    """Person boxes of one .odgt line; ``mask`` regions and ``ignore`` boxes become reject rows."""
    boxes = []
    for j, g in enumerate(gts):
        if not isinstance(g, dict):
            continue
        try:
            x, y, w, h = (_num(v) for v in g[box_key])
            if w <= 0 or h <= 0:
                raise ValueError(f"empty box {g[box_key]}")
        except (KeyError, TypeError, ValueError) as exc:
            if g.get("tag") == "person":
                out.rejects.append(reject_row(source, key, path, "malformed_annotation",
                                              f"line {lineno} gtboxes[{j}].{box_key}: {exc}"))
            elif g.get("tag") == "mask":  # mask regions often carry only an hbox or fbox
                out.rejects.append(reject_row(source, key, path, "mask_box", f"line {lineno} gtboxes[{j}]: tag=mask"))
            continue
        box = [x, y, x + w, y + h]
        if g.get("tag") != "person":  # "mask": crowds, reflections, posters: not one person
            out.rejects.append(reject_row(source, key, path, "mask_box" if g.get("tag") == "mask" else "not_person",
                                          f"line {lineno} gtboxes[{j}]: tag={g.get('tag')!r}", box))
            continue
        extra = g.get("extra") or {}
        if labels.crowdhuman_reject_ignore and isinstance(extra, dict) and extra.get("ignore", 0):
            out.rejects.append(reject_row(source, key, path, "ignore_flagged", f"line {lineno} gtboxes[{j}]", box))
            continue
        boxes.append(box)
    return boxes


def parse_voc(spec: SourceSpec, labels: LabelConfig, sink=None) -> ParsedSource:
    """Pascal VOC: one XML per image; <object><name>person</name><bndbox> 1-based pixel indices."""
    ann_dir, image_dir = spec.args
    files = sorted(Path(ann_dir).glob("*.xml"))
    if not files:
        raise SourceError(f"{ann_dir}: no Pascal VOC .xml annotation files")
    wanted = {n.lower() for n in labels.coco_names}
    out = ParsedSource(spec, sink=sink)
    found: list[tuple[str, str, list, tuple | None]] = []  # (xml name, image file name, boxes, size)
    for f in files:
        try:
            root = ET.parse(f).getroot()
            name = (root.findtext("filename") or f"{f.stem}.jpg").strip()
            size = root.find("size")
            wh = (int(float(size.findtext("width"))), int(float(size.findtext("height")))) if size is not None else None
            if wh is not None and min(wh) <= 0:  # some VOC files state 0x0: no usable size
                wh = None
        except (ET.ParseError, OSError, TypeError, ValueError) as exc:
            out.rejects.append(reject_row(spec.name, f.stem, None, "malformed_annotation", f"{f.name}: {exc}"))
            continue
        path = str(Path(image_dir) / name)
        boxes = []
        for j, obj in enumerate(root.iter("object")):
            if (obj.findtext("name") or "").strip().lower() not in wanted:
                continue
            try:
                bb = obj.find("bndbox")
                x0, y0, x1, y1 = (_num(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                if x1 <= x0 - 1 or y1 <= y0 - 1:
                    raise ValueError(f"empty box {x0},{y0},{x1},{y1}")
            except (AttributeError, TypeError, ValueError) as exc:
                out.rejects.append(reject_row(spec.name, name, path, "malformed_annotation", f"{f.name} object {j}: {exc}"))
                continue
            box = [x0 - 1.0, y0 - 1.0, x1, y1]  # 1-based inclusive pixel indices -> continuous
            if labels.skip_difficult and (obj.findtext("difficult") or "0").strip() == "1":
                out.rejects.append(reject_row(spec.name, name, path, "difficult_box", f"{f.name} object {j}", box))
                continue
            boxes.append(box)
        found.append((f.name, name, boxes, wh))
    owners: dict[str, list[str]] = {}
    for xml, name, _, _ in found:
        owners.setdefault(name, []).append(xml)
    for xml, name, boxes, wh in found:
        path = str(Path(image_dir) / name)
        if len(owners[name]) > 1:  # two XML files naming one image: neither is trusted
            for b in boxes:
                out.rejects.append(reject_row(spec.name, name, path, "duplicate_image_id",
                                              f"{xml}: {name} is also named by {[o for o in owners[name] if o != xml][:5]}", b))
        elif boxes:
            out.add(SourceImage(spec.name, name, path, boxes, wh))
    return out


def parse_folder(spec: SourceSpec, sink=None) -> ParsedSource:
    (root,) = spec.args
    out = ParsedSource(spec, sink=sink)
    files, skipped = scan_images(root)
    for p in files:
        out.add(SourceImage(spec.name, p.relative_to(root).as_posix(), str(p), None))
    for entry, reason in skipped:  # not an image extension, dangling link, link loop, directory: a row each
        out.rejects.append(reject_row(spec.name, os.path.relpath(entry, root), entry, reason, stage="list"))
    return out


def parse_source(spec: SourceSpec, labels: LabelConfig, sink=None) -> ParsedSource:
    """Parse one source; with ``sink`` the images are handed to it one by one (in order)
    instead of collected in ``.images`` (records.RecordWriter spills them to parquet)."""
    if spec.kind == "coco":
        return parse_coco(spec, labels, sink)
    if spec.kind == "openimages":
        return parse_openimages(spec, labels, sink)
    if spec.kind == "crowdhuman":
        return parse_crowdhuman(spec, labels, sink)
    if spec.kind == "voc":
        return parse_voc(spec, labels, sink)
    return parse_folder(spec, sink)
