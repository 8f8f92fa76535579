"""The scoring loop shared by ``evaluate`` and ``dataset-quality``.

Images are read one by one (bad files are recorded and skipped), grouped by size into
batches (:class:`~osdhuman.iqa.batch.ImageBatch` of the 8-bit arrays), and every resolved
metric scores each batch: offline metrics on the CPU (numpy; torch is never imported for
them), pyiqa metrics on the chosen device. Full-reference metrics get the paired reference
batch; set metrics (FID) collect features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from osdhuman.imageio import ImageReadError, read_rgb
from osdhuman.iqa import METRICS, PRESETS, ImageBatch, MetricUnavailable, SetMetric, get_metric

# torch is imported inside the one function that seeds pyiqa's metrics: offline metrics never load it.

__all__ = ["Issue", "Item", "ResolvedMetrics", "expand_metric_names", "metric_devices", "resolve_metrics", "score_items"]


@dataclass
class Item:
    """One image to score: ``key`` (file stem), its path, and its reference (or None)."""

    key: str
    path: Path
    reference: Path | None = None


@dataclass
class Issue:
    """A file that could not be (fully) scored, and why."""

    group: str  # method or dataset name
    key: str
    kind: str  # unreadable | unreadable_reference | missing_in_method | missing_reference | size_mismatch | duplicate_stem | metric_failed
    detail: str

    def as_dict(self) -> dict:
        return {"group": self.group, "key": self.key, "kind": self.kind, "detail": self.detail}


@dataclass
class ResolvedMetrics:
    metrics: dict = field(default_factory=dict)  # name -> Metric | SetMetric
    unavailable: dict[str, str] = field(default_factory=dict)  # name -> reason

    @property
    def image_metrics(self) -> dict:
        return {k: m for k, m in self.metrics.items() if not isinstance(m, SetMetric)}

    @property
    def set_metrics(self) -> dict:
        return {k: m for k, m in self.metrics.items() if isinstance(m, SetMetric)}


def expand_metric_names(names: list[str] | str, no_reference: bool = False) -> list[str]:
    """Presets expanded, comma lists split, order kept, duplicates dropped; unknown names raise.
    With ``no_reference`` a preset contributes only its no-reference members (names given
    one by one are kept, so asking for a full-reference metric is still reported)."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for item in names:
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name:
                continue
            expanded = PRESETS.get(name, (name,))
            if no_reference and name in PRESETS:
                expanded = tuple(n for n in expanded if METRICS[n].reference == "nr")
            for n in expanded:
                if n not in METRICS:
                    raise ValueError(f"unknown metric {n!r}; metrics: {', '.join(METRICS)}; presets: {', '.join(PRESETS)}")
                if n not in out:
                    out.append(n)
    if not out:
        raise ValueError("no metrics given")
    return out


def metric_devices(resolved: ResolvedMetrics) -> str:
    """Where the resolved metrics run, e.g. "cpu" or "cpu,cuda:0" (offline ones: always the CPU)."""
    return ",".join(sorted({str(m.device) for m in resolved.metrics.values()})) or "cpu"


def resolve_metrics(names: list[str], backend: str, device: str, have_reference: bool) -> ResolvedMetrics:
    """get_metric for each name; what cannot run is kept with its reason (the rest still runs).
    ``device`` ("auto": cuda when present) is where pyiqa metrics run; torch is imported only
    for those."""
    res = ResolvedMetrics()
    for n in names:
        spec = METRICS[n]
        if spec.reference == "fr" and not have_reference:
            res.unavailable[n] = "full-reference: needs --reference HQ_DIR"
            continue
        try:
            res.metrics[n] = get_metric(n, backend=backend, device=device)
        except MetricUnavailable as exc:
            res.unavailable[n] = exc.reason
    return res


def _seed_torch(seed: int) -> None:
    import torch  # only reached for pyiqa metrics, which import it anyway

    torch.manual_seed(seed)


def score_items(
    group: str,
    items: list[Item],
    resolved: ResolvedMetrics,
    batch_size: int,
    issues: list[Issue],
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """Score ``items``; returns per-image rows (metric columns NaN where not computed) and
    set-metric features {name: [(B, D) float64 arrays]}. Problems are appended to ``issues``."""
    rows: list[dict] = []
    feats: dict[str, list[np.ndarray]] = {k: [] for k in resolved.set_metrics}
    buckets: dict[tuple, list] = {}

    def flush(key: tuple) -> None:
        batch = buckets.pop(key, [])
        if not batch:
            return
        has_ref = key[2]
        x = ImageBatch.of(np.stack([b[1] for b in batch]))  # (B, H, W, 3) uint8
        ref = ImageBatch.of(np.stack([b[2] for b in batch])) if has_ref else None
        scores: dict[str, np.ndarray] = {}
        for name, m in resolved.image_metrics.items():
            if m.record.reference == "fr" and ref is None:
                continue
            if m.record.backend != "offline":  # a network metric may draw random crops
                _seed_torch(seed)
            try:
                scores[name] = m(x, ref) if m.record.reference == "fr" else m(x)
            except Exception as exc:  # noqa: BLE001 - a metric failing on one batch must not stop the run
                for b in batch:
                    issues.append(Issue(group, b[0].key, "metric_failed", f"{name}: {exc!r}"))
        for name, m in resolved.set_metrics.items():
            try:
                feats[name].append(m.features(x))
            except Exception as exc:  # noqa: BLE001 - as above: recorded per image, the run goes on
                for b in batch:
                    issues.append(Issue(group, b[0].key, "metric_failed", f"{name}: {exc!r}"))
        for i, (item, arr, _) in enumerate(batch):
            row = {"group": group, "key": item.key, "file": str(item.path),
                   "reference": str(item.reference) if item.reference else "",
                   "height": arr.shape[0], "width": arr.shape[1]}
            for name in resolved.image_metrics:
                row[name] = float(scores[name][i]) if name in scores else math.nan
            rows.append(row)

    bar = tqdm(items, desc=f"{group}", unit="img", disable=not progress, leave=False)
    for item in bar:
        try:
            arr = read_rgb(item.path)
        except ImageReadError as exc:
            issues.append(Issue(group, item.key, "unreadable", str(exc)))
            continue
        ref_arr = None
        if item.reference is not None:
            try:
                ref_arr = read_rgb(item.reference)
            except ImageReadError as exc:
                issues.append(Issue(group, item.key, "unreadable_reference", str(exc)))
            else:
                if ref_arr.shape != arr.shape:
                    issues.append(Issue(group, item.key, "size_mismatch",
                                        f"{item.path} is {arr.shape[1]}x{arr.shape[0]}, reference {item.reference} "
                                        f"is {ref_arr.shape[1]}x{ref_arr.shape[0]}: full-reference metrics skipped"))
                    ref_arr = None
        key = (arr.shape[0], arr.shape[1], ref_arr is not None)
        buckets.setdefault(key, []).append((item, arr, ref_arr))
        if len(buckets[key]) >= batch_size:
            flush(key)
    for key in list(buckets):
        flush(key)
    bar.close()
    order = {it.key: i for i, it in enumerate(items)}
    rows.sort(key=lambda r: order.get(r["key"], 0))
    return rows, feats
