"""Eq. 1 selection and split assignment, on plain score arrays (no IQA metric needed)."""

from __future__ import annotations

import numpy as np
import pytest

from osdhuman.curation import select as sel


def test_normalized_scores_is_mean_of_z_scores_with_lower_better_negated():
    a = np.array([1.0, 2.0, 3.0, 4.0])       # higher better
    b = np.array([10.0, 30.0, 20.0, 40.0])   # lower better
    s = sel.normalized_scores({"a": a, "b": b}, {"a": False, "b": True})
    za = (a - a.mean()) / a.std()
    zb = (-b - (-b).mean()) / (-b).std()
    np.testing.assert_allclose(s, (za + zb) / 2)
    # a metric constant over the pool contributes nothing
    s2 = sel.normalized_scores({"a": a, "c": np.full(4, 5.0)}, {"a": False, "c": False})
    np.testing.assert_allclose(s2, za / 2)


@pytest.mark.parametrize("n,frac,expected", [(9, 1 / 3, 3), (10, 1 / 3, 3), (11, 1 / 3, 4), (7, 0.5, 4), (5, 1.0, 5)])
def test_select_keeps_exactly_the_top_fraction(n, frac, expected):
    rng = np.random.default_rng(n)
    m = {"x": rng.normal(size=n), "y": rng.normal(size=n)}
    lower = {"x": False, "y": True}
    scores = sel.normalized_scores(m, lower)
    selected, reasons = sel.select(scores, m, lower, frac)
    assert selected.sum() == expected == sel.keep_count(n, frac)
    # the selected ones are exactly the best `expected` scores
    assert set(np.nonzero(selected)[0]) == set(np.argsort(-scores)[:expected])
    assert all(r == "not_top_fraction" for r, s in zip(reasons, selected) if not s)
    assert all(r is None for r, s in zip(reasons, selected) if s)


def test_thresholds_apply_inside_the_top_fraction_in_each_metrics_direction():
    m = {"q": np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3]), "niqe": np.array([3.0, 9.0, 4.0, 5.0, 6.0, 7.0])}
    lower = {"q": False, "niqe": True}
    scores = sel.normalized_scores(m, lower)
    selected, reasons = sel.select(scores, m, lower, 0.5, thresholds={"niqe": 5.0, "q": 0.75})
    top3 = set(np.argsort(-scores)[:3])
    assert top3 == {0, 1, 2}
    assert selected.tolist() == [True, False, False, False, False, False]
    assert reasons[1] == "below_threshold:niqe"   # niqe 9 > 5
    assert reasons[2] == "below_threshold:q"      # q 0.7 < 0.75
    assert reasons[3] == "not_top_fraction"


def test_nan_scores_are_rejected_and_ties_are_deterministic():
    m = {"x": np.array([1.0, np.nan, 1.0, 1.0])}
    scores = sel.normalized_scores(m, {"x": False})
    selected, reasons = sel.select(scores, m, {"x": False}, 0.5, tie_keys=["d", "c", "b", "a"])
    assert reasons[1] == "metric_failed:x"
    # keep_count(4, 0.5) = 2; all valid scores tie -> smallest tie keys ("a", "b") win
    assert selected.tolist() == [False, False, True, True]


def test_assign_splits_is_source_image_disjoint_and_meets_fractions():
    rng = np.random.default_rng(0)
    sources, images = [], []
    for i in range(300):
        for _ in range(int(rng.integers(1, 4))):
            sources.append("coco" if i % 3 else "oi")
            images.append(f"img{i}")
    splits = sel.assign_splits(sources, images, 0.1, 0.2, seed=3)
    per_image: dict = {}
    for s, im, sp in zip(sources, images, splits):
        per_image.setdefault((s, im), set()).add(sp)
    assert all(len(v) == 1 for v in per_image.values())
    n = len(splits)
    assert abs(splits.count("val") - 0.1 * n) <= 3
    assert abs(splits.count("test") - 0.2 * n) <= 3
    assert splits.count("train") + splits.count("val") + splits.count("test") == n
    # independent of row order
    perm = rng.permutation(n)
    splits_p = sel.assign_splits([sources[i] for i in perm], [images[i] for i in perm], 0.1, 0.2, seed=3)
    assert [splits_p[list(perm).index(i)] for i in range(n)] == splits
    # another seed gives another (still disjoint) assignment
    assert sel.assign_splits(sources, images, 0.1, 0.2, seed=4) != splits


def test_whole_sources_pinned_to_a_split():
    sources = ["voc"] * 5 + ["coco"] * 20
    images = [f"v{i}" for i in range(5)] + [f"c{i}" for i in range(20)]
    splits = sel.assign_splits(sources, images, 0.0, 0.0, {"voc": "test"})
    assert splits[:5] == ["test"] * 5 and splits[5:] == ["train"] * 20


def test_per_source_rule_samples_real_low_quality_crops():
    from osdhuman.curation.config import SourceSelection

    rng = np.random.default_rng(5)
    n_a, n_v = 30, 20
    m = {"q": np.concatenate([rng.uniform(0.5, 1.0, n_a), rng.uniform(0.0, 0.8, n_v)])}
    lower = {"q": False}
    sources = ["a"] * n_a + ["voc"] * n_v
    keys = [f"k{i:03d}" for i in range(n_a + n_v)]
    scores = sel.normalized_scores(m, lower)
    rule = SourceSelection(keep_fraction=1.0, at_most={"q": 0.5}, max_count=4)
    selected, reasons = sel.select_per_source(scores, m, lower, sources, 1 / 3, {}, {"voc": rule}, keys, seed=1)
    a, v = selected[:n_a], selected[n_a:]
    # the global rule ranks "a" among itself: exactly its top third
    assert a.sum() == sel.keep_count(n_a, 1 / 3)
    assert set(np.nonzero(a)[0]) == set(np.argsort(-scores[:n_a])[: a.sum()])
    # voc: only crops no better than q = 0.5, at most 4 of them, a seeded sample
    lq = m["q"][n_a:] <= 0.5
    assert v.sum() == min(4, lq.sum()) and (m["q"][n_a:][v] <= 0.5).all()
    assert {reasons[n_a + j] for j in np.nonzero(~lq)[0]} == {"above_at_most:q"}
    assert {reasons[n_a + j] for j in np.nonzero(lq & ~v)[0]} <= {"not_sampled"}
    again, _ = sel.select_per_source(scores, m, lower, sources, 1 / 3, {}, {"voc": rule}, keys, seed=1)
    assert (again == selected).all()
    other, _ = sel.select_per_source(scores, m, lower, sources, 1 / 3, {}, {"voc": rule}, keys, seed=2)
    assert other[:n_a].tolist() == a.tolist()
