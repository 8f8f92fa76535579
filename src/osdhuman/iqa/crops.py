"""Score a batch of 8-bit crops with several metrics, the shared work done once.

Curation scores every 512x512 crop with NIQE, BRISQUE and PIQE (and possibly pyiqa metrics).
The crops of a chunk become one :class:`~osdhuman.iqa.batch.ImageBatch`, so the grayscale
planes (the Y of YIQ that NIQE and PIQE share, scikit-image gray for BRISQUE) are made once
per crop, straight from the 8-bit pixels, and, only if some metric needs it, the float RGB
array once; every metric is fed from that batch.

What is *not* shared, on purpose: each metric's local mean / variance and second scale are
those of its reference definition (NIQE: float64 MSCN of the rounded luma, MATLAB bicubic
half; PIQE: pyiqa's float32 MSCN of the stretched luma, no second scale; BRISQUE: zero-padded
separable float64 MSCN of the gray at C = 1/255, OpenCV bicubic half, the inputs its SVR was
trained on). Sharing any of them would change that metric's numbers.

    columns = score_crops([get_metric("niqe"), get_metric("piqe")], crops)  # crops (N, H, W, 3) uint8
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from osdhuman.iqa.batch import ImageBatch

__all__ = ["score_crops"]


def score_crops(metrics: Sequence, crops: np.ndarray, batch_size: int = 8) -> list[np.ndarray]:
    """One (N,) float64 array per metric for (N, H, W, 3) uint8 RGB crops, in ``batch_size``
    chunks. A metric that fails on a chunk gets NaN there (with a warning); the others go on."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 crops, got {crops.shape} {crops.dtype}")
    cols: list[list[np.ndarray]] = [[] for _ in metrics]
    for i in range(0, len(crops), max(1, batch_size)):
        batch = ImageBatch.of(crops[i:i + batch_size])  # planes made on first use, shared by all
        for k, m in enumerate(metrics):
            try:
                cols[k].append(np.asarray(m(batch), dtype=np.float64).reshape(-1))
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the run: NaN, recorded
                name = getattr(getattr(m, "record", None), "name", repr(m))
                warnings.warn(f"{name} failed on a batch: {exc!r}", stacklevel=2)
                cols[k].append(np.full(len(batch), np.nan))
    return [np.concatenate(c) if c else np.zeros(0) for c in cols]
