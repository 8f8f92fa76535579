"""No-reference quality of whole datasets (paper 4.1, Table 1).

    result = dataset_quality({"PERSONA": "data/persona/images", "COCO": "coco/person_crops"},
                             out_dir="eval/datasets")

Writes per_image.csv, summary.json (dataset -> metric -> mean), table.md (Table 1 layout:
datasets as rows, BRISQUE NIQE CLIPIQA MANIQA MUSIQ, best in bold, unavailable marked n/a
with the file they need), plots/<metric>.svg, issues.csv and the resolved settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from osdhuman.config import save_config, to_dict
from osdhuman.evaluation.config import DatasetQualityConfig
from osdhuman.evaluation.evaluate import (
    EvaluationResult,
    _json_safe,
    check_output_dir,
    remove_summaries,
    report_skipped,
    write_summaries,
)
from osdhuman.evaluation.plots import bar_charts
from osdhuman.evaluation.scoring import Issue, Item, expand_metric_names, metric_devices, resolve_metrics, score_items
from osdhuman.evaluation.tables import ColumnGroup, markdown_table
from osdhuman.imageio import scan_images
from osdhuman.outputs import atomic_write_text

# pandas (~0.35 s) is imported inside the function that writes the tables.

__all__ = ["dataset_quality"]


def dataset_quality(
    datasets: dict[str, str | Path],
    out_dir: str | Path,
    cfg: DatasetQualityConfig | None = None,
    progress: bool = True,
) -> EvaluationResult:
    cfg = cfg or DatasetQualityConfig()
    out = Path(out_dir)
    dirs = {k: Path(v) for k, v in datasets.items()}
    if not dirs:
        raise ValueError("no dataset folders given")
    for name, d in dirs.items():
        if not d.is_dir():
            raise FileNotFoundError(f"{name}: {d} is not a folder")
    check_output_dir(out, list(dirs.values()))
    names = expand_metric_names(cfg.metrics, no_reference=True)

    # 1. metrics: no-reference only
    resolved = resolve_metrics(names, cfg.backend, cfg.device, have_reference=False)
    for n in list(resolved.set_metrics):
        resolved.metrics.pop(n)
        resolved.unavailable[n] = "a two-folder metric: use `osdhuman evaluate`"

    issues: list[Issue] = []
    summary: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    rows_all: list[dict] = []
    for name, folder in dirs.items():
        # 2. images (an evenly spaced subset when max_images is set)
        files, skipped = scan_images(folder, recursive=cfg.recursive)
        report_skipped(skipped, Path(folder), name, issues)
        if cfg.max_images and len(files) > cfg.max_images:
            idx = np.linspace(0, len(files) - 1, cfg.max_images).round().astype(int)
            files = [files[i] for i in sorted(set(idx.tolist()))]
        items = [Item(str(p.relative_to(folder).with_suffix("")), p) for p in files]
        # 3. scoring
        rows, _ = score_items(name, items, resolved, cfg.batch_size, issues, cfg.seed, progress)
        for r in rows:
            r["dataset"] = r.pop("group")
            r.pop("reference", None)
        rows_all += rows
        summary[name] = {}
        for n in names:
            if n in resolved.metrics:
                a = np.asarray([r[n] for r in rows], dtype=np.float64)
                a = a[np.isfinite(a)]
                summary[name][n] = float(a.mean()) if a.size else math.nan
        counts[name] = {"images": len(files), "scored": len(rows)}

    records = {n: dataclasses.asdict(m.record) for n, m in resolved.metrics.items()}
    group = ColumnGroup("", names, summary, resolved.unavailable, records)
    table = markdown_table([group], list(dirs), digits=cfg.digits, row_header="Dataset", mark_second=False)
    result = EvaluationResult(summary, rows_all, issues, records, dict(resolved.unavailable), counts, table, out)

    # 4. outputs
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    remove_summaries(out)  # summaries last (see evaluate._write_outputs)
    cols = ["dataset", "key", "file", "height", "width"] + [n for n in names if n in resolved.metrics]
    per_image = pd.DataFrame(rows_all, columns=cols).rename(columns={"key": "image"})
    atomic_write_text(out / "per_image.csv", per_image.to_csv(index=False, float_format="%.6f"))
    issue_df = pd.DataFrame([i.as_dict() for i in issues], columns=["group", "key", "kind", "detail"])
    atomic_write_text(out / "issues.csv", issue_df.rename(columns={"group": "dataset", "key": "image"}).to_csv(index=False))
    bar_charts(summary, [n for n in names if n in resolved.metrics], out / "plots")
    save_config(cfg, out / "config.yaml")
    settings = {"datasets": {k: str(v) for k, v in dirs.items()}, "device": metric_devices(resolved), "config": to_dict(cfg),
                "metrics": records, "unavailable": result.unavailable, "counts": counts}
    atomic_write_text(out / "settings.json", json.dumps(_json_safe(settings), indent=2, default=str) + "\n")
    write_summaries(out, table, summary)
    return result
