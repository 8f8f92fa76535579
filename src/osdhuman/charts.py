"""The project's charts, as SVG text: HQ-ACF's metric histograms and evaluate's bar charts.

One way to draw a chart. Written by hand rather than with matplotlib: the report's
histograms are a fixed cost of every build, and matplotlib spent ~0.3 s on each (figure,
tight layout, Agg raster, PNG), about 1.3 s of a 60-image build (20 ms per source image);
this text costs ~1 ms a chart, needs no plotting import, and stays sharp at any zoom
(measured 2026-12-02, ``benchmarks/curation.py --end-to-end 60``).

    svg = histogram_svg("niqe", pool_values, selected_values, lower_better=True)
    svg = bar_chart_svg("NIQE", {"ours": 3.5, "osediff": 3.9}, lower_better=True, decimals=3)
"""

from __future__ import annotations

import html
import math

import numpy as np

__all__ = ["bar_chart_svg", "histogram_svg", "nice_ticks"]

W, H = 420, 280
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 26, 34
POOL, CHOSEN = "#bbbbbb", "#2a7ab0"
BAR, BEST = "#7f7f7f", "#d62728"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, n)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda st: abs(math.log(st / raw)))  # nearest on a log scale
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def _label(v: float) -> str:
    return f"{v:.4g}"


def _text(x: float, y: float, s: str, size: int = 10, anchor: str = "middle", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
            f"{html.escape(s)}</text>")


def histogram_svg(name: str, pool: np.ndarray, chosen: np.ndarray, lower_better: bool | None) -> str:
    """SVG (W x H) of ``pool`` values in grey and ``chosen`` values in blue on the same bins;
    NaN / inf values are left out; an empty pool says so."""
    pool = np.asarray(pool, dtype=np.float64)
    chosen = np.asarray(chosen, dtype=np.float64)
    pool, chosen = pool[np.isfinite(pool)], chosen[np.isfinite(chosen)]
    direction = "" if lower_better is None else (" (lower is better)" if lower_better else " (higher is better)")
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
              f'font-family="sans-serif">'), f'<rect width="{W}" height="{H}" fill="white"/>',
             _text(W / 2, 16, name + direction, 12)]
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP  # plot area: x0..x1 left to right, y0 (bottom)..y1 (top)
    parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#333"/>')
    if not len(pool):
        parts.append(_text((x0 + x1) / 2, (y0 + y1) / 2, "no scored crops", 11))
        return "".join(parts) + "</svg>"
    # (bins + 1,); equal values get the range value +- 0.5 (numpy's rule), so hi > lo
    edges = np.histogram_bin_edges(pool, bins=min(40, max(5, len(pool) // 3)))
    lo, hi = float(edges[0]), float(edges[-1])
    counts_pool, _ = np.histogram(pool, edges)
    counts_chosen, _ = np.histogram(chosen, edges)
    top = max(1, int(counts_pool.max()))
    sx = (x1 - x0) / (hi - lo)
    sy = (y0 - y1) / (top * 1.05)
    for counts, colour in ((counts_pool, POOL), (counts_chosen, CHOSEN)):
        for k, c in enumerate(counts):
            if c:
                left, right = x0 + (edges[k] - lo) * sx, x0 + (edges[k + 1] - lo) * sx
                parts.append(f'<rect x="{left:.2f}" y="{y0 - c * sy:.2f}" width="{max(0.5, right - left - 0.4):.2f}" '
                             f'height="{c * sy:.2f}" fill="{colour}"/>')
    for t in nice_ticks(lo, hi):
        x = x0 + (t - lo) * sx
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="#333"/>')
        parts.append(_text(x, y0 + 15, _label(t), 9))
    for t in nice_ticks(0, top):
        if t != int(t):
            continue
        y = y0 - t * sy
        parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="#333"/>')
        parts.append(_text(x0 - 6, y + 3, f"{int(t)}", 9, "end"))
    parts.append(_text(x0 - 34, (y0 + y1) / 2, "crops", 9, extra=f' transform="rotate(-90 {x0 - 34} {(y0 + y1) / 2:.1f})"'))
    parts.append(f'<rect x="{x1 - 114}" y="{y1 + 4}" width="108" height="32" fill="white" fill-opacity="0.8"/>')
    for k, (label, colour) in enumerate(((f"pool ({len(pool)})", POOL), (f"selected ({len(chosen)})", CHOSEN))):
        y = y1 + 8 + 14 * k
        parts.append(f'<rect x="{x1 - 110}" y="{y}" width="10" height="10" fill="{colour}"/>')
        parts.append(_text(x1 - 96, y + 9, label, 9, "start"))
    return "".join(parts) + "</svg>"


def _frame(title: str, width: int) -> list[str]:
    return [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" viewBox="0 0 {width} {H}" '
             f'font-family="sans-serif">'), f'<rect width="{width}" height="{H}" fill="white"/>',
            _text(width / 2, 16, title, 12)]


def bar_chart_svg(title: str, values: dict[str, float], lower_better: bool, decimals: int = 3) -> str:
    """SVG of one bar per row (label -> value), the best one in red, each bar labelled with its
    value; NaN / None rows keep their place with no bar."""
    labels = list(values)
    vals = [values[k] if values[k] is not None and math.isfinite(values[k]) else math.nan for k in labels]
    finite = [v for v in vals if not math.isnan(v)]
    width = max(W, LEFT + RIGHT + 56 * len(labels))
    direction = " (lower is better)" if lower_better else " (higher is better)"
    parts = _frame(title + direction, width)
    x0, x1, y0, y1 = LEFT, width - RIGHT, H - BOTTOM - 30, TOP + 8  # room for slanted labels below
    parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#333"/>')
    best = (min(finite) if lower_better else max(finite)) if finite else None
    top = max([0.0] + finite)
    bottom = min([0.0] + finite)
    span = (top - bottom) * 1.1 or 1.0
    sy = (y0 - y1) / span
    base = y0 + bottom * sy  # the zero line (above y0 when values are negative)
    slot = (x1 - x0) / max(1, len(labels))
    for i, (label, v) in enumerate(zip(labels, vals)):
        cx = x0 + slot * (i + 0.5)
        if not math.isnan(v):
            y_top, h = (base - v * sy, v * sy) if v >= 0 else (base, -v * sy)
            bw = min(slot * 0.7, 64.0)  # bar width: at most 64 px, however few rows
            parts.append(f'<rect x="{cx - bw / 2:.2f}" y="{y_top:.2f}" width="{bw:.2f}" '
                         f'height="{max(h, 0.5):.2f}" fill="{BEST if v == best else BAR}"/>')
            parts.append(_text(cx, y_top - 3, f"{v:.{decimals}f}", 9))
        parts.append(_text(cx, y0 + 12, label, 9, "end", extra=f' transform="rotate(-30 {cx:.1f} {y0 + 12})"'))
    for t in nice_ticks(bottom, top):
        y = base - t * sy
        parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="#333"/>')
        parts.append(_text(x0 - 6, y + 3, _label(t), 9, "end"))
    return "".join(parts) + "</svg>"
