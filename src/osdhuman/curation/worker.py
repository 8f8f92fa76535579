"""A curation worker process (or Ray actor): its state, and a shard's path to bytes.

Each process that prepares or scores shards holds one :class:`ShardWorker` (the detector and
the IQA metrics, loaded once). The local process pool (``executor.py``) and the Ray actors
(``ray_backend.py``) both go through this module's public functions:

    init_process(cfg_dict)   once per process: one thread per library, the process's worker
    current()                that worker
    run_shard(payload)       records part rows -> (cand parquet, rej parquet, kept, rejects)
    shard_bytes(...)         a shard's rows and rejects as parquet bytes (schema.py's tables)
    write_crop_group(...)    decode one source image once, write its selected crops as PNG
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import cv2

from osdhuman.config import from_dict
from osdhuman.curation import records, schema, stages
from osdhuman.curation.config import CropConfig, CurationConfig
from osdhuman.curation.shard import ShardWorker
from osdhuman.curation.sources import SourceImage
from osdhuman.curation.store import inputs_digest
from osdhuman.imageio import ImageReadError, read_rgb
from osdhuman.outputs import atomic_write_bytes, encode_png

Payload = tuple[str, int, int, int]  # (records part file, start row, stop row, rows per group)

_PROCESS_WORKER: ShardWorker | None = None


def init_process(cfg_dict: dict) -> ShardWorker:
    """Make this process a curation worker: single-threaded libraries (parallelism comes from
    the processes), warnings silenced (the driver reports), one ShardWorker for ``cfg_dict``."""
    global _PROCESS_WORKER
    cv2.setNumThreads(1)
    warnings.simplefilter("ignore")
    _PROCESS_WORKER = ShardWorker(from_dict(CurationConfig, cfg_dict))
    if "torch" in sys.modules:  # a metric that runs on torch: one thread per process too
        sys.modules["torch"].set_num_threads(1)
    return _PROCESS_WORKER


def current() -> ShardWorker:
    """This process's worker (``init_process`` first)."""
    if _PROCESS_WORKER is None:
        raise RuntimeError("curation worker used before init_process")
    return _PROCESS_WORKER


def shard_bytes(rows: list[dict], rejects: list[dict], metric_names: list[str],
                inputs: str) -> tuple[bytes, bytes, int, int]:
    """(cand parquet, rej parquet, crops kept, rejects) of one shard; ``inputs`` (the digest of
    the input files as they were read) goes into the cand file's metadata."""
    cand = schema.table_bytes(rows, schema.candidate_schema(metric_names), {"inputs": json.dumps(inputs)})
    rej = schema.table_bytes(rejects, schema.REJECTS)
    return cand, rej, sum(r["reject_reason"] is None for r in rows), len(rejects)


def run_shard_to_bytes(worker: ShardWorker, items: list[SourceImage]) -> tuple[bytes, bytes, int, int]:
    """Prepare + score one shard's images with ``worker``."""
    inputs = inputs_digest([it.path for it in items])
    rows, rejects = worker(items)
    return shard_bytes(rows, rejects, [m.info.name for m in worker.metrics], inputs)


def run_shard(payload: Payload) -> tuple[bytes, bytes, int, int]:
    """One shard, read from its records rows, through this process's worker."""
    return run_shard_to_bytes(current(), records.read_items(*payload))


def write_crop_group(payload: tuple[dict, list[tuple[dict, str]], int]) -> tuple[int, list[str], str]:
    """Decode one source image once and write its selected crops as PNG (atomic, skip existing).

    ``payload``: (the crop config as a dict, [(manifest row, destination)], zlib level).
    Returns (crops written, crop ids that could not be written, reason)."""
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
