"""Typed configuration of the HQ-ACF pipeline (paper 3.1, docs/reference.md §curation).

Every threshold of the pipeline is a field here (our choices: the paper publishes
none). The resolved config is written to ``OUT/config.yaml`` by every run and its hash keys
the resumable shard results, so changing any value re-runs exactly the work it affects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from osdhuman.config import SEED_MAX, rule

# IQA metric presets. "paper" needs pyiqa and its downloaded weights.
METRIC_PRESETS: dict[str, list[str]] = {
    "offline": ["niqe", "brisque", "piqe"],
    "paper": ["clipiqa", "maniqa", "musiq", "niqe"],
    "laplacian": ["laplacian_var"],
}


@dataclass
class LabelConfig:
    """Which annotation labels count as a person (matched case-insensitively) and which flagged
    boxes are rejected. Every value is shown in the report; the defaults follow each dataset's
    own definition of its flags (docs/reference.md §peers)."""

    coco_names: list[str] = field(default_factory=lambda: ["person"])  # COCO "person", Objects365 "Person", VOC "person"
    openimages_names: list[str] = field(
        default_factory=lambda: ["Person", "Man", "Woman", "Boy", "Girl", "Human body"]
    )  # order = preference when boxes of one person under several labels are merged
    crowdhuman_box: Literal["fbox", "vbox"] = "fbox"  # full-body box, as the paper
    skip_crowd: bool = True  # COCO iscrowd=1 boxes are not one person
    skip_difficult: bool = True  # Pascal VOC difficult=1 boxes
    # Open Images box flags that make a reject row (IsGroupOf: a group, IsDepiction: a drawing,
    # statue or poster); the other flags (IsInside, IsOccluded, IsTruncated) are recorded in the
    # manifest's ``box_flags`` column.
    openimages_reject_flags: list[str] = field(default_factory=lambda: ["IsGroupOf", "IsDepiction"])
    # Objects365 v2 per-box flags rejected when present (a fake person: a picture or a mannequin;
    # a reflection in a mirror or a window)
    coco_reject_flags: list[str] = field(default_factory=lambda: ["isfake", "isreflected"])
    crowdhuman_reject_ignore: bool = True  # extra.ignore=1 boxes are reject rows (they are not annotated people)
    # boxes of one person under several human labels ("Person" and "Man") overlapping more
    # than this IoU are one person: the box of the earlier label in openimages_names is kept
    merge_iou: float = rule(0.7, ge=0, le=1)


@dataclass
class DetectorConfig:
    """Person detector for ``folder:`` sources."""

    kind: Literal["opencv", "yolo"] = "opencv"
    weights: str | None = None  # YOLO11 weights file (kind=yolo)
    device: str = "cpu"
    max_side: int = rule(800, ge=1)  # images are downscaled to this longer side for detection
    yolo_conf: float = rule(0.35, ge=0, le=1)
    hog: bool = True  # OpenCV HOG people detector (full bodies)
    hog_min_score: float = rule(0.5, ge=0)
    upperbody: bool = True  # Haar upper-body cascade
    faces: bool = True  # Haar frontal-face cascade, extended to a head-and-shoulders box
    face_to_body: tuple[float, float, float, float] = rule((1.2, 0.6, 1.2, 3.0), ge=0)  # face widths left, up, right, down
    merge_iou: float = rule(0.4, ge=0, le=1)  # detections of different detectors overlapping more are merged


@dataclass
class BlurConfig:
    """Laplacian-variance blur filter on the whole (grayscale) source image."""

    min_laplacian_var: float = rule(60.0, ge=0)


@dataclass
class BoxConfig:
    """Rejection of low-resolution and overly dense person boxes (before cropping)."""

    min_long_side: int = rule(256, ge=1)  # px; the crop side equals the long side, so this bounds upscaling (512/256 = 2x)
    min_short_side: int = rule(64, ge=1)  # px
    max_people: int = rule(20, ge=1)  # more person boxes than this in one image: the whole image is a crowd
    dense_iou: float = rule(0.3, ge=0, le=1)  # two boxes "overlap" when their IoU exceeds this
    max_overlapping: int = rule(3, ge=0)  # a box overlapping more boxes than this is "too dense"


@dataclass
class CropConfig:
    """Square crop (side = the box's longer edge) and resize.

    Border behaviour: the square is centred on the box and then shifted (not shrunk) to lie
    inside the image. If the side exceeds the image's shorter side it cannot fit: with
    ``oversize="reject"`` the crop is rejected (reason ``crop_exceeds_image``); with
    ``oversize="pad"`` it stays centred on the box in that dimension and the missing part is
    filled with ``pad_value``.
    """

    size: int = rule(512, ge=1)
    oversize: Literal["reject", "pad"] = "reject"
    pad_value: int = rule(0, ge=0)
    upscale: Literal["lanczos", "cubic", "linear"] = "lanczos"
    downscale: Literal["area", "lanczos", "cubic", "linear"] = "area"


@dataclass
class NMSConfig:
    """Among overlapping candidate crops keep the one nearest the image centre."""

    iou_threshold: float = rule(0.4, ge=0, le=1)


@dataclass
class IQAConfig:
    """No-reference IQA scoring of the 512x512 crops."""

    metrics: list[str] = field(default_factory=lambda: list(METRIC_PRESETS["offline"]))
    backend: str = "auto"  # auto | pyiqa | offline (passed to osdhuman.iqa.get_metric)
    device: str = "cpu"
    batch_size: int = rule(8, ge=1)
    # Per-metric pass thresholds in the metric's own units and direction: a crop passes
    # when score >= t (higher-better metrics) or score <= t (lower-better metrics).
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass
class SourceSelection:
    """Selection rule for the crops of one source, replacing the global rule for them.

    The paper's test set is the other way round from training: real low-quality VOC crops
    "sampled under predefined IQA thresholds". For that: ``keep_fraction: 1.0``, ``at_most``
    bounds (a crop passes when its score is no *better* than the bound) and ``max_count: 3000``.
    Eq. 1 scores are still z-scores over the whole pool; ranking and counts are within the source.
    """

    keep_fraction: float = rule(1.0, gt=0, le=1)
    thresholds: dict[str, float] = field(default_factory=dict)  # at least this good (as iqa.thresholds)
    at_most: dict[str, float] = field(default_factory=dict)  # at most this good (real-LQ sampling)
    max_count: int = rule(0, ge=0)  # 0: all that pass; else a seeded random sample of this many


@dataclass
class SelectionConfig:
    """Eq. 1: z-score each metric over the pool (lower-better negated), average, keep the top fraction."""

    keep_fraction: float = rule(1.0 / 3.0, gt=0, le=1)
    sources: dict[str, SourceSelection] = field(default_factory=dict)  # per-source rules, e.g. {voc: {...}}
    # sources whose crops do not enter mu / sigma of Eq. 1 (their crops are scored with the
    # statistics of the others), e.g. [voc]: the real-LQ test source must not shift training's bar
    stats_exclude: list[str] = field(default_factory=list)


@dataclass
class DedupConfig:
    """Duplicate and leakage control across all sources (beyond the paper; see curation/dedup.py).

    Source images with equal decoded pixels, or perceptual hashes (of the image or its mirror)
    within ``max_hamming`` bits, form one duplicate group; a group never spans two splits, and
    unless ``keep_duplicates`` only one source image of a group keeps its selected crops.
    """

    enabled: bool = True
    max_hamming: int = rule(4, ge=-1, le=16)  # of 64 phash bits; -1: exact (content hash) duplicates only
    mirror: bool = True  # a horizontally flipped copy is a duplicate too
    keep_duplicates: bool = False  # True: every member of a group keeps its crops (same split)


@dataclass
class SplitConfig:
    """Train / val / test assignment, disjoint by source image."""

    val_fraction: float = rule(0.04, ge=0, le=1)  # of selected crops (paper: 4,216 val vs 109,053 train)
    test_fraction: float = rule(0.0, ge=0, le=1)  # the paper's test set is a whole source (VOC): use source_splits
    source_splits: dict[str, str] = field(default_factory=dict)  # source name -> split, e.g. {voc: test}
    seed: int = rule(0, ge=0, le=SEED_MAX)


@dataclass
class ExecConfig:
    """How the work runs (not part of the results' cache key, except shard_size)."""

    backend: Literal["local", "ray"] = "local"
    workers: int = rule(0, ge=0)  # 0 = one per CPU core
    shard_size: int = rule(32, ge=1)  # source images per resumable unit of work
    pack_images: int = rule(10000, ge=0)  # finished shards are consolidated into files of about this many source images
    max_images_per_source: int = rule(0, ge=0)  # 0: all; else only the first N images of each source (a quick trial)
    png_compression: int = rule(1, ge=0, le=9)  # 0-9, zlib level of the written PNGs (1: 17 ms, 438 KB; 3: 25 ms, 424 KB per crop)
    report_thumbs: int = rule(48, ge=0)  # crops shown per group in report.html
    ray_num_gpus: float = rule(0.0, ge=0)  # GPUs per Ray scoring actor (0 with iqa.device=cuda: 1; 0.25 shares one GPU by 4)
    # Ray: score in separate actors fed batches of crops from many shards ("auto": when
    # iqa.device is cuda, so the GPU sees big batches while CPU actors decode and crop)
    ray_score_actors: Literal["auto", "always", "never"] = "auto"
    ray_score_concurrency: int = rule(0, ge=0)  # scoring actors (0: one per GPU share, or 1 without GPUs)
    ray_score_shards: int = rule(8, ge=0)  # shards whose crops go to a scoring actor in one batch
    # a rerun checks size and mtime of every input file of the finished shards (one stat per
    # file, threaded) and redoes shards whose files changed; false trusts the finished shards
    verify_inputs: bool = True


@dataclass
class CurationConfig:
    labels: LabelConfig = field(default_factory=LabelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    boxes: BoxConfig = field(default_factory=BoxConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    nms: NMSConfig = field(default_factory=NMSConfig)
    iqa: IQAConfig = field(default_factory=IQAConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    exec: ExecConfig = field(default_factory=ExecConfig)
    sources: list[str] = field(default_factory=list)  # --source specs, recorded for reproducibility
    preset: str = ""  # the --preset this config came from (recorded in the report)
    metrics_note: str = ""  # set when a preset's metrics were replaced (--allow-offline-metrics)

    def __post_init__(self):
        for name, split in self.split.source_splits.items():
            if split not in ("train", "val", "test"):
                raise ValueError(f"split.source_splits.{name}: {split!r} is not train, val or test")
        if self.split.val_fraction + self.split.test_fraction > 1:
            raise ValueError("split.val_fraction and split.test_fraction must sum to <= 1")
        if self.crop.size < 8:
            raise ValueError(f"crop.size must be >= 8, got {self.crop.size}")
