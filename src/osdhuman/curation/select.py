"""Selection (paper Eq. 1) and split assignment.

    score_j = 1/N * sum_i (s_i * M_ij - mu_i) / sigma_i

with s_i = -1 for metrics where lower is better (NIQE, BRISQUE, PIQE), mu_i and sigma_i the
mean and standard deviation of s_i * M_i over the whole pool. The top ``keep_fraction`` of the
pool by score is kept, and of those only crops that pass every per-metric threshold.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def normalized_scores(metrics: dict[str, np.ndarray], lower_better: dict[str, bool],
                      stats_mask: np.ndarray | None = None) -> np.ndarray:
    """Eq. 1: mean over metrics of the per-metric z-score (lower-better metrics negated).

    NaN scores (a metric that failed on a crop) are left out of mu/sigma and make that crop's
    score NaN. A metric constant over the pool contributes 0. ``stats_mask`` (N,) bool: only
    those crops give mu and sigma (all crops are scored with them).
    """
    names = list(metrics)
    if not names:
        raise ValueError("normalized_scores: no metrics")
    n = len(np.asarray(metrics[names[0]]))
    total = np.zeros(n, dtype=np.float64)
    for name in names:
        m = np.asarray(metrics[name], dtype=np.float64)  # (N,)
        if lower_better[name]:
            m = -m
        finite = np.isfinite(m)
        if stats_mask is not None:
            finite &= np.asarray(stats_mask, dtype=bool)
        if finite.any():
            mu = m[finite].mean()
            sigma = m[finite].std()
        else:
            mu, sigma = 0.0, 0.0
        z = (m - mu) / sigma if sigma > 0 else np.where(np.isfinite(m), 0.0, np.nan)
        total += z
    return total / len(names)


def keep_count(n: int, fraction: float) -> int:
    """How many of ``n`` pool crops the top fraction holds (round half up)."""
    return min(n, math.floor(fraction * n + 0.5))


def select(
    scores: np.ndarray,
    metrics: dict[str, np.ndarray],
    lower_better: dict[str, bool],
    keep_fraction: float,
    thresholds: dict[str, float] | None = None,
    tie_keys: list[str] | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """(selected mask (N,), reject reason per crop).

    Reasons: ``metric_failed:<name>`` (NaN score), ``not_top_fraction``,
    ``below_threshold:<name>`` (in the top fraction but failing that metric's threshold).
    Ties in score are broken by ``tie_keys`` (e.g. crop ids) so the result is deterministic.
    """
    thresholds = thresholds or {}
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    reasons: list[str | None] = [None] * n
    valid = np.isfinite(scores)
    for name, m in metrics.items():
        bad = ~np.isfinite(np.asarray(m, dtype=np.float64))
        for i in np.nonzero(bad)[0]:
            if reasons[i] is None:
                reasons[i] = f"metric_failed:{name}"
    pool = np.nonzero(valid)[0]
    k = keep_count(n, keep_fraction)
    keys = tie_keys if tie_keys is not None else [f"{i:012d}" for i in range(n)]
    ranked = sorted(pool.tolist(), key=lambda i: (-scores[i], keys[i]))
    top = set(ranked[:k])
    selected = np.zeros(n, dtype=bool)
    for i in range(n):
        if reasons[i] is not None:
            continue
        if i not in top:
            reasons[i] = "not_top_fraction"
            continue
        for name, t in thresholds.items():
            v = float(metrics[name][i])
            ok = v <= t if lower_better[name] else v >= t
            if not ok:
                reasons[i] = f"below_threshold:{name}"
                break
        else:
            selected[i] = True
    return selected, reasons


def select_per_source(
    scores: np.ndarray,
    metrics: dict[str, np.ndarray],
    lower_better: dict[str, bool],
    sources: list[str],
    keep_fraction: float,
    thresholds: dict[str, float],
    rules: dict,
    tie_keys: list[str],
    seed: int = 0,
) -> tuple[np.ndarray, list[str | None]]:
    """:func:`select` per group: the sources named in ``rules`` (SourceSelection) each by their
    own rule, all other sources together by the global rule. Extra reasons:
    ``above_at_most:<name>`` (better than the rule's ``at_most`` bound) and ``not_sampled``
    (beyond the rule's ``max_count``; the sample is a seeded hash order, not the best scores).
    """
    scores = np.asarray(scores, dtype=np.float64)
    src = np.asarray(sources, dtype=object)
    n = len(scores)
    selected = np.zeros(n, dtype=bool)
    reasons: list[str | None] = [None] * n
    groups = [(None, np.nonzero(~np.isin(src, list(rules)))[0])] + [(k, np.nonzero(src == k)[0]) for k in rules]
    for name, idx in groups:
        if len(idx) == 0:
            continue
        rule = rules.get(name) if name is not None else None
        sub = {k: np.asarray(v, dtype=np.float64)[idx] for k, v in metrics.items()}
        keys = [tie_keys[i] for i in idx]
        s, r = select(scores[idx], sub, lower_better, keep_fraction if rule is None else rule.keep_fraction,
                      thresholds if rule is None else rule.thresholds, keys)
        if rule is not None:
            for j in np.nonzero(s)[0]:
                for m, t in rule.at_most.items():
                    v = sub[m][j]
                    if (v < t) if lower_better[m] else (v > t):
                        s[j], r[j] = False, f"above_at_most:{m}"
                        break
            chosen = np.nonzero(s)[0]
            if rule.max_count and len(chosen) > rule.max_count:
                order = sorted(chosen.tolist(), key=lambda j: _rank_key(seed, name, keys[j]))
                for j in order[rule.max_count:]:
                    s[j], r[j] = False, "not_sampled"
        selected[idx] = s
        for j, i in enumerate(idx):
            reasons[i] = r[j]
    return selected, reasons


def _rank_key(seed: int, source: str, image: str) -> str:
    return hashlib.sha256(f"{seed}\0{source}\0{image}".encode()).hexdigest()


SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}  # a duplicate group with pinned members goes to the first


def assign_splits(
    sources: list[str],
    images: list[str],
    val_fraction: float,
    test_fraction: float,
    source_splits: dict[str, str] | None = None,
    seed: int = 0,
    groups: list[str | None] | None = None,
) -> list[str]:
    """Split per crop (``sources[i]``, ``images[i]`` name its source image; ``groups[i]`` its
    duplicate group or None).

    The unit is the duplicate group (else the source image): all its crops get one split, so
    the same photo reached through two sources never lands in two splits. A unit holding a
    crop of a source named in ``source_splits`` goes to that split (test before val before
    train when members are pinned differently). The other units are ordered by a seeded hash
    and dealt to val, then test, until each holds its fraction of those crops; the rest is
    train. The result depends only on the set of units, not their order.
    """
    source_splits = source_splits or {}
    groups = groups if groups is not None else [None] * len(sources)
    n = len(sources)
    out = [""] * n
    units: dict[tuple[str, str], list[int]] = {}
    for i, (s, im, g) in enumerate(zip(sources, images, groups)):
        units.setdefault(("dup", g) if isinstance(g, str) and g else (s, im), []).append(i)  # NaN: no group
    free_units: dict[tuple[str, str], list[int]] = {}
    for u, members in units.items():
        pinned = sorted({source_splits[sources[i]] for i in members if sources[i] in source_splits}, key=SPLIT_PRIORITY.get)
        if pinned:
            for i in members:
                out[i] = pinned[0]
        else:
            free_units[u] = members
    free = sum(len(v) for v in free_units.values())
    targets = [("val", val_fraction * free), ("test", test_fraction * free)]
    order = sorted(free_units, key=lambda g: _rank_key(seed, *g))
    t = 0
    filled = 0.0
    for g in order:
        members = free_units[g]
        # move to the next split once this one holds its share (a unit goes where its
        # addition brings the count closest to the target)
        while t < len(targets) and filled + len(members) / 2.0 > targets[t][1]:
            t += 1
            filled = 0.0
        split = targets[t][0] if t < len(targets) else "train"
        for i in members:
            out[i] = split
        filled += len(members)
    return out
