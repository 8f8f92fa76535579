"""One bar chart per metric, as SVG (``osdhuman.charts``: the project's one way to draw)."""

from __future__ import annotations

import math
from pathlib import Path

from osdhuman.charts import bar_chart_svg
from osdhuman.iqa import METRICS
from osdhuman.outputs import atomic_write_text

__all__ = ["bar_charts"]


def bar_charts(summary: dict[str, dict[str, float]], metrics: list[str], out_dir: Path, title: str = "") -> list[Path]:
    """``summary`` row -> metric -> mean; writes ``out_dir/<metric>.svg`` (best bar in red) for
    each metric with at least one finite value."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for m in metrics:
        values = {row: summary[row].get(m, math.nan) for row in summary}
        if not any(v is not None and math.isfinite(v) for v in values.values()):
            continue
        spec = METRICS[m]
        svg = bar_chart_svg(f"{title + ': ' if title else ''}{spec.label}", values, spec.lower_better, spec.decimals)
        written.append(atomic_write_text(out_dir / f"{m}.svg", svg))
    return written
