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
        from osdhuman.curation.stages import gray, laplacian_variance

        return np.array([laplacian_variance(gray(c)) for c in crops], dtype=np.float64)


class _IQAMetric:
    def __init__(self, metric, batch_size: int):
        r = metric.record
        self.metric = metric
        self.batch_size = batch_size
        self.info = MetricInfo(r.name, bool(r.lower_better), str(r.backend), dict(getattr(r, "settings", {}) or {}))

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(crops[i:i + self.batch_size]))  # (B, H, W, 3) uint8
            x = batch.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W) in [0, 1]
            with torch.inference_mode():
                try:
                    s = self.metric(x)  # (B,)
                    out.append(np.asarray(s.detach().float().cpu().numpy(), dtype=np.float64).reshape(-1))
                except Exception as exc:  # one bad batch must not stop the run: NaN, recorded
                    warnings.warn(f"{self.info.name} failed on a batch: {exc!r}")
                    out.append(np.full(len(x), np.nan))
        return np.concatenate(out) if out else np.zeros(0)


def iqa_available() -> bool:
    try:
        import osdhuman.iqa  # noqa: F401
    except ImportError:
        return False
    return True


def load_metrics(cfg: IQAConfig) -> list:
    """Callables ``crops (N, H, W, 3) uint8 -> scores (N,)`` with ``.info`` (MetricInfo)."""
    try:
        from osdhuman.iqa import MetricUnavailable, get_metric
    except ImportError as exc:
        warnings.warn(f"osdhuman.iqa is not importable ({exc}); scoring with laplacian_var only")
        return [_LaplacianFallback()]
    metrics = []
    for name in cfg.metrics:
        try:
            m = get_metric(name, backend=cfg.backend, device=cfg.device)
        except MetricUnavailable as exc:
            raise ScoringUnavailable(f"IQA metric {name!r}: {exc}") from None
        except (KeyError, ValueError, ImportError) as exc:
            raise ScoringUnavailable(f"IQA metric {name!r}: {exc}") from None
        metrics.append(_IQAMetric(m, cfg.batch_size))
    return metrics


def metric_infos(metrics: list) -> list[dict]:
    return [dataclasses.asdict(m.info) for m in metrics]
