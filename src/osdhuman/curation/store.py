"""Finished shard results under ``OUT/.work/shards/``, consolidated into packs (pyarrow / pandas).

Loose ``<key>.{rej,cand}.parquet`` pairs are written as shards finish (cand last = done; the
cand file's metadata holds the digest of the shard's input files, ``inputs``). Once the shard
phase is over they are consolidated into packs ``packs/<name>.{rej,cand}.parquet`` of about
``pack_images`` source images, listed in ``packs.json`` as ``{pack: {shard key: inputs}}``.

Kill-safe order: a pack's files are written (atomically), then ``packs.json`` (atomically),
then the loose files it replaces are removed; a key found both loose and in a pack is read
from the pack. :meth:`ShardStore.forget` drops shards whose input files changed (the index is
rewritten first; a pack left without members is deleted). A rerun reads one index and a few
packs, not one file pair per shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from osdhuman.outputs import atomic_write_bytes


def sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def file_identity(path: str) -> list[int] | None:
    """Size and modification time: a replaced or edited input file is processed again on resume."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # missing files are rejected by the shard itself
    return [st.st_size, st.st_mtime_ns]


def inputs_digest(paths: list[str]) -> str:
    """Digest of the identities (size, mtime) of a shard's input files, in order."""
    return sha(json.dumps([file_identity(p) for p in paths]))[:24]


class ShardStore:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.index_path = root / "packs.json"
        loaded = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        # {pack: [keys]} is the index of an earlier pipeline version, whose keys never match ours
        self.packs: dict[str, dict[str, str]] = {n: ks for n, ks in loaded.items() if isinstance(ks, dict)}
        self.packed = {k: name for name, keys in self.packs.items() for k in keys}

    def _loose(self, key: str, kind: str) -> Path:
        return self.root / f"{key}.{kind}.parquet"

    def done(self, key: str) -> bool:
        return key in self.packed or self._loose(key, "cand").exists()

    def inputs(self, key: str) -> str | None:
        """The recorded input digest of a finished shard."""
        if key in self.packed:
            return self.packs[self.packed[key]][key]
        meta = pq.read_schema(self._loose(key, "cand")).metadata or {}
        return json.loads(meta[b"inputs"]) if b"inputs" in meta else None

    def write(self, key: str, cand_bytes: bytes, rej_bytes: bytes) -> None:
        atomic_write_bytes(self._loose(key, "rej"), rej_bytes)
        atomic_write_bytes(self._loose(key, "cand"), cand_bytes)

    def read(self, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        return pd.read_parquet(self._loose(key, "cand")), pd.read_parquet(self._loose(key, "rej"))

    def forget(self, keys: list[str]) -> None:
        """These shards are no longer done (their inputs changed): index first, then files."""
        drop = set(keys)
        if not drop:
            return
        emptied = []
        for name in list(self.packs):
            members = {k: v for k, v in self.packs[name].items() if k not in drop}
            if len(members) != len(self.packs[name]):
                self.packs[name] = members
                if not members:
                    emptied.append(name)
                    del self.packs[name]
        atomic_write_bytes(self.index_path, json.dumps(self.packs).encode())
        self.packed = {k: name for name, ks in self.packs.items() for k in ks}
        for k in drop:
            for kind in ("cand", "rej"):
                self._loose(k, kind).unlink(missing_ok=True)
        for name in emptied:
            for kind in ("cand", "rej"):
                (self.root / "packs" / f"{name}.{kind}.parquet").unlink(missing_ok=True)

    def consolidate(self, keys: list[str], sizes: dict[str, int], pack_images: int) -> None:
        """Pack the loose shards among ``keys`` (in order) into files of ~``pack_images`` images."""
        chunk: list[str] = []
        n = 0
        for k in (k for k in keys if k not in self.packed):
            chunk.append(k)
            n += sizes[k]
            if n >= pack_images:
                self._pack(chunk)
                chunk, n = [], 0
        if chunk:
            self._pack(chunk)

    def _pack(self, keys: list[str]) -> None:
        inputs = {k: self.inputs(k) for k in keys}
        name = sha(*keys)[:24]
        (self.root / "packs").mkdir(exist_ok=True)
        for kind in ("cand", "rej"):  # arrow tables, not pandas: ~1 ms per shard file
            tables = []
            for k in keys:
                t = pq.read_table(self._loose(k, kind)).replace_schema_metadata(None)
                tables.append(t.append_column("_shard", pa.array([k] * t.num_rows, pa.string())))
            table = pa.concat_tables(tables, promote_options="permissive")
            buf = io.BytesIO()
            pq.write_table(table, buf)
            atomic_write_bytes(self.root / "packs" / f"{name}.{kind}.parquet", buf.getvalue())
        self.packs[name] = inputs
        self.packed.update({k: name for k in keys})
        atomic_write_bytes(self.index_path, json.dumps(self.packs).encode())
        for k in keys:
            for kind in ("cand", "rej"):
                self._loose(k, kind).unlink(missing_ok=True)

    def read_all(self, keys: list[str]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        """(candidates, rejects) of every shard in ``keys``, rows in the order of ``keys`` (a
        shard's rows in their own order); None when there are no frames at all."""
        pos = {k: i for i, k in enumerate(keys)}
        parts: list[list[pd.DataFrame]] = [[], []]
        for name in sorted({self.packed[k] for k in keys if k in self.packed}):
            members = [k for k in self.packs[name] if k in pos]
            for i, kind in ((0, "cand"), (1, "rej")):
                df = pd.read_parquet(self.root / "packs" / f"{name}.{kind}.parquet")
                parts[i].append(df[df["_shard"].isin(members)])
        for k in keys:
            if k not in self.packed:
                c, r = self.read(k)
                parts[0].append(c.assign(_shard=k))
                parts[1].append(r.assign(_shard=k))
        out = []
        for frames in parts:
            if not frames:
                out.append(None)
                continue
            df = pd.concat(frames, ignore_index=True)
            order = df["_shard"].map(pos).to_numpy().argsort(kind="stable")
            out.append(df.iloc[order].drop(columns="_shard").reset_index(drop=True))
        return out[0], out[1]
