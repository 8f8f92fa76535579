"""Training and validation pairs for ``train`` (paper 4.2): HQ crops in a resumable order,
LQ synthesised on the training device by the Real-ESRGAN degradation.

Adapter over ``osdhuman.data.HQCropDataset`` and ``osdhuman.degradation``: the sampler
hands each item its global position, and the item's epoch (crops, flips, degradation seed)
is derived from that position, so the data stream is a pure function of (seed, position),
whatever the number of workers, and resumes exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from osdhuman.data import HQCropDataset
from osdhuman.degradation import Degrader, make_pairs
from osdhuman.training.config import TrainConfig
from osdhuman.training.sampler import ResumableBatchSampler

__all__ = ["TrainingData", "build_training_data", "PositionedDataset"]


class PositionedDataset(Dataset):
    """``ds[(index, position)]``: item ``index`` of ``base`` (through ``indices``) in epoch
    ``position // len``; adds ``pos`` to the item dict."""

    def __init__(self, base, indices: list[int]):
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, pos = key
        self.base.set_epoch(pos // len(self.indices))
        item = dict(self.base[self.indices[i]])
        item["pos"] = pos
        return item


@dataclass
class TrainingData:
    train: PositionedDataset
    degrader: object
    device: torch.device
    cfg: TrainConfig
    rank: int
    world: int
    val: tuple[torch.Tensor, torch.Tensor] | None  # (lq, hq) (N, 3, S, S) in [-1, 1] on device
    val_keys: list[str]
    listing_skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry, reason), train + val folders
    val_skipped: list[str] = field(default_factory=list)  # "file\treason\tdetail" met building the val pairs

    def iterator(self, position: int) -> Iterator[dict]:
        """Batches for this process starting at global sample ``position``."""
        sampler = ResumableBatchSampler(len(self.train), self.cfg.batch_size, self.cfg.seed, position,
                                        self.rank, self.world, shuffle=self.cfg.data.shuffle)
        nw = self.cfg.data.num_workers
        loader = DataLoader(self.train, batch_sampler=sampler, num_workers=nw,
                            pin_memory=self.device.type == "cuda", persistent_workers=nw > 0)
        return iter(loader)

    def make_pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(lq, hq) on the device, (B, 3, S, S) in [-1, 1]."""

        hq = batch["hq"].to(self.device, non_blocking=True)  # (B, 3, S, S)
        return make_pairs(hq, batch["seed"], self.degrader)


def _dataset(source: str, cfg: TrainConfig, split: str, train: bool):
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"training data {path}: not found. Set data.source to a folder of images or a PERSONA "
            "manifest.parquet written by `osdhuman build-dataset` (e.g. run `make demo` for demo_out/)"
        )
    return HQCropDataset(source, size=cfg.data.size, split=split,
                         random_crop=train and cfg.data.crop == "random",
                         flip=train and cfg.data.hflip, seed=cfg.seed if train else cfg.data.val_seed)


def build_training_data(cfg: TrainConfig, device: torch.device, rank: int = 0, world: int = 1) -> TrainingData:
    """Training set + fixed held-out validation pairs (computed once, on ``device``).

    Validation images: ``data.val_source``; else the manifest's ``val`` split; else (a folder)
    the first ``num_val`` images of the folder, which are then left out of training.
    """

    d = cfg.data
    train_ds = _dataset(d.source, cfg, "train", train=True)
    n = len(train_ds)
    train_idx, val_ds, val_idx = list(range(n)), None, []
    if d.num_val > 0:
        if d.val_source:
            val_ds = _dataset(d.val_source, cfg, "val", train=False)
            val_idx = list(range(min(d.num_val, len(val_ds))))
        elif Path(d.source).suffix == ".parquet":
            try:
                val_ds = _dataset(d.source, cfg, "val", train=False)
                val_idx = list(range(min(d.num_val, len(val_ds))))
            except ValueError:
                warnings.warn(f"{d.source}: no 'val' split; validation is skipped", stacklevel=2)
        else:
            val_ds = _dataset(d.source, cfg, "train", train=False)
            if n > d.num_val:
                val_idx, train_idx = list(range(d.num_val)), list(range(d.num_val, n))
            else:  # too few images to hold any out: validate on training images (said so)
                warnings.warn(f"{d.source}: only {n} images, validation uses training images", stacklevel=2)
                val_idx = list(range(n))
    degrader = Degrader(cfg.degradation)
    val = None
    keys: list[str] = []
    val_skipped: list[str] = []
    if val_ds is not None and val_idx:
        items = [val_ds[i] for i in val_idx]
        val_skipped = [line for it in items for line in it["skipped"].splitlines()]
        hq = torch.stack([it["hq"] for it in items]).to(device)  # (N, 3, S, S)
        seeds = [d.val_seed + i for i in range(len(items))]
        lq, hq = make_pairs(hq, seeds, degrader)
        val = (lq, hq)
        keys = [it["key"] for it in items]
    listing = list(train_ds.listing_skipped)
    if val_ds is not None and val_ds.source != train_ds.source:
        listing += val_ds.listing_skipped
    return TrainingData(PositionedDataset(train_ds, train_idx), degrader, device, cfg, rank, world, val, keys,
                        listing, val_skipped)
