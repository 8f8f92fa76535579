"""Step 6 of the HQ-ACF build: the selected crops as PNG under ``OUT/images/<split>/``.

Only selected crops are ever encoded, once: each source image is decoded once for all its
selected crops (``worker.write_crop_group``, on the executor's processes), and a rerun keeps
every PNG whose pixels cannot have changed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from osdhuman.config import to_dict
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.executor import LocalExecutor
from osdhuman.curation.worker import write_crop_group
from osdhuman.outputs import atomic_write_bytes

MARKER = ".osdhuman-build.json"


def sync_images_dir(out: Path, cand: pd.DataFrame, marker: dict, content_key: str) -> None:
    """A PNG's pixels depend only on the config hashed in ``content_key``: with the same key,
    existing files are kept and only files no longer selected (or half-written by a kill) go."""
    images_dir = out / "images"
    if marker.get("images_key") != content_key:
        if images_dir.exists():
            shutil.rmtree(images_dir)
        marker["images_key"] = content_key
        atomic_write_bytes(out / MARKER, json.dumps(marker).encode())
    elif images_dir.exists():
        wanted = {str(out / p) for p in cand.loc[cand["selected"], "image_path"]}
        for f in list(images_dir.rglob("*")):
            if f.is_file() and str(f) not in wanted:
                f.unlink()
        for d in sorted((d for d in images_dir.rglob("*") if d.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()


def write_selected(out: Path, cand: pd.DataFrame, cfg: CurationConfig, marker: dict, content_key: str,
                   executor: LocalExecutor, progress: bool) -> None:
    """6. the selected crops not on disk yet, grouped by source image; a crop whose source can
    no longer be read leaves the dataset (its reason recorded)."""
    sync_images_dir(out, cand, marker, content_key)
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
    for n, bad, why in executor.map_unordered(write_crop_group, payloads):
        wbar.update(n)
        failed.update({c: why for c in bad})
    wbar.close()
    if failed:  # selected, but the source image can no longer be read: not in the dataset
        lost = cand["crop_id"].isin(list(failed))
        warnings.warn(f"{int(lost.sum())} selected crops could not be written (source image changed or vanished)",
                      stacklevel=2)
        cand.loc[lost, "reject_reason"] = cand.loc[lost, "crop_id"].map(failed)
        cand.loc[lost, ["split", "image_path"]] = None
        cand.loc[lost, "selected"] = False
