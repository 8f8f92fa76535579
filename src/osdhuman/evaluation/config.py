"""Configs of ``osdhuman evaluate`` and ``osdhuman dataset-quality`` (saved beside the results)."""

from __future__ import annotations

from dataclasses import dataclass, field

from osdhuman.config import SEED_MAX, rule

__all__ = ["DatasetQualityConfig", "EvaluateConfig"]


@dataclass
class EvaluateConfig:
    """Paper 4.2 / Table 2. ``metrics``: names from osdhuman.iqa.METRICS or one preset name
    ("paper-val": DISTS LPIPS PSNR SSIM FID CLIPIQA MANIQA MUSIQ NIQE; "paper-test": the
    no-reference four; "offline": what runs without any download)."""

    metrics: list[str] = field(default_factory=lambda: ["paper-val"])
    backend: str = "auto"  # auto | pyiqa | offline (osdhuman.iqa.get_metric)
    device: str = "auto"  # auto = cuda when present, else cpu
    batch_size: int = rule(8, ge=1)
    recursive: bool = True  # look for images in subfolders too (paired by file stem)
    title: str = ""  # column-group title of the table (default: the reference folder's name)
    digits: str = "paper"  # paper: decimals as Table 2 prints them | sig4: 4 significant, no leading 0
    seed: int = rule(0, ge=0, le=SEED_MAX)  # for metrics with random crops (pyiqa MANIQA)


@dataclass
class DatasetQualityConfig:
    """Paper 4.1 / Table 1: no-reference IQA means per dataset."""

    metrics: list[str] = field(default_factory=lambda: ["paper-dataset"])
    backend: str = "auto"
    device: str = "auto"
    batch_size: int = rule(8, ge=1)
    recursive: bool = True
    max_images: int = rule(0, ge=0)  # per dataset, 0 = all (a deterministic evenly spaced subset otherwise)
    digits: str = "paper"
    seed: int = rule(0, ge=0, le=SEED_MAX)
