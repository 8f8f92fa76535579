"""Degrade a folder of HQ images into a PERSONA-Val-style synthetic LQ folder.

    1. list the HQ images (recursively), refuse an output folder inside the input folder
    2. give each image its seed: a hash of (run seed, relative path), so adding or removing
       files never changes the LQ of the others
    3. read (decoding the next batch on threads while this one degrades), batch images of
       equal size, degrade on the chosen device: on a CPU image by image through cpu.py (numpy /
       OpenCV / Pillow: torch is never imported), else through the torch ``Degrader``
    4. hand each LQ to a writer pool (PNG encoding on threads; its record goes to a journal,
       then the temp file is renamed into place); at the end params.jsonl (one JSON line per image),
       skipped.jsonl (every file left out and why) and config.yaml, atomically and last
    A rerun resumes from params.jsonl + the journal (osdhuman.outputs.ResumeLog) under the
    folder's lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from osdhuman.config import save_config, to_dict
from osdhuman.degradation.config import DegradationConfig
from osdhuman.degradation.cpu import degrade_images
from osdhuman.degradation.params import sample_params
from osdhuman.imageio import ImageReadError, read_rgb, scan_images
from osdhuman.outputs import (
    OutputLock,
    ResumeLog,
    WriterPool,
    atomic_write_text,
    encode_png,
    input_fingerprint,
    params_key,
    sweep_temp_files,
    unique_output_path,
)

# torch and the torch Degrader are imported inside _degrader, only for a device other than the CPU (or the
# differentiable JPEG): a CPU run never loads torch.

__all__ = ["DegradeSummary", "degrade_folder", "image_seed"]


@dataclass
class DegradeSummary:
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    out_dir: Path | None = None
    kept: int = 0  # outputs of an earlier run left as they were (same input and parameters)
    redone: list[tuple[str, str]] = field(default_factory=list)  # (output, why it was written again)


def image_seed(seed: int, relpath: str) -> int:
    """Seed of one image: 63 bits of sha256("seed:relative/path")."""
    digest = hashlib.sha256(f"{int(seed)}:{relpath}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def degrade_folder(hq_dir: str | Path, lq_dir: str | Path, seed: int = 0, cfg: DegradationConfig | None = None,
                   device="cpu", batch_size: int = 8, progress: bool = True,
                   overwrite: bool = False, writers: int | None = None,
                   notify: Callable[[str], None] | None = None, workers: int | None = None) -> DegradeSummary:
    """Write one LQ PNG per readable image of ``hq_dir`` into ``lq_dir`` (same relative name).

    ``device``: "cpu" (the numpy path, ``workers`` images at a time, default the CPU count) or a
    torch device (str or ``torch.device``) for the batched torch path.

    Resumes: an LQ already in ``lq_dir`` whose record (input sha256, seed, config) matches is
    kept; one whose input or parameters changed is redone (listed in ``summary.redone``); a
    file this command did not write is never replaced (skipped, unless ``overwrite``).
    params.jsonl, skipped.jsonl and config.yaml are written last, atomically.
    """
    cfg = cfg if cfg is not None else DegradationConfig()
    hq_dir, lq_dir = Path(hq_dir), Path(lq_dir)
    _check_folders(hq_dir, lq_dir, batch_size)
    files, listing_skips = scan_images(hq_dir)
    if not files:
        raise ValueError(f"{hq_dir}: no images found")
    with OutputLock(lq_dir):
        sweep_temp_files(lq_dir)
        summary = DegradeSummary(out_dir=lq_dir, skipped=list(listing_skips))
        log = ResumeLog(lq_dir, "params.jsonl", overwrite=overwrite).load()
        key = params_key(to_dict(cfg), int(seed))
        jobs = _plan(files, hq_dir, lq_dir, log, key, summary)
        for out, why in summary.redone:  # said before the file is replaced
            if notify is not None:
                notify(f"redoing {out}: {why}")
        try:
            _run_jobs(jobs, lq_dir, seed, cfg, _degrader(cfg, device, workers), batch_size, progress, log, key,
                      summary, writers)
        finally:
            log.close()
        # summaries last: a folder holding them is a finished run
        log.finish(order=[out.relative_to(lq_dir).as_posix() for _, _, out in _all_outputs(files, hq_dir, lq_dir)])
        atomic_write_text(lq_dir / "skipped.jsonl", "".join(
            json.dumps({"file": f, "reason": r, **({"detail": d} if d else {})}) + "\n" for f, r, d in _split(summary.skipped)))
        save_config(cfg, lq_dir / "config.yaml")
    return summary


def _check_folders(hq_dir: Path, lq_dir: Path, batch_size: int) -> None:
    if not hq_dir.is_dir():
        raise ValueError(f"{hq_dir}: not a folder")
    if _inside(lq_dir.resolve(), hq_dir.resolve()):
        raise ValueError(f"{lq_dir}: the output folder must not be the input folder {hq_dir} or inside it")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _split(skipped: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(file, "reason (detail)") -> (file, reason, detail)."""
    out = []
    for f, r in skipped:
        reason, _, detail = r.partition(" (")
        out.append((f, reason, detail.removesuffix(")")))
    return out


def _all_outputs(files: list[Path], hq_dir: Path, lq_dir: Path) -> list[tuple[Path, str, Path]]:
    """(input, its relative name, its LQ path): the same relative name as .png; two inputs that map
    to one name (a.jpg, a.png) both keep theirs, the later one as a-2.png (unique_output_path)."""
    used: set[Path] = set()
    out = []
    for f in files:
        rel = f.relative_to(hq_dir).as_posix()
        lq = unique_output_path(lq_dir / Path(rel).with_suffix(".png"), used)
        used.add(lq.resolve())
        out.append((f, rel, lq))
    return out


def _plan(files: list[Path], hq_dir: Path, lq_dir: Path, log: ResumeLog, key: str,
          summary: DegradeSummary) -> list[tuple[Path, str, Path, dict]]:
    """Decide per image: new / redo (say why) / skip (done) / refuse (an unrelated file)."""
    jobs = []
    inputs = {f.resolve() for f in files}
    for f, rel, out in _all_outputs(files, hq_dir, lq_dir):
        if out.resolve() in inputs:
            summary.skipped.append((str(f), "output would overwrite an input"))
            continue
        try:
            fp = input_fingerprint(f)
        except OSError as exc:
            summary.skipped.append((str(f), f"unreadable_file ({exc.strerror})"))
            continue
        d = log.decide(out.relative_to(lq_dir).as_posix(), fp, key)
        if d.action == "skip":
            summary.kept += 1
        elif d.action == "refuse":
            summary.skipped.append((str(f), f"output_exists ({out} was not written by this command; --overwrite replaces it)"))
        else:
            if d.action == "redo":
                summary.redone.append((str(out), d.why))
            jobs.append((f, rel, out, fp))
    return jobs


def _encode_and_write(log: ResumeLog, rec: dict, arr: np.ndarray) -> str:
    """On a writer thread: PNG-encode, journal the record, rename the file into place."""
    return log.write(rec, encode_png(arr))


def _read_one(job) -> tuple[tuple, np.ndarray | ImageReadError]:
    try:
        return job, read_rgb(job[0])
    except ImageReadError as exc:
        return job, exc


def _read_ahead(chunks: list[list], readers: int):
    """Yield each chunk's decoded images (in order) while the next chunk is decoded on
    ``readers`` threads (Pillow releases the GIL while it decodes)."""
    with ThreadPoolExecutor(max(1, readers), thread_name_prefix="osdhuman-reader") as pool:
        ahead = [pool.submit(_read_one, job) for job in chunks[0]] if chunks else []
        for i in range(len(chunks)):
            current = ahead
            ahead = [pool.submit(_read_one, job) for job in chunks[i + 1]] if i + 1 < len(chunks) else []
            yield [f.result() for f in current]


def _group_by_size(read: list, summary: DegradeSummary) -> list[list[tuple[np.ndarray, str, Path, dict]]]:
    """Images of equal size batch together; unreadable ones go to the skipped list."""
    by_size: dict[tuple[int, int], list[tuple[np.ndarray, str, Path, dict]]] = defaultdict(list)
    for (f, rel, out, fp), img in read:
        if isinstance(img, ImageReadError):
            summary.skipped.append((str(f), img.reason + (f" ({img.detail})" if img.detail else "")))
            continue
        by_size[img.shape[:2]].append((img, rel, out, fp))
    return list(by_size.values())


def _degrader(cfg: DegradationConfig, device, workers: int | None) -> Callable[[list, list], tuple[list, list]]:
    """A function (HQ uint8 (H, W, 3) images of one size, their seeds) -> (LQ uint8 (h, w, 3)
    images, their ImageParams). On a CPU with the real JPEG codec the numpy path (no torch
    import); else the torch ``Degrader`` on ``device``."""
    if str(device).split(":")[0] == "cpu" and cfg.jpeg_codec == "real":
        def run_cpu(hq: list[np.ndarray], seeds: list[int]):
            params = [sample_params(cfg, s, im.shape[:2]) for im, s in zip(hq, seeds)]
            return degrade_images(hq, params, cfg, workers), params

        return run_cpu
    import torch

    from osdhuman.degradation.pipeline import Degrader

    deg = Degrader(cfg, device=device, workers=workers)
    dev = torch.device(device)

    def run_torch(hq: list[np.ndarray], seeds: list[int]):
        x = torch.from_numpy(np.stack(hq)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
        lq, params = deg(x.to(dev).float() / 255.0, seeds, return_params=True)
        return list((lq * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()), params  # (H, W, 3) each

    return run_torch


def _run_jobs(jobs, lq_dir: Path, seed: int, cfg: DegradationConfig, degrade, batch_size: int, progress: bool,
              log: ResumeLog, key: str, summary: DegradeSummary, writers: int | None) -> None:
    """Read ahead on threads, degrade in batches of equal size, hand each LQ to the writer pool."""
    bar = tqdm(total=len(jobs), desc="degrade", unit="img", disable=not progress, file=sys.stderr)

    def done(_digest: str) -> None:
        summary.written += 1

    chunks = [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
    with WriterPool(writers) as pool:
        for read in _read_ahead(chunks, readers=min(2, os.cpu_count() or 1)):
            for group in _group_by_size(read, summary):
                seeds = [image_seed(seed, g[1]) for g in group]
                lq8, params = degrade([g[0] for g in group], seeds)
                for (_, rel, out, fp), arr, s, p in zip(group, lq8, seeds, params):
                    rec = {"file": rel, "output": out.relative_to(lq_dir).as_posix(), "seed": s,
                           "params": p.to_dict(), "input": fp, "run_key": key}
                    pool.submit(_encode_and_write, log, rec, arr, then=done)
            bar.update(len(read))
    bar.close()
