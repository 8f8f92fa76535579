"""The HQ-ACF build as numbered steps (``build_dataset``), resumable and backend-agnostic.

    1. parse sources          annotation files -> SourceImage list (+ rejects of malformed rows)
    2. shard                  fixed-size shards, each keyed by hash(config, metric backends, items)
    3. prepare + score        ShardWorker per shard (local processes or Ray Data), one result
                              file pair per shard under OUT/.work/shards/, written atomically
    4. select                 Eq. 1 z-scores over the whole pool, top fraction, thresholds
    5. split                  train / val / test, disjoint by source image
    6. write images           OUT/images/<split>/<crop_id>.png, selected crops only
    7. manifest + report      manifest.parquet, rejects.parquet, report.html

A run killed anywhere and restarted with the same arguments finds the shard files of the
same keys and skips them, and skips PNGs already written for the same selection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
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
from osdhuman.curation import select as sel
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.scoring import load_metrics, metric_infos
from osdhuman.curation.shard import CANDIDATE_COLUMNS, REJECT_COLUMNS, ShardWorker, disambiguate, metric_column, render_crop
from osdhuman.curation.sources import ParsedSource, SourceError, SourceImage, parse_source, parse_specs

PIPELINE_VERSION = "hqacf-2"  # 2: hashes and box flags in the shard rows
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
def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _file_identity(path: str) -> list[int] | None:
    """Size and modification time: a replaced or edited input file is processed again on resume."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing files are rejected by the shard itself
    return [st.st_size, st.st_mtime_ns]


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
    return _sha(PIPELINE_VERSION, json.dumps(d, sort_keys=True), json.dumps(infos, sort_keys=True))


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _parquet_bytes(df: pd.DataFrame, metadata: dict | None = None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta.update({k.encode(): json.dumps(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


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


class ShardStore:
    """Shard results under OUT/.work/shards/: loose ``<key>.{rej,cand}.parquet`` pairs as shards
    finish (cand written last = done), consolidated into packs ``packs/<name>.{rej,cand}.parquet``
    of about ``pack_images`` source images once the shard phase is over.

    Kill-safe order: a pack's files are written (atomically), then ``packs.json`` (the index,
    atomically), then the loose files it replaces are removed; a key found both loose and in a
    pack is read from the pack. A rerun reads a few packs instead of one file pair per shard.
    """

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.index_path = root / "packs.json"
        self.packs: dict[str, list[str]] = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        self.packed = {k: name for name, keys in self.packs.items() for k in keys}

    def done(self, key: str) -> bool:
        return key in self.packed or (self.root / f"{key}.cand.parquet").exists()

    def write(self, key: str, cand_bytes: bytes, rej_bytes: bytes) -> None:
        _atomic_bytes(self.root / f"{key}.rej.parquet", rej_bytes)
        _atomic_bytes(self.root / f"{key}.cand.parquet", cand_bytes)

    def read(self, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (pd.read_parquet(self.root / f"{key}.cand.parquet"), pd.read_parquet(self.root / f"{key}.rej.parquet"))

    def consolidate(self, keys: list[str], sizes: dict[str, int], pack_images: int) -> None:
        """Pack the loose shards among ``keys`` (in order) into files of ~``pack_images`` images."""
        loose = [k for k in keys if k not in self.packed]
        chunk: list[str] = []
        for k in loose:
            chunk.append(k)
            if sum(sizes[c] for c in chunk) >= pack_images:
                self._pack(chunk)
                chunk = []
        if chunk:
            self._pack(chunk)

    def _pack(self, keys: list[str]) -> None:
        frames = [self.read(k) for k in keys]
        name = _sha(*keys)[:24]
        (self.root / "packs").mkdir(exist_ok=True)
        for i, kind in ((0, "cand"), (1, "rej")):
            df = pd.concat([f[i].assign(_shard=k) for f, k in zip(frames, keys)], ignore_index=True)
            _atomic_bytes(self.root / "packs" / f"{name}.{kind}.parquet", _parquet_bytes(df))
        self.packs[name] = list(keys)
        self.packed.update({k: name for k in keys})
        _atomic_bytes(self.index_path, json.dumps(self.packs).encode())
        for k in keys:
            for kind in ("cand", "rej"):
                (self.root / f"{k}.{kind}.parquet").unlink(missing_ok=True)

    def read_all(self, keys: list[str]) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
        """(cand, rej) per key, in the order of ``keys`` (packed shards from their pack)."""
        by_key: dict[str, list] = {}
        wanted = set(keys)
        for name in sorted({self.packed[k] for k in keys if k in self.packed}):
            members = [k for k in self.packs[name] if k in wanted]
            for i, kind in ((0, "cand"), (1, "rej")):
                df = pd.read_parquet(self.root / "packs" / f"{name}.{kind}.parquet")
                groups = {k: g.drop(columns="_shard").reset_index(drop=True) for k, g in df.groupby("_shard", sort=False)}
                empty = df.iloc[:0].drop(columns="_shard")  # a shard without rows of this kind
                for k in members:
                    by_key.setdefault(k, [None, None])[i] = groups.get(k, empty)
        return [tuple(by_key[k]) if k in by_key else self.read(k) for k in keys]


def run_shard_to_bytes(worker: ShardWorker, items: list[SourceImage]) -> tuple[bytes, bytes, int, int]:
    rows, rejects = worker(items)
    names = [m.info.name for m in worker.metrics]
    cand, rej = shard_frames(rows, rejects, names)
    return _parquet_bytes(cand), _parquet_bytes(rej), int(cand["reject_reason"].isna().sum()), len(rej)


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


def _run_shard_payload(payload: list[dict]):
    return run_shard_to_bytes(_WORKER, [SourceImage.from_json(d) for d in payload])


def _write_group(payload: tuple[dict, list[tuple[dict, str]], int]) -> tuple[int, list[str], str]:
    """Decode one source image once and write its selected crops as PNG (atomic, skip existing).

    Returns (crops written, crop ids that could not be written, reason)."""
    import cv2

    cfg_dict, jobs, compression = payload
    cfg = from_dict(CurationConfig, cfg_dict)
    from osdhuman.curation import stages
    from osdhuman.imageio import ImageReadError, read_rgb

    todo = [(r, d) for r, d in jobs if not Path(d).exists()]
    if not todo:
        return 0, [], ""
    try:
        rgb = read_rgb(todo[0][0]["source_path"])
    except ImageReadError as exc:  # the file changed or vanished since it was scored
        return 0, [r["crop_id"] for r, _ in todo], f"source_changed:{exc.reason}"
    for row, dest in todo:
        sq = (int(row["crop_x0"]), int(row["crop_y0"]), int(row["crop_size"]))
        crop = stages.resize_square(stages.extract_crop(rgb, sq, cfg.crop.pad_value), cfg.crop)
        d = Path(dest)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = d.with_name(f".{d.stem}.tmp{os.getpid()}.png")
        if not cv2.imwrite(str(tmp), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, compression]):
            raise OSError(f"{d}: cv2.imwrite failed")
        os.replace(tmp, d)
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

    def shards(self, jobs: list[tuple[str, list[SourceImage]]]):
        """Yield (key, result) as shards finish."""
        if self._pool() is None:
            for key, items in jobs:
                yield key, run_shard_to_bytes(self.worker, items)
            return
        payloads = ([it.to_json() for it in items] for _, items in jobs)
        yield from self._windowed(_run_shard_payload, payloads, [k for k, _ in jobs])

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


class _RayShardUDF:
    """Ray Data actor: holds one ShardWorker (detector + metrics loaded once)."""

    def __init__(self, cfg_dict: dict):
        _init_worker(cfg_dict)

    def __call__(self, batch: dict) -> dict:
        keys, cands, rejs, kept, nrej = [], [], [], [], []
        for key, payload in zip(batch["key"], batch["items"]):
            c, r, k, n = _run_shard_payload(json.loads(payload))
            keys.append(key)
            cands.append(c)
            rejs.append(r)
            kept.append(k)
            nrej.append(n)
        return {"key": np.array(keys, dtype=object), "cand": np.array(cands, dtype=object),
                "rej": np.array(rejs, dtype=object), "kept": np.array(kept), "nrej": np.array(nrej)}


def _ray_shards(cfg: CurationConfig, jobs: list[tuple[str, list[SourceImage]]]):
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs ray: pip install 'osdhuman[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    n = cfg.exec.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items([{"key": k, "items": json.dumps([it.to_json() for it in items])} for k, items in jobs])
    ds = ds.map_batches(_RayShardUDF, fn_constructor_kwargs={"cfg_dict": to_dict(cfg)}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=min(n, max(1, len(jobs)))), num_cpus=1,
                        num_gpus=cfg.exec.ray_num_gpus,
                        batch_format="numpy")
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        for key, c, r, k, nrej in zip(batch["key"], batch["cand"], batch["rej"], batch["kept"], batch["nrej"]):
            yield str(key), (bytes(c), bytes(r), int(k), int(nrej))


# ---- the build -------------------------------------------------------------------------
def check_output_dir(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise OutputDirError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise OutputDirError(f"{out}: exists, is not empty and is not a build-dataset output; choose another --out")


def parse_all(cfg: CurationConfig) -> list[ParsedSource]:
    """Step 1 (raises SourceError before any work)."""
    specs = parse_specs(cfg.sources)
    names = {s.name for s in specs}
    for name in [*cfg.split.source_splits, *cfg.selection.sources, *cfg.selection.stats_exclude]:
        if name not in names:
            hint = f" (preset {cfg.preset!r} names its sources: see its file)" if cfg.preset else ""
            raise SourceError(f"source {name!r} (in split.source_splits, selection.sources or selection.stats_exclude) "
                              f"is not a source name (have {sorted(names)}){hint}")
    parsed = [parse_source(s, cfg.labels) for s in specs]
    if cfg.exec.max_images_per_source > 0:
        for p in parsed:
            del p.images[cfg.exec.max_images_per_source:]
    for p in parsed:
        check_layout(p)
    return parsed


def check_layout(p: ParsedSource, sample: int = 64) -> None:
    """SourceError when none of a sample of the images an annotation file names exists: the
    image folder is laid out differently from the file names (Objects365's ``images/v1/patch8/``
    prefixes, say). Some missing images are reject rows; all missing is a wrong folder."""
    if p.spec.kind == "folder" or not p.images:
        return
    step = max(1, len(p.images) // sample)
    picks = p.images[::step][:sample]
    if any(os.path.exists(it.path) for it in picks):
        return
    root = Path(p.spec.args[-1])
    found = sorted(x.relative_to(root).as_posix() + ("/" if x.is_dir() else "") for x in root.iterdir())[:5] \
        if root.is_dir() else []
    first = Path(picks[0].path)
    rel = first.relative_to(root).as_posix() if first.is_relative_to(root) else str(first)
    raise SourceError(f"source {p.spec.name!r}: none of {len(picks)} sampled images it names exists under {root} "
                      f"(expected e.g. {root}/{rel}; the folder holds {found or 'nothing'}); "
                      "point IMAGE_DIR at the folder the annotation file names are relative to")


def build_dataset(cfg: CurationConfig, out: str | Path, progress: bool = True, metrics: list | None = None) -> BuildResult:
    from tqdm import tqdm

    out = Path(out)
    check_output_dir(out)
    # 1. parse sources (errors before any work)
    parsed = parse_all(cfg)
    if any(p.spec.kind == "folder" for p in parsed):
        from osdhuman.curation.detect import check_detector

        check_detector(cfg.detector)
    metrics = metrics if metrics is not None else load_metrics(cfg.iqa)
    infos = metric_infos(metrics)
    names = [m["name"] for m in infos]
    lower = {m["name"]: m["lower_better"] for m in infos}
    thresholds = {k: v for k, v in cfg.iqa.thresholds.items() if k in lower}
    for k in set(cfg.iqa.thresholds) - set(thresholds):
        warnings.warn(f"iqa.thresholds.{k}: metric {k!r} is not scored in this run; threshold ignored")
    out.mkdir(parents=True, exist_ok=True)
    marker = json.loads((out / MARKER).read_text()) if (out / MARKER).exists() else {}
    marker["tool"] = "osdhuman build-dataset"
    _atomic_bytes(out / MARKER, json.dumps(marker).encode())
    save_config(cfg, out / "config.yaml")

    # 2. shards keyed by config + items
    items = [it for p in parsed for it in p.images]
    ckey = config_key(cfg, infos)
    size = max(1, cfg.exec.shard_size)
    jobs = []
    for i in range(0, len(items), size):
        chunk = items[i:i + size]
        described = [[it.to_json(), _file_identity(it.path)] for it in chunk]
        jobs.append((_sha(ckey, json.dumps(described, sort_keys=True))[:32], chunk))
    store = ShardStore(out / ".work" / "shards")
    pending = [(k, ch) for k, ch in jobs if not store.done(k)]

    # 3. prepare + score
    worker = ShardWorker(cfg, metrics)
    executor = LocalExecutor(cfg, worker)
    n_done = sum(len(ch) for k, ch in jobs if store.done(k))
    sizes = {k: len(ch) for k, ch in jobs}
    bar = tqdm(total=len(items), initial=n_done, unit="img", desc="curate", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    kept = rejected = 0
    try:
        stream = _ray_shards(cfg, pending) if cfg.exec.backend == "ray" and pending else executor.shards(pending)
        for key, (cand_b, rej_b, k, nrej) in stream:
            store.write(key, cand_b, rej_b)
            kept += k
            rejected += nrej
            bar.update(sizes[key])
            bar.set_postfix(crops_kept=kept, rejected=rejected, refresh=False)
        bar.close()

        # 4. select over the whole pool
        store.consolidate([k for k, _ in jobs], sizes, cfg.exec.pack_images)
        frames = store.read_all([k for k, _ in jobs])
        cand = pd.concat([f[0] for f in frames], ignore_index=True) if frames else shard_frames([], [], names)[0]
        cand = _typed(cand, names) if len(cand) else shard_frames([], [], names)[0]
        rej_frames = [shard_frames([], p.rejects, names)[1] for p in parsed] + [f[1] for f in frames]
        rejects = _typed_rejects(pd.concat(rej_frames, ignore_index=True)) if rej_frames else shard_frames([], [], names)[1]
        if cand["crop_id"].duplicated().any():
            cand["crop_id"] = disambiguate(cand["crop_id"].tolist(), (cand["source"] + "/" + cand["source_image"]).tolist())
        if cand["crop_id"].duplicated().any():  # unique by construction: a bug if not
            raise RuntimeError(f"duplicate crop ids: {cand.loc[cand['crop_id'].duplicated(), 'crop_id'].head(3).tolist()}")
        # 4a. duplicate groups across every source (hashes computed in the shards)
        cand["dup_group"] = dedup.dup_group_column(cand, cfg.dedup.max_hamming, cfg.dedup.mirror, cfg.dedup.enabled)
        pool = cand["reject_reason"].isna().to_numpy()
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
            # 5. splits, disjoint by duplicate group (else source image); duplicates kept once
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

        # 6. write the selected crops (PNG), once. A PNG's pixels depend only on the config
        # hashed in `content_key`; with the same key, existing files are kept and only files no
        # longer selected (or left half-written by a kill) are removed.
        content_key = _sha(ckey, json.dumps(to_dict(cfg.crop)), str(cfg.exec.png_compression),
                           *sorted(k for k, _ in jobs))  # a changed input file rewrites the PNGs
        images_dir = out / "images"
        if marker.get("images_key") != content_key:
            if images_dir.exists():
                shutil.rmtree(images_dir)
            marker["images_key"] = content_key
            _atomic_bytes(out / MARKER, json.dumps(marker).encode())
        elif images_dir.exists():
            wanted = {str(out / p) for p in cand.loc[cand["selected"], "image_path"]}
            for f in list(images_dir.rglob("*")):
                if f.is_file() and str(f) not in wanted:
                    f.unlink()
            for d in sorted((d for d in images_dir.rglob("*") if d.is_dir()), reverse=True):
                if not any(d.iterdir()):
                    d.rmdir()
        groups: dict[str, list] = {}
        for row in cand.loc[cand["selected"]].to_dict("records"):
            groups.setdefault(row["source_path"], []).append((row, str(out / row["image_path"])))
        cfg_d = to_dict(cfg)
        payloads = [(cfg_d, jobs_, cfg.exec.png_compression) for jobs_ in groups.values()]
        wbar = tqdm(total=int(cand["selected"].sum()), unit="crop", desc="write", disable=not progress,
                    dynamic_ncols=True, file=sys.stderr)
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
    finally:
        executor.close()

    # 7. manifest, rejects, report
    front = [c for c in CANDIDATE_COLUMNS if c != "reject_reason"]
    cand = cand[front + ["dup_group"] + [metric_column(n) for n in names]
                + ["score", "selected", "split", "reject_reason", "image_path"]]
    meta = {"osdhuman": {"pipeline": PIPELINE_VERSION, "metrics": infos, "thresholds": thresholds,
                         "keep_fraction": cfg.selection.keep_fraction,
                         "config": {k: v for k, v in to_dict(cfg).items() if k != "exec"}}}
    _atomic_bytes(out / "manifest.parquet", _parquet_bytes(cand, meta))
    _atomic_bytes(out / "rejects.parquet", _parquet_bytes(rejects))
    from osdhuman.curation.report import write_report

    inputs = {}
    for p in parsed:
        inputs[p.spec.name] = (len(p.images), sum(len(i.boxes) for i in p.images if i.boxes is not None))
    write_report(out, cand, rejects, infos, cfg, render=lambda r: render_crop(r, cfg), inputs=inputs)
    splits_count = dict(Counter(cand.loc[cand["selected"], "split"]))
    return BuildResult(out, len(items), len(cand), int(pool.sum()), int(cand["selected"].sum()), splits_count,
                       len(rejects), infos)
