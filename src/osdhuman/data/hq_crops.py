"""HQ training crops from an image folder or a PERSONA manifest (paper 4.2: 512x512 HQ crops;
the LQ is synthesised on the training device by ``osdhuman.degradation``).

Every random choice of an item (crop offset, flip, degradation seed) comes from
(``seed``, epoch, index) alone, so it is the same whatever the number of DataLoader workers.
Entries the folder listing leaves out (not an image extension, dangling link, link loop,
directory) are in ``listing_skipped``; a file that cannot be decoded is skipped for the next
readable one, and the item that met it says so in ``skipped`` ("file\treason\tdetail" lines),
so the training loop can report it whatever DataLoader worker read it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from osdhuman.imageio import ImageReadError, read_rgb, scan_images

# pandas is imported inside the manifest reader (~0.35 s, only for a manifest source).

__all__ = ["HQCropDataset", "NoReadableImagesError", "read_manifest"]


class NoReadableImagesError(RuntimeError):
    """Every image of the training source failed to read (the message names the source)."""


_MANIFEST_COLUMNS = ("selected", "split", "image_path")


def read_manifest(path: str | Path, split: str) -> list[tuple[Path, str]]:
    """(image file, key) of the rows with ``selected == True`` and ``split == split``."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ValueError(f"{path}: cannot read manifest ({exc})") from exc
    missing = [c for c in _MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {missing} (written by `osdhuman build-dataset`?)")
    rows = df[(df["selected"].fillna(False).astype(bool)) & (df["split"] == split)]
    rows = rows[rows["image_path"].notna()]
    keys = rows["crop_id"].astype(str) if "crop_id" in rows.columns else rows["image_path"].map(lambda p: Path(p).stem)
    return [(path.parent / str(p), str(k)) for p, k in zip(rows["image_path"], keys)]


class HQCropDataset(Dataset):
    """Square HQ crops in [-1, 1] with a per-item degradation seed.

    source: an image folder (searched recursively; ``split`` ignored) or a ``manifest.parquet``.
    size: crop side. Images with a shorter side below ``size`` are first upscaled (bicubic) so
    that it equals ``size``. random_crop: random offset, else the centre crop. flip: random
    horizontal flip with p 0.5. Random 512 crops from larger images also give the "LSDIR-style
    random crops" ablation.

    Items: ``dict(hq=(3, size, size) float32 in [-1, 1], key=str, seed=int)``; ``seed`` is a
    deterministic per-item, per-epoch seed for the degradation (see :meth:`set_epoch`).
    """

    def __init__(self, source: str | Path, size: int = 512, split: str = "train", random_crop: bool = True,
                 flip: bool = True, seed: int = 0):
        source = Path(source)
        self.listing_skipped: list[tuple[str, str]] = []  # (entry, reason) the folder listing left out
        if source.is_dir():
            files, self.listing_skipped = scan_images(source)
            self.items = [(f, f.relative_to(source).with_suffix("").as_posix()) for f in files]
        elif source.suffix == ".parquet":
            self.items = read_manifest(source, split)
        else:
            raise ValueError(f"{source}: not an image folder or a manifest .parquet file")
        if not self.items:
            raise ValueError(f"{source}: no images" + (f" with selected == True and split == {split!r}"
                                                       if source.suffix == ".parquet" else ""))
        self.source, self.size, self.split = source, int(size), split
        self.random_crop, self.flip, self.seed = random_crop, flip, int(seed)
        self.epoch = 0
        self.bad: dict[str, str] = {}  # file -> reason, in this process

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Draw new crops, flips and degradation seeds (call before each epoch, as with a sampler)."""
        self.epoch = int(epoch)

    def _load(self, i: int) -> tuple[np.ndarray, str, list[str]]:
        """(image, key, "file\treason\tdetail" of each file newly found bad on the way)."""
        n, met = len(self.items), []
        for j in range(n):
            path, key = self.items[(i + j) % n]
            if str(path) in self.bad:
                continue
            try:
                return read_rgb(path), key, met
            except ImageReadError as exc:
                self.bad[str(path)] = exc.reason
                met.append(f"{path}\t{exc.reason}\t{exc.detail}")
        raise NoReadableImagesError(f"{self.source}: none of the {n} images can be read")

    def __getitem__(self, i: int) -> dict:
        img, key, met = self._load(int(i))  # (H, W, 3) uint8
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        s = self.size
        h, w = img.shape[:2]
        if min(h, w) < s:  # upscale so the shorter side is s
            f = s / min(h, w)
            nh, nw = max(s, round(h * f)), max(s, round(w * f))
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
            h, w = nh, nw
        if self.random_crop:
            top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        else:
            top, left = (h - s) // 2, (w - s) // 2
        crop = img[top:top + s, left:left + s]
        flip = bool(self.flip and rng.random() < 0.5)
        if flip:
            crop = crop[:, ::-1]
        hq = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, s, s)
        return {"hq": hq, "key": key, "seed": int(rng.integers(0, 2**62)), "skipped": "\n".join(met)}
