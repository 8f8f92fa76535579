"""``--save-crops``: one before/after contact sheet per photo (each person's model input
beside its restoration, top-most person first), drawn with OpenCV."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["contact_sheet"]


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), thickness=-1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(before: Sequence[np.ndarray], after: Sequence[np.ndarray], thumb: int = 256,
                  labels: Sequence[str] | None = None) -> np.ndarray:
    """Rows of [before | after] thumbnails (uint8 (rows*thumb, 2*thumb + gap, 3))."""
    gap = 4
    rows = []
    for i, (b, a) in enumerate(zip(before, after)):
        name = labels[i] if labels else f"person {i + 1}"
        tb = _label(cv2.resize(b, (thumb, thumb), interpolation=cv2.INTER_AREA), f"{name}: input")
        ta = _label(cv2.resize(a, (thumb, thumb), interpolation=cv2.INTER_AREA), f"{name}: restored")
        rows.append(np.concatenate([tb, np.full((thumb, gap, 3), 255, np.uint8), ta], axis=1))
    if not rows:
        return np.full((thumb, 2 * thumb + gap, 3), 255, np.uint8)
    sep = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    out = [rows[0]]
    for r in rows[1:]:
        out += [sep, r]
    return np.concatenate(out, axis=0)
