"""What the Results tab computes from an ``evaluate`` output folder (per_image.csv,
table.md, settings.json): the Table 2 view, the per-image metric table (one row per image,
a column per method and metric, sortable), and one image's LQ / methods / HQ side by side
with its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from osdhuman.imageio import read_rgb

ID_COLUMNS = {"method", "stem", "file", "reference", "height", "width"}


class ResultsError(ValueError):
    """The folder is not an evaluate output (message names it)."""


def load_results(folder: str | Path) -> dict:
    d = Path(folder).expanduser()
    if not (d / "per_image.csv").is_file():
        raise ResultsError(f"{folder}: no per_image.csv here (point at a `osdhuman evaluate` output folder)")
    per = pd.read_csv(d / "per_image.csv")
    table = (d / "table.md").read_text() if (d / "table.md").is_file() else ""
    settings = json.loads((d / "settings.json").read_text()) if (d / "settings.json").is_file() else {}
    metrics = [c for c in per.columns if c not in ID_COLUMNS]
    return {"per_image": per, "table": table, "settings": settings, "metrics": metrics,
            "methods": list(dict.fromkeys(per["method"]))}


def wide_table(res: dict, sort_by: str | None = None, descending: bool = True) -> pd.DataFrame:
    """One row per image stem; columns '<method> <metric>'."""
    per = res["per_image"]
    wide = per.pivot_table(index="stem", columns="method", values=res["metrics"], aggfunc="first")
    wide.columns = [f"{m} {metric}" for metric, m in wide.columns]
    wide = wide.reset_index()
    if sort_by in wide.columns:
        wide = wide.sort_values(sort_by, ascending=not descending, kind="stable")
    return wide.round(4)


def side_by_side(res: dict, stem: str) -> list[tuple[np.ndarray, str]]:
    """[(LQ or first method, caption), ..., (HQ, 'HQ reference')] for one image stem."""
    per = res["per_image"]
    rows = per[per["stem"] == stem]
    items = []
    for _, r in rows.iterrows():
        vals = ", ".join(f"{m} {r[m]:.3f}" for m in res["metrics"] if pd.notna(r[m]))
        items.append((read_rgb(r["file"]), f"{r['method']}: {vals}"))
    if len(rows) and isinstance(rows.iloc[0]["reference"], str) and Path(rows.iloc[0]["reference"]).is_file():
        items.append((read_rgb(rows.iloc[0]["reference"]), "HQ reference"))
    return items
