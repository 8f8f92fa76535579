"""Person-box geometry shared by HQ-ACF curation and person-aware restoration: a leaf
module (numpy only, imports nothing from osdhuman) so that ``pipelines`` can crop people
exactly as ``curation`` does without importing curation.

Boxes are float ``(x0, y0, x1, y1)`` in pixels; square crops are integer ``(x0, y0, side)``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["box_iou", "centre_distance", "expand_box", "square_crop_box"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of boxes a (N, 4) and b (M, 4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def square_crop_box(box, image_w: int, image_h: int,
                    oversize: Literal["reject", "pad", "fit"] = "reject") -> tuple[int, int, int] | None:
    """Square ``(x0, y0, side)`` with side = the box's longer edge, centred on the box.

    The square is shifted (never shrunk) to lie inside the image. If ``side`` exceeds the
    image's shorter side it cannot fit: ``oversize="reject"`` returns None; ``"pad"`` keeps
    it centred on the box along the dimension that is too short (it then extends past the
    border and the caller pads it); ``"fit"`` shrinks the side to the image's shorter side.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = round(max(x1 - x0, y1 - y0))
    if side < 1:
        return None
    if side > min(image_w, image_h):
        if oversize == "reject":
            return None
        if oversize == "fit":
            side = min(image_w, image_h)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0

    def place(c: float, extent: int) -> int:
        start = round(c - side / 2.0)
        if side <= extent:
            return min(max(start, 0), extent - side)
        return start  # pad mode: cannot fit, stays centred

    return place(cx, image_w), place(cy, image_h), side


def expand_box(box, margin: float, style: Literal["scale", "pixels"] = "scale") -> tuple[float, float, float, float]:
    """The box grown about its centre: ``scale`` multiplies both sides by ``margin`` (1.0 =
    unchanged, HQ-ACF); ``pixels`` adds ``margin`` pixels on every side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if style == "scale":
        w, h = w * margin, h * margin
    elif style == "pixels":
        w, h = w + 2 * margin, h + 2 * margin
    else:
        raise ValueError(f"context margin style must be 'scale' or 'pixels', got {style!r}")
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def centre_distance(boxes: np.ndarray, image_w: int, image_h: int) -> np.ndarray:
    """(N,) distance of each box centre to the image centre (HQ-ACF's priority: nearest first)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.hypot((b[:, 0] + b[:, 2]) / 2 - image_w / 2, (b[:, 1] + b[:, 3]) / 2 - image_h / 2)
