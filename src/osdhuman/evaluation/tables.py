"""Markdown tables in the paper's layouts: methods, datasets or runs (ablations) as rows, metrics as columns,
the best value of each column in **bold** and the second best <u>underlined</u>, each by that
metric's direction (Table 2 marks them in red and cyan; Table 1 bolds the best)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from osdhuman.evaluation.scoring import expand_metric_names
from osdhuman.iqa import METRICS

__all__ = ["ColumnGroup", "EvaluationFolder", "ablation_table", "format_value", "markdown_table", "rank_marks",
           "read_evaluation"]


@dataclass
class ColumnGroup:
    """One block of columns (e.g. PERSONA-Val): row name -> metric -> value."""

    title: str
    metrics: list[str]
    values: dict[str, dict[str, float]]
    unavailable: dict[str, str] | None = None  # metric -> why (column shows n/a)
    records: dict[str, dict] | None = None  # metric -> MetricRecord as a dict (backend, settings)


# (metric, backend) whose numbers are on another scale than the paper's (pyiqa) -> header tag
BACKEND_DIFFERS = {("brisque", "offline"): "brisque pkg"}
# metric -> (saturated value, footnote explaining it)
SATURATED = {
    "piqe": (100.0, "PIQE 100 is its ceiling: it is reached when no 16x16 block has enough activity to be "
                    "scored (very smooth or small images) or when every scored block is fully distorted; "
                    "read it as 'not measurable', not as 'maximally distorted'"),
}


def backend_tag(metric: str, record: dict | None) -> str:
    """' (brisque pkg)' when the column's backend differs from the paper's, else ''."""
    tag = BACKEND_DIFFERS.get((metric, (record or {}).get("backend")))
    return f" ({tag})" if tag else ""


def format_value(value: float | None, metric: str, digits: str = "paper") -> str:
    """As the paper prints it. "paper": the decimals of Table 2 (PSNR 2, others 4, keeping
    trailing zeros: 3.5750). "sig4": 4 significant digits without the leading zero of values
    below 1 (.1414, 22.41, 76.13, 3.575), the style of docs/reference.md."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if digits == "paper":
        return f"{value:.{METRICS[metric].decimals}f}"
    if digits == "sig4":
        mag = math.floor(math.log10(abs(value))) if value != 0 else 0
        dec = max(0, 3 - mag)
        s = f"{value:.{dec}f}"
        if s.startswith("0."):
            s = s[1:]
        elif s.startswith("-0."):
            s = "-" + s[2:]
        return s
    raise ValueError(f"digits must be 'paper' or 'sig4', got {digits!r}")


def rank_marks(values: dict[str, float], lower_better: bool) -> dict[str, str]:
    """row -> "best" | "second" | "" by the metric's direction (ties share a rank; NaN unranked)."""
    finite = sorted({v for v in values.values() if v is not None and not math.isnan(v)}, reverse=not lower_better)
    marks = {}
    for row, v in values.items():
        if v is None or math.isnan(v):
            marks[row] = ""
        elif v == finite[0]:
            marks[row] = "best"
        elif len(finite) > 1 and v == finite[1]:
            marks[row] = "second"
        else:
            marks[row] = ""
    return marks


def markdown_table(groups: list[ColumnGroup], rows: list[str], digits: str = "paper", row_header: str = "Method",
                   mark_second: bool = True) -> str:
    """A Markdown table: one header row naming each column (group title prefixed when there
    are several groups), one row per ``rows`` entry, marks per column, footnotes for n/a."""
    header = [row_header]
    cells: dict[str, list[str]] = {r: [r] for r in rows}
    notes: list[str] = []
    for g in groups:
        for m in g.metrics:
            spec = METRICS[m]
            arrow = "↓" if spec.lower_better else "↑"
            tag = backend_tag(m, (g.records or {}).get(m))
            header.append((f"{g.title} " if len(groups) > 1 and g.title else "") + f"{spec.label}{tag} {arrow}")
            col = {r: g.values.get(r, {}).get(m) for r in rows}
            col = {r: (float("nan") if v is None else float(v)) for r, v in col.items()}
            if tag:
                notes.append(f"- {spec.label}{tag}: {METRICS[m].note or 'not the paper backend'}; not comparable "
                             "with the paper's numbers")
            if m in SATURATED and any(v >= SATURATED[m][0] - 5e-3 for v in col.values() if not math.isnan(v)):
                notes.append(f"- {SATURATED[m][1]}.")
            marks = rank_marks(col, spec.lower_better)
            for r in rows:
                s = format_value(col[r], m, digits)
                if marks[r] == "best":
                    s = f"**{s}**"
                elif marks[r] == "second" and mark_second:
                    s = f"<u>{s}</u>"
                cells[r].append(s)
            why = (g.unavailable or {}).get(m)
            if why:
                notes.append(f"- {spec.label}{' (' + g.title + ')' if g.title else ''}: n/a, {why}")
    lines = []
    if len(groups) == 1 and groups[0].title:
        lines.append(f"**{groups[0].title}**\n")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    for r in rows:
        lines.append("| " + " | ".join(cells[r]) + " |")
    legend = "Best in **bold**" + (", second best <u>underlined</u>" if mark_second else "") + \
        " (by each metric's direction: ↓ lower is better, ↑ higher is better)."
    lines += ["", legend]
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ ablation tables (rows = runs)
@dataclass
class EvaluationFolder:
    """What an ``osdhuman evaluate`` output folder holds: one column group's worth."""

    path: str
    title: str
    metrics: list[str]
    summary: dict[str, dict[str, float]]  # method -> metric -> mean
    unavailable: dict[str, str]
    records: dict[str, dict] | None


def read_evaluation(folder: str | Path) -> EvaluationFolder:
    """summary.json + settings.json of an evaluate output folder (ValueError naming it if not one)."""

    d = Path(folder)
    try:
        summary = json.loads((d / "summary.json").read_text())
        settings = json.loads((d / "settings.json").read_text())
        names = list(expand_metric_names(settings["config"]["metrics"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{d}: not an `osdhuman evaluate` output folder ({exc})") from None
    title = settings["config"].get("title") or (Path(settings["reference"]).name if settings.get("reference") else d.name)
    values = {m: {k: (math.nan if v is None else v) for k, v in per.items()} for m, per in summary.items()}
    return EvaluationFolder(str(d), title, names, values, settings.get("unavailable") or {}, settings.get("metrics"))


def _run_values(spec: str) -> tuple[EvaluationFolder, dict[str, float]]:
    """``DIR`` (a folder with one method) or ``DIR@METHOD`` -> (folder, that method's values)."""
    path, _, method = spec.rpartition("@") if "@" in spec and not Path(spec).exists() else (spec, "", "")
    ev = read_evaluation(path)
    if not method:
        if len(ev.summary) != 1:
            raise ValueError(f"{path}: holds {len(ev.summary)} methods ({', '.join(ev.summary)}); "
                             f"name one as {path}@METHOD")
        method = next(iter(ev.summary))
    if method not in ev.summary:
        raise ValueError(f"{path}: no method {method!r} (has {', '.join(ev.summary)})")
    return ev, ev.summary[method]


def ablation_table(runs: dict[str, list[str]], row_header: str = "Run", digits: str = "paper") -> str:
    """The paper's ablation layout (Tables 3 and 4): one row per run, a column group per
    evaluation title (e.g. PERSONA-Val, PERSONA-Test) in order of first appearance.

    ``runs``: run name -> evaluate output folders (``DIR`` or ``DIR@METHOD``); a run without an
    evaluation of some group shows n/a there."""
    groups: dict[str, ColumnGroup] = {}
    for run, specs in runs.items():
        seen = set()
        for spec in specs:
            ev, values = _run_values(spec)
            if ev.title in seen:
                raise ValueError(f"run {run!r}: two evaluations titled {ev.title!r}; give each group once")
            seen.add(ev.title)
            g = groups.setdefault(ev.title, ColumnGroup(ev.title, [], {}, {}, {}))
            g.metrics += [m for m in ev.metrics if m not in g.metrics]
            g.values[run] = values
            g.unavailable.update(ev.unavailable)
            g.records.update(ev.records or {})
    return markdown_table(list(groups.values()), list(runs), digits=digits, row_header=row_header)
