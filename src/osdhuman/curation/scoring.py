"""IQA scoring of 512x512 crops through ``osdhuman.iqa`` (pyiqa or offline implementations).

If ``osdhuman.iqa`` itself cannot be imported, scoring degrades to the one metric that needs
nothing: the Laplacian variance of the crop (``laplacian_var``, higher = sharper), and the
report says so.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from osdhuman.curation.config import IQAConfig
from osdhuman.curation.stages import gray, laplacian_variance
from osdhuman.iqa.crops import score_crops

# osdhuman.iqa is imported inside load_metrics, where an install without it falls back to laplacian_var.


class ScoringUnavailable(RuntimeError):
    """A configured metric cannot run here (message names what is missing)."""


@dataclass
class MetricInfo:
    """What the manifest and report record about a metric."""

    name: str
    lower_better: bool
    backend: str
    settings: dict = field(default_factory=dict)


class _LaplacianFallback:
    """Crop sharpness: variance of the Laplacian of the luma (used when osdhuman.iqa is missing)."""

    def __init__(self):
        self.info = MetricInfo("laplacian_var", False, "curation-fallback", {"luma": "BT.601", "kernel": "3x3"})

    def __call__(self, crops: np.ndarray) -> np.ndarray:  # (N, H, W, 3) uint8 -> (N,)

        return np.array([laplacian_variance(gray(c)) for c in crops], dtype=np.float64)


class _SharedScorer:
    """Scores one batch of crops with every configured metric at once (``osdhuman.iqa.crops``:
    one ImageBatch per chunk, its grayscale planes made once per crop), for the members below."""

    def __init__(self, metrics: list, batch_size: int):
        self.metrics = metrics
        self.batch_size = batch_size
        self._crops = None  # the batch last scored (kept, so its identity stays unique)
        self._columns: list[np.ndarray] = []

    def column(self, k: int, crops: np.ndarray) -> np.ndarray:
        if crops is not self._crops:
            self._columns = score_crops(self.metrics, crops, self.batch_size)
            self._crops = crops
        return self._columns[k]


class _IQAMetric:
    """One metric's column: ``crops (N, H, W, 3) uint8 -> (N,)``. The members of one
    :func:`load_metrics` call share a scorer: the first one called with a batch scores it for
    all, the others read their column of the same batch (same array object)."""

    def __init__(self, metric, batch_size: int = 8, shared: _SharedScorer | None = None, index: int = 0):
        r = metric.record
        self.metric = metric
        self._shared = shared if shared is not None else _SharedScorer([metric], batch_size)
        self._index = index
        self.info = MetricInfo(r.name, bool(r.lower_better), str(r.backend), dict(getattr(r, "settings", {}) or {}))

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return self._shared.column(self._index, crops)


def load_metrics(cfg: IQAConfig) -> list:
    """Callables ``crops (N, H, W, 3) uint8 -> scores (N,)`` with ``.info`` (MetricInfo)."""
    try:
        from osdhuman.iqa import MetricUnavailable, get_metric
    except ImportError as exc:
        warnings.warn(f"osdhuman.iqa is not importable ({exc}); scoring with laplacian_var only", stacklevel=2)
        return [_LaplacianFallback()]
    resolved = []
    for name in cfg.metrics:
        try:
            resolved.append(get_metric(name, backend=cfg.backend, device=cfg.device))
        except MetricUnavailable as exc:
            raise ScoringUnavailable(f"IQA metric {name!r}: {exc}") from None
        except (KeyError, ValueError, ImportError) as exc:
            raise ScoringUnavailable(f"IQA metric {name!r}: {exc}") from None
    shared = _SharedScorer(resolved, cfg.batch_size)
    return [_IQAMetric(m, cfg.batch_size, shared, k) for k, m in enumerate(resolved)]


def metric_infos(metrics: list) -> list[dict]:
    return [dataclasses.asdict(m.info) for m in metrics]
