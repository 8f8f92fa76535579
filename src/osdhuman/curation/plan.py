"""Steps 1-2 of the HQ-ACF build: every source parsed into records, and the shards planned.

A shard is a run of ``exec.shard_size`` images of one records part file, named by the hash of
everything that changes its result (:func:`config_key`) and the digest of its images, so a
rerun with the same inputs finds its finished result and skips it.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from osdhuman.config import to_dict
from osdhuman.curation import records as rec_io
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.records import SourceRecords
from osdhuman.curation.sources import SourceError, parse_specs
from osdhuman.curation.store import ShardStore, inputs_digest, sha

PIPELINE_VERSION = "hqacf-3"  # 2: hashes and box flags in the shard rows; 3: shards of parquet records


def config_key(cfg: CurationConfig, infos: list[dict]) -> str:
    """Hash of everything that changes a shard's result (not workers, backend, report size)."""
    d = to_dict(cfg)
    d.pop("sources", None)
    d.pop("preset", None)
    d.pop("metrics_note", None)
    d["exec"] = {"shard_size": cfg.exec.shard_size}  # max_images_per_source changes the items, hashed per shard
    d.pop("selection", None)  # selection and splits are recomputed from shard results every run
    d.pop("split", None)
    d.pop("dedup", None)  # hashes are always computed; grouping is redone every run
    d["iqa"].pop("thresholds", None)
    return sha(PIPELINE_VERSION, json.dumps(d, sort_keys=True), json.dumps(infos, sort_keys=True))


@dataclass(frozen=True)
class Shard:
    """One unit of work: images ``start:stop`` of a records part file (read by the worker)."""

    key: str
    part: str
    start: int
    stop: int
    group_rows: int

    @property
    def n(self) -> int:
        return self.stop - self.start

    def payload(self) -> tuple[str, int, int, int]:
        return (self.part, self.start, self.stop, self.group_rows)


def parse_all(cfg: CurationConfig, root: str | Path) -> list[SourceRecords]:
    """Step 1: every source's records under ``root`` (raises SourceError before any work)."""
    specs = parse_specs(cfg.sources)
    names = {s.name for s in specs}
    for name in [*cfg.split.source_splits, *cfg.selection.sources, *cfg.selection.stats_exclude]:
        if name not in names:
            hint = f" (preset {cfg.preset!r} names its sources: see its file)" if cfg.preset else ""
            raise SourceError(f"source {name!r} (in split.source_splits, selection.sources or selection.stats_exclude) "
                              f"is not a source name (have {sorted(names)}){hint}")
    workers = cfg.exec.workers or os.cpu_count() or 1
    recs = rec_io.spill_all(specs, to_dict(cfg.labels), root, max(1, cfg.exec.shard_size), workers)
    for spec, r in zip(specs, recs):
        check_layout(spec, r, n_used(r, cfg.exec.max_images_per_source))
    return recs


def n_used(r: SourceRecords, limit: int) -> int:
    """Images of a source this run uses (``exec.max_images_per_source``: the first N)."""
    return r.n_images if limit <= 0 else min(limit, r.n_images)


def check_layout(spec, r: SourceRecords, n: int, sample: int = 64) -> None:
    """SourceError when none of a sample of the images an annotation file names exists: the
    image folder is laid out differently from the file names (Objects365's ``images/v1/patch8/``
    prefixes, say). Some missing images are reject rows; all missing is a wrong folder."""
    if spec.kind == "folder" or n == 0:
        return
    step = max(1, n // sample)
    paths: dict[int, list[str]] = {}
    picks = []
    for row in list(range(0, n, step))[:sample]:
        part, i = r.part_of(row)
        if part not in paths:
            paths[part] = rec_io.read_paths(r, part)
        picks.append(paths[part][i])
        if os.path.exists(picks[-1]):
            return
    root = Path(spec.args[-1])
    found = sorted(x.relative_to(root).as_posix() + ("/" if x.is_dir() else "") for x in root.iterdir())[:5] \
        if root.is_dir() else []
    first = Path(picks[0])
    rel = first.relative_to(root).as_posix() if first.is_relative_to(root) else str(first)
    raise SourceError(f"source {spec.name!r}: none of {len(picks)} sampled images it names exists under {root} "
                      f"(expected e.g. {root}/{rel}; the folder holds {found or 'nothing'}); "
                      "point IMAGE_DIR at the folder the annotation file names are relative to")


def plan_shards(recs: list[SourceRecords], ckey: str, limit: int) -> list[Shard]:
    """Step 2: shards of ``shard_size`` images, never across part files, keyed by the config
    key and the digest of their images (from the records' summary; recomputed only for a
    shard cut short by ``limit``)."""
    jobs: list[Shard] = []
    for r in recs:
        n = n_used(r, limit)
        base = 0
        for part, rows in enumerate(r.part_rows):
            for start in range(0, min(rows, n - base), r.shard_size):
                stop = min(start + r.shard_size, rows, n - base)
                digest = r.digests[(base + start) // r.shard_size]
                if stop < min(start + r.shard_size, rows):  # cut by the limit
                    items = rec_io.read_items(r.part_path(part), start, stop, r.group_rows)
                    digest = rec_io.chunk_digest([it.to_json() for it in items])
                jobs.append(Shard(sha(ckey, digest)[:32], r.part_path(part), start, stop, r.group_rows))
            base += rows
            if base >= n:
                break
    return jobs


def changed_inputs(store: ShardStore, jobs: list[Shard], threads: int = 16) -> list[str]:
    """Keys of finished shards whose input files' size or mtime differ from when they ran
    (one stat per file, in threads; the records give the paths)."""

    done = [j for j in jobs if store.done(j.key)]
    by_part: dict[str, list[Shard]] = {}
    for j in done:
        by_part.setdefault(j.part, []).append(j)
    changed = []
    with ThreadPoolExecutor(threads) as pool:
        for part, shards in by_part.items():
            paths = pq.read_table(part, columns=["path"]).column("path").to_pylist()
            now = pool.map(inputs_digest, [paths[j.start:j.stop] for j in shards])
            changed += [j.key for j, d in zip(shards, now) if d != store.inputs(j.key)]
    return changed


def source_counts(recs: list[SourceRecords], limit: int) -> dict[str, tuple[int, int]]:
    """(images, person boxes) per source as used by this run, for the report."""
    out = {}
    for r in recs:
        n = n_used(r, limit)
        if n == r.n_images:
            out[r.name] = (n, r.n_boxes)
            continue
        boxes, base = 0, 0
        for part, rows in enumerate(r.part_rows):
            items = rec_io.read_items(r.part_path(part), 0, min(rows, n - base), r.group_rows) if n > base else []
            boxes += sum(len(i.boxes) for i in items if i.boxes is not None)
            base += rows
        out[r.name] = (n, boxes)
    return out
