"""The HQ-ACF build as numbered steps (``build_dataset``), resumable and backend-agnostic.

    1. parse sources          annotation files -> parquet records under OUT/.work/records/
                              (records.py: parallel across sources, cached by file identity)
    2. shard                  fixed-size shards planned from the records' summaries, each keyed
                              by hash(config, metric backends, digest of its images)
    3. prepare + score        ShardWorker per shard (local processes or Ray Data); each worker
                              reads its images from the records; one result file pair per shard
                              under OUT/.work/shards/ (store.py), packed when the phase is over
    4. select                 Eq. 1 z-scores over the whole pool, top fraction, thresholds
    5. split                  train / val / test, disjoint by source image
    6. write images           OUT/images/<split>/<crop_id>.png, selected crops only
    7. manifest + report      manifest.parquet, rejects.parquet, report.html

A run killed anywhere and restarted with the same arguments finds the shard files of the
same keys and skips them (after checking that their input files' size and mtime are unchanged,
``exec.verify_inputs``), and skips PNGs already written for the same selection.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from osdhuman.config import save_config, to_dict
from osdhuman.curation import dedup, detect, schema
from osdhuman.curation import records as rec_io
from osdhuman.curation import select as sel
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.executor import LocalExecutor
from osdhuman.curation.images import MARKER, write_selected
from osdhuman.curation.plan import (
    PIPELINE_VERSION,
    changed_inputs,
    config_key,
    parse_all,
    plan_shards,
    source_counts,
)
from osdhuman.curation.records import SourceRecords
from osdhuman.curation.report import write_report
from osdhuman.curation.schema import CANDIDATE_COLUMNS, metric_column
from osdhuman.curation.scoring import load_metrics, metric_infos
from osdhuman.curation.shard import ShardWorker, crop_pixels, disambiguate
from osdhuman.curation.store import ShardStore, sha
from osdhuman.outputs import LOCK_NAME, atomic_write_bytes, replace_dir

# osdhuman.curation.ray_backend (the optional ray extra) is imported inside the run that asks for it.


class OutputDirError(ValueError):
    """OUT exists and holds something that is not a build-dataset output."""


@dataclass
class BuildResult:
    out: Path
    n_images: int
    n_candidates: int
    n_scored: int
    n_selected: int
    splits: dict
    n_rejects: int
    metrics: list

    def summary(self) -> str:
        sp = ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items())) or "none"
        return (f"build-dataset: {self.n_images} source images, {self.n_candidates} candidate crops, "
                f"{self.n_scored} scored, {self.n_selected} selected ({sp}), {self.n_rejects} rejects "
                f"-> {self.out}")


def check_output_dir(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise OutputDirError(f"{out}: exists and is not a directory")

        if any(p.name != LOCK_NAME for p in out.iterdir()) and not (out / MARKER).exists():
            raise OutputDirError(f"{out}: exists, is not empty and is not a build-dataset output; choose another --out")


def _scratch(out: Path) -> Path:
    """A fresh folder beside OUT (same file system: moved into OUT by a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.parse-", dir=out.parent))


def build_dataset(cfg: CurationConfig, out: str | Path, progress: bool = True, metrics: list | None = None) -> BuildResult:
    out = Path(out)
    check_output_dir(out)
    recs, metrics = _parse_inputs(cfg, out, metrics)  # 1. errors before any work
    infos = metric_infos(metrics)
    names = [m["name"] for m in infos]
    lower = {m["name"]: m["lower_better"] for m in infos}
    thresholds = {k: v for k, v in cfg.iqa.thresholds.items() if k in lower}
    for k in set(cfg.iqa.thresholds) - set(thresholds):
        warnings.warn(f"iqa.thresholds.{k}: metric {k!r} is not scored in this run; threshold ignored",
                      stacklevel=2)
    marker = _open_output(out, cfg)

    # 2. shards keyed by config + the digest of their images
    ckey = config_key(cfg, infos)
    jobs = plan_shards(recs, ckey, cfg.exec.max_images_per_source)
    keys = [j.key for j in jobs]
    store = ShardStore(out / ".work" / "shards")
    if cfg.exec.verify_inputs:
        store.forget(changed_inputs(store, jobs))
    executor = LocalExecutor(cfg, ShardWorker(cfg, metrics))
    try:
        _run_shards(cfg, jobs, store, executor, progress)  # 3. prepare + score
        # 4.-5. select over the whole pool, split by duplicate group
        store.consolidate(keys, {j.key: j.n for j in jobs}, cfg.exec.pack_images)
        cand, rejects = _pool_frames(store, keys, recs, names, cfg)
        pool = cand["reject_reason"].isna().to_numpy()
        _select_and_split(cand, pool, cfg, names, lower, thresholds)
        # 6. the selected crops (PNG), once
        content_key = sha(ckey, json.dumps(to_dict(cfg.crop)), str(cfg.exec.png_compression),
                          *sorted(f"{k}:{store.inputs(k)}" for k in keys))  # a changed input file rewrites the PNGs
        write_selected(out, cand, cfg, marker, content_key, executor, progress)
    finally:
        executor.close()
    _write_tables(out, cand, rejects, names, infos, thresholds, cfg, recs)  # 7. manifest, rejects, report
    splits_count = dict(Counter(cand.loc[cand["selected"], "split"]))
    return BuildResult(out, sum(j.n for j in jobs), len(cand), int(pool.sum()), int(cand["selected"].sum()),
                       splits_count, len(rejects), infos)


def _parse_inputs(cfg: CurationConfig, out: Path, metrics: list | None) -> tuple[list[SourceRecords], list]:
    """1. every source parsed into parquet records, the detector and metrics loaded. OUT is
    created only once the inputs are good: until then the records live in a scratch folder
    beside it (moved in by a rename)."""
    records_root = out.resolve() / ".work" / "records"  # absolute: Ray actors run in other folders

    started = out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir())  # more than this run's lock
    scratch = None if started else _scratch(out)
    try:
        recs = parse_all(cfg, scratch or records_root)
        if any(r.kind == "folder" for r in recs):
            detect.check_detector(cfg.detector)
        metrics = metrics if metrics is not None else load_metrics(cfg.iqa)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    out.mkdir(parents=True, exist_ok=True)
    if scratch is not None:
        records_root.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(scratch, records_root)
        recs = [dataclasses.replace(r, dir=str(records_root / Path(r.dir).name)) for r in recs]
    return recs, metrics


def _open_output(out: Path, cfg: CurationConfig) -> dict:
    """The output folder's marker (what wrote it, which PNG selection it holds) and config.yaml."""
    marker = json.loads((out / MARKER).read_text()) if (out / MARKER).exists() else {}
    marker["tool"] = "osdhuman build-dataset"
    atomic_write_bytes(out / MARKER, json.dumps(marker).encode())
    save_config(cfg, out / "config.yaml")
    return marker


def _run_shards(cfg: CurationConfig, jobs: list, store: ShardStore, executor: LocalExecutor, progress: bool) -> None:
    """3. every shard not yet done, locally or on Ray; each result pair stored as it arrives."""
    pending = [j for j in jobs if not store.done(j.key)]
    sizes = {j.key: j.n for j in jobs}
    n_images = sum(sizes.values())
    bar = tqdm(total=n_images, initial=n_images - sum(j.n for j in pending), unit="img", desc="curate",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)
    kept = rejected = 0
    if cfg.exec.backend == "ray" and pending:
        from osdhuman.curation.ray_backend import ray_shards

        stream = ray_shards(cfg, pending)
    else:
        stream = executor.shards(pending)
    for key, (cand_b, rej_b, k, nrej) in stream:
        store.write(key, cand_b, rej_b)
        kept += k
        rejected += nrej
        bar.update(sizes[key])
        bar.set_postfix(crops_kept=kept, rejected=rejected, refresh=False)
    bar.close()


def _pool_frames(store: ShardStore, keys: list[str], recs: list[SourceRecords], names: list[str],
                 cfg: CurationConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidates with unique crop ids and their duplicate groups, every reject row)."""
    cand, shard_rej = store.read_all(keys)
    cand_schema = schema.candidate_schema(names)
    cand = schema.typed(cand, cand_schema) if cand is not None and len(cand) else schema.frame([], cand_schema)
    rej_frames = [rec_io.read_rejects(r) for r in recs] + ([shard_rej] if shard_rej is not None else [])
    rej_frames = [f for f in rej_frames if len(f)]
    rejects = schema.typed(pd.concat(rej_frames, ignore_index=True), schema.REJECTS) if rej_frames else schema.frame([], schema.REJECTS)
    if cand["crop_id"].duplicated().any():
        cand["crop_id"] = disambiguate(cand["crop_id"].tolist(), (cand["source"] + "/" + cand["source_image"]).tolist())
    if cand["crop_id"].duplicated().any():  # unique by construction: a bug if not
        raise RuntimeError(f"duplicate crop ids: {cand.loc[cand['crop_id'].duplicated(), 'crop_id'].head(3).tolist()}")
    # duplicate groups across every source (hashes computed in the shards)
    cand["dup_group"] = dedup.dup_group_column(cand, cfg.dedup.max_hamming, cfg.dedup.mirror, cfg.dedup.enabled)
    return cand, rejects


def _select_and_split(cand: pd.DataFrame, pool: np.ndarray, cfg: CurationConfig, names: list[str],
                      lower: dict[str, bool], thresholds: dict) -> None:
    """4. Eq. 1 scores over the pool, top fraction + thresholds per source; 5. splits disjoint
    by duplicate group (else source image), duplicates kept once. Fills cand in place."""
    cand["score"] = np.nan
    cand["selected"] = False
    cand["split"] = None
    cand["image_path"] = None
    if pool.any():
        pm = {n: cand.loc[pool, metric_column(n)].to_numpy(np.float64) for n in names}
        in_stats = ~cand.loc[pool, "source"].isin(cfg.selection.stats_exclude).to_numpy()
        scores = sel.normalized_scores(pm, lower, in_stats if in_stats.any() else None)
        rules = {k: dataclasses.replace(r, thresholds={m: t for m, t in r.thresholds.items() if m in lower},
                                        at_most={m: t for m, t in r.at_most.items() if m in lower})
                 for k, r in cfg.selection.sources.items()}
        selected, reasons = sel.select_per_source(scores, pm, lower, cand.loc[pool, "source"].tolist(),
                                                  cfg.selection.keep_fraction, thresholds, rules,
                                                  cand.loc[pool, "crop_id"].tolist(), cfg.split.seed)
        idx = np.nonzero(pool)[0]
        cand.loc[idx, "score"] = scores
        cand.loc[idx, "selected"] = selected
        cand.loc[idx, "reject_reason"] = reasons
        sidx = idx[selected]
        splits = sel.assign_splits(cand.loc[sidx, "source"].tolist(), cand.loc[sidx, "source_image"].tolist(),
                                   cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.source_splits,
                                   cfg.split.seed, cand.loc[sidx, "dup_group"].tolist())
        cand.loc[sidx, "split"] = splits
        if not cfg.dedup.keep_duplicates:
            drop = np.asarray(dedup.keep_once(cand.loc[sidx], cfg.split.source_splits), dtype=bool)
            cand.loc[sidx[drop], ["selected", "split"]] = [False, None]
            cand.loc[sidx[drop], "reject_reason"] = "duplicate_image"
            sidx = sidx[~drop]
            splits = cand.loc[sidx, "split"].tolist()
        cand.loc[sidx, "image_path"] = [f"images/{s}/{c}.png" for s, c in zip(splits, cand.loc[sidx, "crop_id"])]
    cand["selected"] = cand["selected"].astype(bool)
    cand["score"] = cand["score"].astype("float64")
    for c in ("split", "image_path", "reject_reason", "dup_group"):
        cand[c] = cand[c].astype(object).where(cand[c].notna(), None)


def _write_tables(out: Path, cand: pd.DataFrame, rejects: pd.DataFrame, names: list[str], infos: list[dict],
                  thresholds: dict, cfg: CurationConfig, recs: list[SourceRecords]) -> None:
    """7. manifest.parquet, rejects.parquet and report.html, each written atomically."""
    front = [c for c in CANDIDATE_COLUMNS if c != "reject_reason"]
    manifest = cand[front + ["dup_group"] + [metric_column(n) for n in names]
                    + ["score", "selected", "split", "reject_reason", "image_path"]]
    meta = {"osdhuman": {"pipeline": PIPELINE_VERSION, "metrics": infos, "thresholds": thresholds,
                         "keep_fraction": cfg.selection.keep_fraction,
                         "config": {k: v for k, v in to_dict(cfg).items() if k != "exec"}}}
    atomic_write_bytes(out / "manifest.parquet", schema.frame_bytes(manifest, meta))
    atomic_write_bytes(out / "rejects.parquet", schema.frame_bytes(rejects))
    inputs = source_counts(recs, cfg.exec.max_images_per_source)
    write_report(out, manifest, rejects, infos, cfg, render=lambda r: crop_pixels(r, cfg), inputs=inputs)
