"""Boxes drawn on images for the app (OpenCV)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def draw_boxes(rgb: np.ndarray, boxes: Sequence[Sequence[float]], labels: Sequence[str] | None = None,
               colour: tuple[int, int, int] = (255, 64, 32), squares: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """A copy of ``rgb`` with person boxes (solid) and square crops (thin, yellow) drawn."""
    out = np.ascontiguousarray(rgb).copy()
    t = max(2, round(max(out.shape[:2]) / 300))
    for x0, y0, s in squares:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x0 + s) - 1, int(y0 + s) - 1), (255, 220, 0), max(1, t // 2))
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, t)
        if labels:
            cv2.putText(out, labels[i], (x0 + 3, y0 + 6 + 12 * t), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * t, colour, t, cv2.LINE_AA)
    return out
