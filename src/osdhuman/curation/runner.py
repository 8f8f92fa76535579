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
import os
import shutil
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from osdhuman.config import from_dict, save_config, to_dict
from osdhuman.curation import dedup
from osdhuman.curation import records as rec_io
from osdhuman.curation import select as sel
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.records import SourceRecords
from osdhuman.curation.scoring import load_metrics, metric_infos
from osdhuman.curation.shard import (
    CANDIDATE_COLUMNS,
    REJECT_COLUMNS,
    ShardWorker,
    crop_pixels,
    disambiguate,
    metric_column,
)
from osdhuman.curation.sources import SourceError, SourceImage, parse_specs
from osdhuman.curation.store import (
    ShardStore,
    atomic_bytes,
    inputs_digest,
    parquet_bytes,
    sha,
)

PIPELINE_VERSION = "hqacf-3"  # 2: hashes and box flags in the shard rows; 3: shards of parquet records
MARKER = ".osdhuman-build.json"

INT_COLUMNS = ["image_w", "image_h", "box_index", "crop_x0", "crop_y0", "crop_size", "people_in_crop", "people_in_image",
               "phash", "phash_mirror"]
FLOAT_COLUMNS = ["person_x0", "person_y0", "person_x1", "person_y1", "laplacian_var"]
STR_COLUMNS = ["crop_id", "source", "source_image", "source_path", "box_flags", "content_hash", "reject_reason"]


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


# ---- helpers -------------------------------------------------------------------------
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


def _typed(df: pd.DataFrame, metric_names: list[str]) -> pd.DataFrame:
    for c in INT_COLUMNS:
        df[c] = df[c].astype("int64")
    for c in FLOAT_COLUMNS + [metric_column(n) for n in metric_names]:
        df[c] = df[c].astype("float64")
    for c in STR_COLUMNS:
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def _typed_rejects(df: pd.DataFrame) -> pd.DataFrame:
    for c in ["box_x0", "box_y0", "box_x1", "box_y1"]:
        df[c] = df[c].astype("float64")
    for c in ["source", "source_image", "path", "stage", "reason", "detail"]:
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def shard_frames(rows: list[dict], rejects: list[dict], metric_names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = CANDIDATE_COLUMNS + [metric_column(n) for n in metric_names]
    cand = _typed(pd.DataFrame(rows, columns=cols), metric_names)
    rej = _typed_rejects(pd.DataFrame(rejects, columns=REJECT_COLUMNS))
    return cand, rej


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


def _shard_schemas(metric_names: list[str]):
    """Arrow schemas of a shard's candidate and reject files (the dtypes ``_typed`` gives)."""
    import pyarrow as pa

    kinds = {**{c: pa.int64() for c in INT_COLUMNS}, **{c: pa.float64() for c in FLOAT_COLUMNS},
             **{c: pa.string() for c in STR_COLUMNS}}
    cand = pa.schema([(c, kinds[c]) for c in CANDIDATE_COLUMNS] + [(metric_column(n), pa.float64()) for n in metric_names])
    rej = pa.schema([(c, pa.float64() if c.startswith("box_") else pa.string()) for c in REJECT_COLUMNS])
    return cand, rej


def shard_bytes(rows: list[dict], rejects: list[dict], metric_names: list[str], inputs: str) -> tuple[bytes, bytes, int, int]:
    """(cand parquet, rej parquet, crops kept, rejects) of one shard, written with pyarrow from
    the row dicts (pandas costs ~10x more per small shard); ``inputs`` goes into cand's metadata."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    for data, schema, meta in zip((rows, rejects), _shard_schemas(metric_names), ({"inputs": json.dumps(inputs)}, None)):
        table = pa.Table.from_pylist(data, schema=schema)
        if meta:
            table = table.replace_schema_metadata(meta)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        out.append(buf.getvalue())
    return out[0], out[1], sum(r["reject_reason"] is None for r in rows), len(rejects)


def run_shard_to_bytes(worker: ShardWorker, items: list[SourceImage]) -> tuple[bytes, bytes, int, int]:
    """Prepare + score one shard: (cand parquet, rej parquet, crops kept, rejects); the cand
    file's metadata records the digest of the input files as they were read."""
    inputs = inputs_digest([it.path for it in items])
    rows, rejects = worker(items)
    return shard_bytes(rows, rejects, [m.info.name for m in worker.metrics], inputs)


# ---- local worker processes ------------------------------------------------------------
_WORKER: ShardWorker | None = None


def _init_worker(cfg_dict: dict) -> None:
    global _WORKER
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    warnings.simplefilter("ignore")
    _WORKER = ShardWorker(from_dict(CurationConfig, cfg_dict))


def _run_shard_payload(payload: tuple[str, int, int, int]):
    return run_shard_to_bytes(_WORKER, rec_io.read_items(*payload))


def _write_group(payload: tuple[dict, list[tuple[dict, str]], int]) -> tuple[int, list[str], str]:
    """Decode one source image once and write its selected crops as PNG (atomic, skip existing).

    ``payload``: (the crop config as a dict, [(manifest row, destination)], zlib level).
    Returns (crops written, crop ids that could not be written, reason)."""
    from osdhuman.curation import stages
    from osdhuman.curation.config import CropConfig
    from osdhuman.imageio import ImageReadError, read_rgb
    from osdhuman.outputs import atomic_write_bytes, encode_png

    crop_dict, jobs, compression = payload
    crop_cfg = from_dict(CropConfig, crop_dict)
    todo = [(r, d) for r, d in jobs if not Path(d).exists()]
    if not todo:
        return 0, [], ""
    try:
        rgb = read_rgb(todo[0][0]["source_path"])
    except ImageReadError as exc:  # the file changed or vanished since it was scored
        return 0, [r["crop_id"] for r, _ in todo], f"source_changed:{exc.reason}"
    for row, dest in todo:
        sq = (int(row["crop_x0"]), int(row["crop_y0"]), int(row["crop_size"]))
        crop = stages.resize_square(stages.extract_crop(rgb, sq, crop_cfg.pad_value), crop_cfg)
        d = Path(dest)
        d.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(d, encode_png(crop, compression))
    return len(todo), [], ""


class LocalExecutor:
    """Runs functions in ``workers`` spawned processes (or in this process when workers == 1)."""

    def __init__(self, cfg: CurationConfig, worker: ShardWorker):
        self.cfg = cfg
        self.n = cfg.exec.workers or os.cpu_count() or 1
        self.worker = worker
        self.pool = None

    def _pool(self):
        if self.pool is None and self.n > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(self.n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                            initargs=(to_dict(self.cfg),))
        return self.pool

    def _windowed(self, fn, payloads, tags):
        """Submit at most 4 tasks per worker at a time (bounded memory for millions of images)."""
        from concurrent.futures import FIRST_COMPLETED, wait

        pool = self._pool()
        it = iter(zip(tags, payloads))
        running = {}
        for tag, p in it:
            running[pool.submit(fn, p)] = tag
            if len(running) >= 4 * self.n:
                break
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                tag = running.pop(f)
                yield tag, f.result()
                nxt = next(it, None)
                if nxt is not None:
                    running[pool.submit(fn, nxt[1])] = nxt[0]

    def shards(self, jobs: list[Shard]):
        """Yield (key, result) as shards finish."""
        if self._pool() is None:
            for job in jobs:
                yield job.key, run_shard_to_bytes(self.worker, rec_io.read_items(*job.payload()))
            return
        yield from self._windowed(_run_shard_payload, (j.payload() for j in jobs), [j.key for j in jobs])

    def map_unordered(self, fn, payloads: list):
        if self._pool() is None:
            for p in payloads:
                yield fn(p)
            return
        for _, r in self._windowed(fn, payloads, range(len(payloads))):
            yield r

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


# ---- the build -------------------------------------------------------------------------
def check_output_dir(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise OutputDirError(f"{out}: exists and is not a directory")
        from osdhuman.outputs import LOCK_NAME  # the lock this run holds is not a stranger's file

        if any(p.name != LOCK_NAME for p in out.iterdir()) and not (out / MARKER).exists():
            raise OutputDirError(f"{out}: exists, is not empty and is not a build-dataset output; choose another --out")


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
    from concurrent.futures import ThreadPoolExecutor

    done = [j for j in jobs if store.done(j.key)]
    by_part: dict[str, list[Shard]] = {}
    for j in done:
        by_part.setdefault(j.part, []).append(j)
    changed = []
    import pyarrow.parquet as pq

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


def _scratch(out: Path) -> Path:
    """A fresh folder beside OUT (same file system: moved into OUT by a rename)."""
    import tempfile

    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.parse-", dir=parent))


def build_dataset(cfg: CurationConfig, out: str | Path, progress: bool = True, metrics: list | None = None) -> BuildResult:
    out = Path(out)
    check_output_dir(out)
    recs, metrics = _parse_inputs(cfg, out, metrics)  # 1. errors before any work
    infos = metric_infos(metrics)
    names = [m["name"] for m in infos]
    lower = {m["name"]: m["lower_better"] for m in infos}
    thresholds = {k: v for k, v in cfg.iqa.thresholds.items() if k in lower}
    for k in set(cfg.iqa.thresholds) - set(thresholds):
        warnings.warn(f"iqa.thresholds.{k}: metric {k!r} is not scored in this run; threshold ignored")
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
        _write_selected(out, cand, cfg, marker, content_key, executor, progress)
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
    from osdhuman.outputs import LOCK_NAME

    started = out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir())  # more than this run's lock
    scratch = None if started else _scratch(out)
    try:
        recs = parse_all(cfg, scratch or records_root)
        if any(r.kind == "folder" for r in recs):
            from osdhuman.curation.detect import check_detector

            check_detector(cfg.detector)
        metrics = metrics if metrics is not None else load_metrics(cfg.iqa)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    out.mkdir(parents=True, exist_ok=True)
    if scratch is not None:
        records_root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch, records_root)
        recs = [dataclasses.replace(r, dir=str(records_root / Path(r.dir).name)) for r in recs]
    return recs, metrics


def _open_output(out: Path, cfg: CurationConfig) -> dict:
    """The output folder's marker (what wrote it, which PNG selection it holds) and config.yaml."""
    marker = json.loads((out / MARKER).read_text()) if (out / MARKER).exists() else {}
    marker["tool"] = "osdhuman build-dataset"
    atomic_bytes(out / MARKER, json.dumps(marker).encode())
    save_config(cfg, out / "config.yaml")
    return marker


def _run_shards(cfg: CurationConfig, jobs: list, store: ShardStore, executor: LocalExecutor, progress: bool) -> None:
    """3. every shard not yet done, locally or on Ray; each result pair stored as it arrives."""
    from tqdm import tqdm

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
    cand = _typed(cand, names) if cand is not None and len(cand) else shard_frames([], [], names)[0]
    rej_frames = [rec_io.read_rejects(r) for r in recs] + ([shard_rej] if shard_rej is not None else [])
    rej_frames = [f for f in rej_frames if len(f)]
    rejects = _typed_rejects(pd.concat(rej_frames, ignore_index=True)) if rej_frames else shard_frames([], [], names)[1]
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


def _sync_images_dir(out: Path, cand: pd.DataFrame, marker: dict, content_key: str) -> None:
    """A PNG's pixels depend only on the config hashed in ``content_key``: with the same key,
    existing files are kept and only files no longer selected (or half-written by a kill) go."""
    images_dir = out / "images"
    if marker.get("images_key") != content_key:
        if images_dir.exists():
            shutil.rmtree(images_dir)
        marker["images_key"] = content_key
        atomic_bytes(out / MARKER, json.dumps(marker).encode())
    elif images_dir.exists():
        wanted = {str(out / p) for p in cand.loc[cand["selected"], "image_path"]}
        for f in list(images_dir.rglob("*")):
            if f.is_file() and str(f) not in wanted:
                f.unlink()
        for d in sorted((d for d in images_dir.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()


def _write_selected(out: Path, cand: pd.DataFrame, cfg: CurationConfig, marker: dict, content_key: str,
                    executor: LocalExecutor, progress: bool) -> None:
    """6. the selected crops not on disk yet, grouped by source image; a crop whose source can
    no longer be read leaves the dataset (its reason recorded)."""
    from tqdm import tqdm

    _sync_images_dir(out, cand, marker, content_key)
    groups: dict[str, list] = {}
    for row in cand.loc[cand["selected"]].to_dict("records"):
        groups.setdefault(row["source_path"], []).append((row, str(out / row["image_path"])))
    crop_d = to_dict(cfg.crop)
    payloads = [(crop_d, todo, cfg.exec.png_compression) for todo in
                ([(r, d) for r, d in jobs_ if not os.path.exists(d)] for jobs_ in groups.values()) if todo]
    n_sel = int(cand["selected"].sum())
    wbar = tqdm(total=n_sel, initial=n_sel - sum(len(p[1]) for p in payloads),
                unit="crop", desc="write", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    failed: dict[str, str] = {}
    for n, bad, why in executor.map_unordered(_write_group, payloads):
        wbar.update(n)
        failed.update({c: why for c in bad})
    wbar.close()
    if failed:  # selected, but the source image can no longer be read: not in the dataset
        lost = cand["crop_id"].isin(list(failed))
        warnings.warn(f"{int(lost.sum())} selected crops could not be written (source image changed or vanished)")
        cand.loc[lost, "reject_reason"] = cand.loc[lost, "crop_id"].map(failed)
        cand.loc[lost, ["split", "image_path"]] = None
        cand.loc[lost, "selected"] = False


def _write_tables(out: Path, cand: pd.DataFrame, rejects: pd.DataFrame, names: list[str], infos: list[dict],
                  thresholds: dict, cfg: CurationConfig, recs: list[SourceRecords]) -> None:
    """7. manifest.parquet, rejects.parquet and report.html, each written atomically."""
    from osdhuman.curation.report import write_report

    front = [c for c in CANDIDATE_COLUMNS if c != "reject_reason"]
    manifest = cand[front + ["dup_group"] + [metric_column(n) for n in names]
                    + ["score", "selected", "split", "reject_reason", "image_path"]]
    meta = {"osdhuman": {"pipeline": PIPELINE_VERSION, "metrics": infos, "thresholds": thresholds,
                         "keep_fraction": cfg.selection.keep_fraction,
                         "config": {k: v for k, v in to_dict(cfg).items() if k != "exec"}}}
    atomic_bytes(out / "manifest.parquet", parquet_bytes(manifest, meta))
    atomic_bytes(out / "rejects.parquet", parquet_bytes(rejects))
    inputs = source_counts(recs, cfg.exec.max_images_per_source)
    write_report(out, manifest, rejects, infos, cfg, render=lambda r: crop_pixels(r, cfg), inputs=inputs)
