"""Image quality metrics: one table (:data:`METRICS`), offline implementations that need no
download (PSNR-Y, SSIM-Y, NIQE, BRISQUE, PIQE, Laplacian variance) and pyiqa as an optional
backend used only when its weights are already on disk.

    from osdhuman.iqa import get_metric
    m = get_metric("niqe")            # m.record.backend says which backend runs it
    scores = m(images)                # (N, H, W, 3) uint8 / float RGB (or torch (N, 3, H, W)) -> (N,) float64

The offline metrics are numpy / numba / OpenCV on the CPU and never import torch; pyiqa and
the torch metrics import it when they are resolved.
"""

from osdhuman.iqa.batch import ImageBatch
from osdhuman.iqa.metric import Metric, SetMetric, get_metric
from osdhuman.iqa.records import BACKENDS, METRICS, PRESETS, MetricRecord, MetricSpec
from osdhuman.iqa.weights import MetricUnavailable, WeightFile

__all__ = [
    "BACKENDS",
    "METRICS",
    "ImageBatch",
    "PRESETS",
    "Metric",
    "MetricRecord",
    "MetricSpec",
    "MetricUnavailable",
    "SetMetric",
    "WeightFile",
    "get_metric",
]
