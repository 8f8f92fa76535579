"""Source records on disk: every parsed ``SourceImage`` spilled to parquet, never all in memory.

    OUT/.work/records/<source name>@<key>/part-00000.parquet ...   the images, in source order
                                          rejects.parquet          annotation rows rejected while parsing
                                          done.json                summary (written last = complete)

A parser emits images one by one into a :class:`RecordWriter`, which writes a part file of
``part_rows`` images (a multiple of the shard size, about 10,000) at a time, with one parquet
row group per ``group_rows`` images, and a digest per shard-sized run of images (the shard's
cache key, so a changed annotation re-runs only the shards it touches). Shards are planned from
``done.json`` alone, and each worker reads its own images back with :func:`read_items` (the
driver never holds them, and Ray never copies them through the driver).

Sources whose annotation files are unchanged (same size and modification time, same labels
config) are not parsed again on a rerun: their finished records folder is found by key.
Parsing runs in parallel across sources (a process pool; results in the order of the sources).
We use pyarrow directly (schema'd record batches, row-group reads); no extra library.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from osdhuman.config import from_dict
from osdhuman.curation import schema
from osdhuman.curation.config import LabelConfig
from osdhuman.curation.sources import SourceImage, SourceSpec, parse_source
from osdhuman.outputs import replace_dir

RECORDS_VERSION = "records-1"
PART_IMAGES = 10_000  # images per part file (rounded up to whole shards)
GROUP_IMAGES = 1024  # images per row group (rounded to whole shards): a shard reads one group
SEP = "@"  # not allowed in source names: "<name>@<key>" folders never clash


def chunk_digest(items: list[dict]) -> str:
    """Digest of a run of images (their ``to_json``): the content part of a shard's key."""
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class SourceRecords:
    """What ``done.json`` says about one source's records (the driver's whole view of them)."""

    name: str
    kind: str
    spec: str
    dir: str
    shard_size: int
    part_rows: list[int] = field(default_factory=list)  # images per part file
    digests: list[str] = field(default_factory=list)  # one per shard_size images, in order
    n_images: int = 0
    n_boxes: int = 0
    n_rejects: int = 0
    group_rows: int = GROUP_IMAGES

    def part_path(self, i: int) -> str:
        return os.path.join(self.dir, f"part-{i:05d}.parquet")

    def rejects_path(self) -> str:
        return os.path.join(self.dir, "rejects.parquet")

    def part_of(self, row: int) -> tuple[int, int]:
        """(part index, row inside the part) of the source's ``row``-th image."""
        start = 0
        for i, n in enumerate(self.part_rows):
            if row < start + n:
                return i, row - start
            start += n
        raise IndexError(row)


class RecordWriter:
    """Buffers emitted images and writes them as parquet parts; digests per shard-sized run."""

    def __init__(self, folder: Path, shard_size: int, part_images: int = PART_IMAGES, group_images: int = GROUP_IMAGES):
        self.folder = folder
        self.shard_size = shard_size
        self.part_rows = max(1, -(-part_images // shard_size)) * shard_size
        self.group_rows = max(1, group_images // shard_size) * shard_size
        self.buffer: list[dict] = []
        self.parts: list[int] = []
        self.digests: list[str] = []
        self.n_images = 0
        self.n_boxes = 0

    def __call__(self, item: SourceImage) -> None:
        self.buffer.append(item.to_json())
        self.n_images += 1
        self.n_boxes += len(item.boxes) if item.boxes is not None else 0
        if len(self.buffer) == self.part_rows:
            self._flush()

    def _flush(self) -> None:
        rows = self.buffer
        if not rows:
            return
        for i in range(0, len(rows), self.shard_size):
            self.digests.append(chunk_digest(rows[i:i + self.shard_size]))
        table = pa.Table.from_pylist(rows, schema=schema.RECORDS)
        pq.write_table(table, self.folder / f"part-{len(self.parts):05d}.parquet", row_group_size=self.group_rows)
        self.parts.append(len(rows))
        self.buffer = []

    def close(self) -> None:
        self._flush()


def input_key(spec: SourceSpec, labels_dict: dict, shard_size: int) -> str | None:
    """Key of a source's parse inputs when they are files whose identity we can trust
    (annotation json / csv / odgt); None for folders and VOC directories (always re-listed)."""
    if spec.kind in ("folder", "voc"):
        return None
    ident = []
    for f in spec.args[:-1]:
        st = os.stat(f)
        ident.append([f, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps([RECORDS_VERSION, spec.spec, ident, labels_dict, shard_size],
                                     sort_keys=True).encode()).hexdigest()[:20]


def _load(folder: Path) -> SourceRecords | None:
    try:
        d = json.loads((folder / "done.json").read_text())
    except (OSError, ValueError):
        return None
    d["dir"] = str(folder)
    return SourceRecords(**d)


def spill_source(spec: SourceSpec, labels_dict: dict, root: str, shard_size: int) -> SourceRecords:
    """Parse one source into ``root/<name>@<key>/`` (or find it there from an earlier run)."""
    root_p = Path(root)
    key = input_key(spec, labels_dict, shard_size)
    if key is not None:
        found = _load(root_p / f"{spec.name}{SEP}{key}")
        if found is not None:
            return found
    for stale in root_p.glob(f".tmp-{spec.name}{SEP}*"):  # left by a run killed while parsing
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root_p / f".tmp-{spec.name}{SEP}{os.getpid()}"
    tmp.mkdir(parents=True)
    writer = RecordWriter(tmp, shard_size, PART_IMAGES, GROUP_IMAGES)
    parsed = parse_source(spec, from_dict(LabelConfig, labels_dict), sink=writer)
    writer.close()
    rej = schema.frame(parsed.rejects, schema.REJECTS)
    (tmp / "rejects.parquet").write_bytes(schema.frame_bytes(rej))
    if key is None:  # listed fresh every run: the folder is named by its content
        key = hashlib.sha256(json.dumps([spec.spec, writer.digests, len(rej)]).encode()).hexdigest()[:20]
    rec = SourceRecords(spec.name, spec.kind, spec.spec, "", shard_size, writer.parts, writer.digests,
                        writer.n_images, writer.n_boxes, len(parsed.rejects), writer.group_rows)
    summary = {k: v for k, v in asdict(rec).items() if k != "dir"}
    (tmp / "done.json").write_text(json.dumps(summary))
    final = root_p / f"{spec.name}{SEP}{key}"
    if final.exists():  # the same content listed again
        shutil.rmtree(tmp)
    else:
        replace_dir(tmp, final)
    for old in root_p.glob(f"{spec.name}{SEP}*"):  # earlier versions of this source's records
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return _load(final)


def spill_all(specs: list[SourceSpec], labels_dict: dict, root: str | Path, shard_size: int,
              workers: int = 1) -> list[SourceRecords]:
    """Every source's records, parsed in parallel (``workers`` processes, at most one per
    source; in this process when one suffices). Results are in the order of ``specs``."""
    Path(root).mkdir(parents=True, exist_ok=True)
    n = min(max(1, workers), len(specs))
    if n <= 1:
        return [spill_source(s, labels_dict, str(root), shard_size) for s in specs]
    with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(spill_source, s, labels_dict, str(root), shard_size) for s in specs]
        return [f.result() for f in futures]


_GROUP_CACHE: dict = {}  # (path, row group) -> rows of the last group read in this process


def read_items(part: str, start: int, stop: int, group_rows: int) -> list[SourceImage]:
    """Images ``start:stop`` of one part file (reads only the row groups that hold them)."""
    out: list[SourceImage] = []
    g0, g1 = start // group_rows, (stop - 1) // group_rows
    for g in range(g0, g1 + 1):
        key = (part, g)
        if key not in _GROUP_CACHE:
            _GROUP_CACHE.clear()  # consecutive shards of a worker share a group: keep one
            _GROUP_CACHE[key] = pq.ParquetFile(part).read_row_group(g).to_pylist()
        rows = _GROUP_CACHE[key]
        lo, hi = max(start, g * group_rows) - g * group_rows, min(stop, (g + 1) * group_rows) - g * group_rows
        out.extend(SourceImage.from_json(r) for r in rows[lo:hi])
    return out


def read_paths(rec: SourceRecords, part: int) -> list[str]:
    """The ``path`` column of one part (for the layout check and the rerun's input check)."""
    return pq.read_table(rec.part_path(part), columns=["path"]).column("path").to_pylist()


def read_rejects(rec: SourceRecords):
    return pd.read_parquet(rec.rejects_path())
