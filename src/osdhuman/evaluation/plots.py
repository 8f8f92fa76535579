"""One bar chart PNG per metric (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

from osdhuman.iqa import METRICS
from osdhuman.outputs import atomic_path

__all__ = ["bar_charts"]


def bar_charts(summary: dict[str, dict[str, float]], metrics: list[str], out_dir: Path, title: str = "") -> list[Path]:
    """``summary`` row -> metric -> mean; writes ``out_dir/<metric>.png``; best bar highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = list(summary)
    for m in metrics:
        vals = [summary[r].get(m, math.nan) for r in rows]
        finite = [v for v in vals if v is not None and not math.isnan(v)]
        if not finite:
            continue
        spec = METRICS[m]
        best = min(finite) if spec.lower_better else max(finite)
        fig, ax = plt.subplots(figsize=(max(3.0, 0.9 * len(rows) + 1.5), 3.2), dpi=120)
        colors = ["#d62728" if v == best else "#7f7f7f" for v in vals]
        ax.bar(range(len(rows)), [0 if v is None or math.isnan(v) else v for v in vals], color=colors)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(rows, rotation=30, ha="right", fontsize=8)
        arrow = "lower is better" if spec.lower_better else "higher is better"
        ax.set_title(f"{title + ': ' if title else ''}{spec.label} ({arrow})", fontsize=9)
        for i, v in enumerate(vals):
            if v is not None and not math.isnan(v):
                ax.text(i, v, f"{v:.{spec.decimals}f}", ha="center", va="bottom", fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{m}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(path)
    return written
