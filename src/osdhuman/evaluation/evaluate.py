"""Evaluate restoration results against HQ references (paper 4.2, Table 2).

    result = evaluate_methods({"OSDHuman": "out/osdhuman", "OSEDiff": "out/osediff"},
                              reference="data/val/hq", out_dir="eval/val")

Steps:
  1. resolve the metrics (unavailable ones are kept with the exact file they need)
  2. pair every method's images with the references by file stem
  3. score each method in size-grouped batches (bad files recorded and skipped)
  4. FID between each method's folder and the reference folder
  5. write per_image.csv, summary.json (method -> metric -> mean), table.md (Table 2
     layout), plots/<metric>.svg, issues.csv and the resolved settings
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osdhuman.config import save_config, to_dict
from osdhuman.evaluation.config import EvaluateConfig
from osdhuman.evaluation.plots import bar_charts
from osdhuman.evaluation.scoring import (
    Issue,
    Item,
    ResolvedMetrics,
    expand_metric_names,
    metric_devices,
    resolve_metrics,
    score_items,
)
from osdhuman.evaluation.tables import ColumnGroup, markdown_table
from osdhuman.imageio import scan_images
from osdhuman.iqa import METRICS
from osdhuman.outputs import atomic_write_text

# pandas (~0.35 s) is imported inside the function that writes the tables.

__all__ = ["EvaluationResult", "check_output_dir", "evaluate_methods", "index_by_stem", "merged_table"]


@dataclass
class EvaluationResult:
    summary: dict[str, dict[str, float]]  # method -> metric -> mean
    rows: list[dict]  # one per scored image
    issues: list[Issue]
    records: dict[str, dict]  # metric -> MetricRecord as a dict
    unavailable: dict[str, str]  # metric -> why
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    table: str = ""
    out_dir: Path | None = None


def index_by_stem(folder: Path, recursive: bool, group: str, issues: list[Issue]) -> dict[str, Path]:
    """stem -> file. A stem seen twice (a.png and a.jpg, or two subfolders) loses no file: the later
    one is keyed ``a-2`` (the rule every command follows for names that collide, README "Output
    names"), and the issue says so."""
    out: dict[str, Path] = {}
    files, skipped = scan_images(folder, recursive=recursive)
    report_skipped(skipped, folder, group, issues)
    for p in files:
        key, n = p.stem, 2
        while key in out:
            key, n = f"{p.stem}-{n}", n + 1
        if key != p.stem:
            issues.append(Issue(group, p.stem, "duplicate_stem", f"{p} scored as {key}: {out[p.stem]} has the same stem"))
        out[key] = p
    return out


def report_skipped(skipped: list[tuple[str, str]], folder: Path, group: str, issues: list[Issue]) -> None:
    """Entries the listing left out (not an image, dangling link, ...) become issues naming the file."""
    for f, reason in skipped:
        key = Path(f).relative_to(folder).as_posix() if Path(f).is_relative_to(folder) else f
        issues.append(Issue(group, key, reason, f"{f}: {reason}"))


def check_output_dir(out_dir: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that is, or is inside, an input folder (never write into inputs)."""
    o = out_dir.resolve()
    for d in inputs:
        d = d.resolve()
        if o == d or d in o.parents:
            raise ValueError(f"output folder {out_dir} is inside input folder {d}; choose another -o")


def _nanmean(values: list[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def _feature_set(feats: list[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(feats) if feats else None


def evaluate_methods(
    methods: dict[str, str | Path],
    reference: str | Path | None,
    out_dir: str | Path,
    cfg: EvaluateConfig | None = None,
    progress: bool = True,
) -> EvaluationResult:
    cfg = cfg or EvaluateConfig()
    out = Path(out_dir)
    method_dirs = {name: Path(d) for name, d in methods.items()}
    ref_dir = Path(reference) if reference else None
    if not method_dirs:
        raise ValueError("no method folders given")
    for name, d in [*method_dirs.items(), *([("reference", ref_dir)] if ref_dir else [])]:
        if not d.is_dir():
            raise FileNotFoundError(f"{name}: {d} is not a folder")
    check_output_dir(out, [*method_dirs.values(), *([ref_dir] if ref_dir else [])])
    names = expand_metric_names(cfg.metrics)

    # 1. metrics
    resolved = resolve_metrics(names, cfg.backend, cfg.device, have_reference=ref_dir is not None)
    issues: list[Issue] = []

    # 2. references (and their FID features)
    ref_index = index_by_stem(ref_dir, cfg.recursive, "reference", issues) if ref_dir else {}
    ref_feats: dict[str, np.ndarray | None] = {}
    if resolved.set_metrics and ref_index:
        only_sets = ResolvedMetrics(metrics=dict(resolved.set_metrics))
        _, f = score_items("reference", [Item(k, p) for k, p in ref_index.items()], only_sets,
                           cfg.batch_size, issues, cfg.seed, progress)
        ref_feats = {k: _feature_set(v) for k, v in f.items()}

    summary: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    all_rows: list[dict] = []
    for method, folder in method_dirs.items():
        # 2. pairing by stem
        index = index_by_stem(folder, cfg.recursive, method, issues)
        items = []
        for stem, path in index.items():
            ref = ref_index.get(stem)
            if ref_dir is not None and ref is None:
                issues.append(Issue(method, stem, "missing_reference",
                                    f"{path} has no reference {stem}.* in {ref_dir}: no-reference metrics only"))
            items.append(Item(stem, path, ref))
        for stem, ref in ref_index.items():
            if stem not in index:
                issues.append(Issue(method, stem, "missing_in_method", f"reference {ref} has no result {stem}.* in {folder}"))
        # 3. scoring
        rows, feats = score_items(method, items, resolved, cfg.batch_size, issues, cfg.seed, progress)
        for r in rows:
            r["method"] = r.pop("group")
        all_rows += rows
        summary[method] = {n: _nanmean([r[n] for r in rows]) for n in resolved.image_metrics}
        # 4. FID
        for n, m in resolved.set_metrics.items():
            a, b = _feature_set(feats.get(n, [])), ref_feats.get(n)
            if a is None or b is None or len(a) < 2 or len(b) < 2:
                summary[method][n] = math.nan
                issues.append(Issue(method, "*", "metric_failed", f"{n}: needs at least 2 readable images on each side"))
            else:
                summary[method][n] = m.distance(a, b)
        summary[method] = {n: summary[method][n] for n in names if n in summary[method]}
        paired = sum(1 for r in rows if r["reference"]) if ref_dir else 0
        counts[method] = {"images": len(index), "scored": len(rows), "paired": paired}

    records = {n: dataclasses.asdict(m.record) for n, m in resolved.metrics.items()}
    title = cfg.title or (ref_dir.name if ref_dir else "")
    group = ColumnGroup(title, [n for n in names], summary, resolved.unavailable, records)
    table = markdown_table([group], list(method_dirs), digits=cfg.digits)
    result = EvaluationResult(summary, all_rows, issues, records, dict(resolved.unavailable), counts, table, out)

    # 5. outputs
    _write_outputs(result, names, out, cfg, {
        "methods": {k: str(v) for k, v in method_dirs.items()},
        "reference": str(ref_dir) if ref_dir else None,
        "device": metric_devices(resolved),
    })
    return result


def _write_outputs(result: EvaluationResult, names: list[str], out: Path, cfg, inputs: dict) -> None:
    """Every file atomically; table.md and summary.json LAST, so a run that fails while writing
    (a full disk) never leaves a set that looks complete. A previous run's summaries are
    removed first, for the same reason."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    remove_summaries(out)
    metric_cols = [n for n in names if n in result.records and METRICS[n].kind == "image"]
    front = ["method", "key", "file", "reference", "height", "width"]
    df = pd.DataFrame(result.rows, columns=front + [c for c in metric_cols])
    atomic_write_text(out / "per_image.csv", df.rename(columns={"key": "stem"}).to_csv(index=False, float_format="%.6f"))
    issues = pd.DataFrame([i.as_dict() for i in result.issues], columns=["group", "key", "kind", "detail"])
    atomic_write_text(out / "issues.csv", issues.rename(columns={"group": "method", "key": "stem"}).to_csv(index=False))
    bar_charts(result.summary, [n for n in names if n not in result.unavailable], out / "plots")
    save_config(cfg, out / "config.yaml")
    settings = {**inputs, "config": to_dict(cfg), "metrics": result.records, "unavailable": result.unavailable,
                "counts": result.counts}
    atomic_write_text(out / "settings.json", json.dumps(_json_safe(settings), indent=2, default=str) + "\n")
    write_summaries(out, result.table, result.summary)


SUMMARY_FILES = ("summary.json", "table.md")


def remove_summaries(out: Path) -> None:
    for name in SUMMARY_FILES:
        (out / name).unlink(missing_ok=True)


def write_summaries(out: Path, table: str, summary: dict) -> None:
    """table.md, then summary.json (the file --merge-with looks for) as the very last write."""
    atomic_write_text(out / "table.md", table)
    atomic_write_text(out / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def merged_table(out_dirs: list[str | Path], digits: str = "paper") -> str:
    """One table with a column group per earlier ``evaluate`` output folder, in order (the
    paper's Table 2 puts PERSONA-Val and PERSONA-Test side by side); rows are the union of
    methods in order of first appearance."""
    groups, rows = [], []
    for d in map(Path, out_dirs):
        try:
            summary = json.loads((d / "summary.json").read_text())
            settings = json.loads((d / "settings.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{d}: not an `osdhuman evaluate` output folder ({exc})") from None
        names = [n for n in expand_metric_names(settings["config"]["metrics"])]
        title = settings["config"].get("title") or (Path(settings["reference"]).name if settings.get("reference") else d.name)
        values = {m: {k: (math.nan if v is None else v) for k, v in per.items()} for m, per in summary.items()}
        groups.append(ColumnGroup(title, names, values, settings.get("unavailable") or {}, settings.get("metrics")))
        rows += [m for m in summary if m not in rows]
    return markdown_table(groups, rows, digits=digits)
