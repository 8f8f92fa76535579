"""Degrade a folder of HQ images into a PERSONA-Val-style synthetic LQ folder.

    1. list the HQ images (recursively), refuse an output folder inside the input folder
    2. give each image its seed: a hash of (run seed, relative path), so adding or removing
       files never changes the LQ of the others
    3. read, batch images of equal size, degrade on the chosen device
    4. write LQ_DIR/<relative path>.png, one JSON line per image in params.jsonl, unreadable
       files in skipped.jsonl, the resolved config in config.yaml
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from osdhuman.config import save_config
from osdhuman.degradation.config import DegradationConfig
from osdhuman.degradation.pipeline import Degrader
from osdhuman.imageio import ImageReadError, list_images, read_rgb, write_image

__all__ = ["DegradeSummary", "degrade_folder", "image_seed"]


@dataclass
class DegradeSummary:
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    out_dir: Path | None = None


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
                   device: str | torch.device = "cpu", batch_size: int = 8, progress: bool = True) -> DegradeSummary:
    """Write one LQ PNG per readable image of ``hq_dir`` into ``lq_dir`` (same relative name)."""
    cfg = cfg if cfg is not None else DegradationConfig()
    hq_dir, lq_dir = Path(hq_dir), Path(lq_dir)
    if not hq_dir.is_dir():
        raise ValueError(f"{hq_dir}: not a folder")
    hq_res, lq_res = hq_dir.resolve(), lq_dir.resolve()
    if _inside(lq_res, hq_res):
        raise ValueError(f"{lq_dir}: the output folder must not be the input folder {hq_dir} or inside it")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = list_images(hq_dir)
    if not files:
        raise ValueError(f"{hq_dir}: no images found")
    lq_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, lq_dir / "config.yaml")

    summary = DegradeSummary(out_dir=lq_dir)
    outputs: dict[Path, str] = {}
    jobs: list[tuple[Path, str, Path]] = []
    inputs = {f.resolve() for f in files}
    for f in files:
        rel = f.relative_to(hq_dir).as_posix()
        out = lq_dir / Path(rel).with_suffix(".png")
        if out in outputs:
            summary.skipped.append((str(f), f"output_name_collision with {outputs[out]}"))
            continue
        if out.resolve() in inputs:
            summary.skipped.append((str(f), "output would overwrite an input"))
            continue
        outputs[out] = rel
        jobs.append((f, rel, out))

    deg = Degrader(cfg, device=device)
    dev = torch.device(device)
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), desc="degrade", unit="img", disable=not progress, file=sys.stderr)
    except ImportError:  # pragma: no cover
        bar = None
    with open(lq_dir / "params.jsonl", "w") as pf, open(lq_dir / "skipped.jsonl", "w") as sf:
        for f, reason in summary.skipped:
            sf.write(json.dumps({"file": f, "reason": reason}) + "\n")
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            by_size: dict[tuple[int, int], list[tuple[np.ndarray, str, Path]]] = defaultdict(list)
            for f, rel, out in chunk:
                try:
                    img = read_rgb(f)
                except ImageReadError as exc:
                    summary.skipped.append((str(f), exc.reason))
                    sf.write(json.dumps({"file": str(f), "reason": exc.reason, "detail": exc.detail}) + "\n")
                    continue
                by_size[img.shape[:2]].append((img, rel, out))
            for group in by_size.values():
                hq = torch.from_numpy(np.stack([g[0] for g in group])).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
                seeds = [image_seed(seed, g[1]) for g in group]
                lq, params = deg(hq.to(dev).float() / 255.0, seeds, return_params=True)
                lq8 = (lq * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
                for (img, rel, out), arr, s, p in zip(group, lq8, seeds, params):
                    write_image(arr, out)
                    rec = {"file": rel, "output": out.relative_to(lq_dir).as_posix(), "seed": s, "params": p.to_dict()}
                    pf.write(json.dumps(rec) + "\n")
                    summary.written += 1
            pf.flush()
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return summary

