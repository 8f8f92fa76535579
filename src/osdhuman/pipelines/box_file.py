"""``--boxes FILE``: person boxes from a COCO-style JSON file, for users with better boxes
than the built-in detector. Our own reader (the json module): ``images`` (``id``,
``file_name``) and ``annotations`` (``image_id``, ``bbox`` = x, y, width, height); when
``categories`` is present only the category named "person" is kept.

Images are matched to inputs by file name (the path as written, or its base name).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["BoxFileError", "check_boxes_inside", "load_box_file", "match_boxes"]


class BoxFileError(ValueError):
    """The box file is unreadable or names something it should not (message names it)."""


def load_box_file(path: str | Path) -> dict[str, np.ndarray]:
    """file_name -> (N, 4) float boxes x0, y0, x1, y1."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise BoxFileError(f"{p}: box file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoxFileError(f"{p}: not a readable JSON box file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise BoxFileError(f"{p}: expected a COCO-style object with 'images' and 'annotations' lists")
    person_ids = None
    if isinstance(data.get("categories"), list) and data["categories"]:
        person_ids = {c.get("id") for c in data["categories"] if isinstance(c, dict) and c.get("name") == "person"}
    try:
        names = {im["id"]: str(im["file_name"]) for im in data["images"]}
        out: dict[str, list] = {n: [] for n in names.values()}
        for k, a in enumerate(data["annotations"]):
            if person_ids is not None and a.get("category_id") not in person_ids:
                continue
            if a["image_id"] not in names:
                raise BoxFileError(f"{p}: annotation {k} names image_id {a['image_id']!r}, which is not in 'images'")
            x, y, w, h = (float(v) for v in a["bbox"])
            if w <= 0 or h <= 0:
                raise BoxFileError(f"{p}: annotation {k} has an empty bbox {a['bbox']}")
            out[names[a["image_id"]]].append([x, y, x + w, y + h])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BoxFileError):
            raise
        raise BoxFileError(f"{p}: malformed entry ({type(exc).__name__}: {exc})") from None
    return {n: np.asarray(b, dtype=np.float64).reshape(-1, 4) for n, b in out.items()}


def match_boxes(boxes: dict[str, np.ndarray], inputs: list[tuple[Path, Path]], path: str | Path) -> dict[Path, np.ndarray]:
    """Input file -> its boxes; BoxFileError if the file names an image that is not an input."""
    by_key: dict[str, Path] = {}
    for f, rel in inputs:
        by_key.setdefault(str(rel), f)
        by_key.setdefault(f.name, f)
        by_key.setdefault(str(f), f)
    matched: dict[Path, np.ndarray] = {}
    for name, b in boxes.items():
        f = by_key.get(name) or by_key.get(Path(name).name)
        if f is None:
            raise BoxFileError(f"{path}: names image {name!r}, which is not among the inputs")
        matched[f] = b
    return matched


def check_boxes_inside(boxes: np.ndarray, w: int, h: int, tolerance: float = 1.0) -> None:
    """ValueError naming the first box that lies outside the w x h image."""
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        if x0 < -tolerance or y0 < -tolerance or x1 > w + tolerance or y1 > h + tolerance:
            raise ValueError(f"box {i} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] lies outside the {w}x{h} image")
