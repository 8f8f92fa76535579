"""The project's SVG charts: histograms and bar charts well-formed, bars that match the data, honest ticks."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from osdhuman.charts import BAR, BEST, CHOSEN, POOL, bar_chart_svg, histogram_svg, nice_ticks

NS = "{http://www.w3.org/2000/svg}"


def test_bar_heights_are_proportional_to_the_counts():
    rng = np.random.default_rng(0)
    pool = rng.normal(5, 1, 400)
    chosen = pool[pool < 4.5]
    svg = histogram_svg("niqe", np.r_[pool, np.nan, np.inf], chosen, lower_better=True)
    root = ET.fromstring(svg)
    texts = "".join(t.text or "" for t in root.iter(f"{NS}text"))
    assert "niqe (lower is better)" in texts and "pool (400)" in texts and f"selected ({len(chosen)})" in texts
    rects = [r for r in root.iter(f"{NS}rect") if r.get("fill") in (POOL, CHOSEN)]
    legend = [r for r in rects if r.get("width") == "10" and r.get("height") == "10"]
    assert len(legend) == 2
    bars = [r for r in rects if r not in legend]
    pool_h = [float(r.get("height")) for r in bars if r.get("fill") == POOL]
    chosen_h = [float(r.get("height")) for r in bars if r.get("fill") == CHOSEN]
    edges = np.histogram_bin_edges(pool, bins=min(40, max(5, len(pool) // 3)))
    counts = np.histogram(pool, edges)[0]
    assert len(pool_h) == int((counts > 0).sum())
    unit = max(pool_h) / counts.max()  # pixels per crop
    np.testing.assert_allclose(sorted(pool_h), sorted(counts[counts > 0] * unit), rtol=1e-3, atol=0.02)
    c_counts = np.histogram(chosen, edges)[0]
    np.testing.assert_allclose(sorted(chosen_h), sorted(c_counts[c_counts > 0] * unit), rtol=1e-3, atol=0.02)
    # every selected bar lies left of 4.5 on the x axis: its right edge maps below the 4.5 position
    lo, hi = edges[0], edges[-1]
    x_of = lambda v: 46 + (v - lo) * (420 - 12 - 46) / (hi - lo)
    assert max(float(r.get("x")) + float(r.get("width")) for r in bars if r.get("fill") == CHOSEN) <= x_of(4.5) + 12


def test_empty_and_constant_pools():
    empty = histogram_svg("piqe", np.array([]), np.array([]), None)
    assert "no scored crops" in empty and "(lower" not in empty
    ET.fromstring(empty)
    const = histogram_svg("x", np.array([3.0, 3.0, 3.0]), np.array([3.0]), False)
    root = ET.fromstring(const)
    assert "higher is better" in const
    heights = sorted(float(r.get("height")) for r in root.iter(f"{NS}rect")
                     if r.get("fill") in (POOL, CHOSEN) and r.get("width") != "10")
    assert len(heights) == 2 and heights[1] == pytest.approx(3 * heights[0], rel=1e-3)


def test_names_are_escaped():
    svg = histogram_svg("a<b&c", np.arange(10.0), np.arange(3.0), None)
    assert "a&lt;b&amp;c" in svg
    ET.fromstring(svg)


@pytest.mark.parametrize("lo,hi", [(0, 1), (2.3, 7.9), (-0.004, 0.013), (0, 37), (100, 100000)])
def test_nice_ticks_are_round_and_cover_the_range(lo, hi):
    t = nice_ticks(lo, hi)
    assert 3 <= len(t) <= 11
    assert all(lo - 1e-12 <= v <= hi + 1e-12 for v in t)
    steps = np.diff(t)
    np.testing.assert_allclose(steps, steps[0])
    mant = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert any(abs(mant - m) < 1e-9 for m in (1, 2, 5))
    assert t[0] - lo < steps[0] + 1e-12 and hi - t[-1] < steps[0] + 1e-12


@pytest.mark.parametrize("lower_better", [True, False])
def test_bar_chart_heights_best_bar_and_missing_rows(lower_better):
    values = {"ours": 3.5, "osediff": 7.0, "missing": float("nan"), "sd": 1.75}
    root = ET.fromstring(bar_chart_svg("NIQE", values, lower_better, decimals=2))
    bars = [r for r in root.iter(f"{NS}rect") if r.get("fill") in (BAR, BEST)]
    assert len(bars) == 3  # the NaN row keeps its label, not a bar
    heights = [float(r.get("height")) for r in bars]
    np.testing.assert_allclose(np.array(heights) / heights[0], [1.0, 2.0, 0.5], rtol=1e-3)
    best = [float(r.get("height")) for r in bars if r.get("fill") == BEST]
    assert best == [min(heights) if lower_better else max(heights)]
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert {"3.50", "7.00", "1.75", "missing", "ours"} <= set(texts)
    assert texts[0] == "NIQE (lower is better)" if lower_better else "NIQE (higher is better)"
