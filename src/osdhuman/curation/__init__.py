"""HQ-ACF: the high-quality automated cropping and filtering pipeline (paper 3.1, Fig. 3) that
builds PERSONA-style datasets of 512x512 human crops from detection datasets and photos.

    from osdhuman.curation import CurationConfig, build_dataset
    cfg = CurationConfig(sources=["coco:instances_train2017.json:train2017/"])
    result = build_dataset(cfg, "persona/")      # or: osdhuman build-dataset --source ... --out persona/

Stages, in the paper's order (every threshold is a field of :class:`CurationConfig`):

1. Laplacian-variance blur filter on the whole image (``blur.min_laplacian_var``).
2. Low-resolution boxes (``boxes.min_long_side`` / ``min_short_side``) and overly dense boxes
   (more than ``boxes.max_overlapping`` others with IoU > ``boxes.dense_iou``; images with more
   than ``boxes.max_people`` boxes are crowds). Boxes are clipped to the image first.
3. Square crop, side = the box's longer edge, centred on the box and *shifted* inside the
   image; a side longer than the image's shorter side is rejected (``crop_exceeds_image``)
   or, with ``crop.oversize=pad``, kept centred and padded with ``crop.pad_value``.
4. NMS among the crops of one image: nearest person box to the image centre first, a crop is
   dropped when its IoU with a kept crop exceeds ``nms.iou_threshold``.
5. Resize to ``crop.size`` (Lanczos up, area down).
6. IQA scores (``iqa.metrics`` through :mod:`osdhuman.iqa`).
7. Eq. 1: z-score per metric over the whole pool (lower-better negated), mean, keep the top
   ``selection.keep_fraction`` that also passes every ``iqa.thresholds`` entry.
8. Splits disjoint by source image; whole sources pinned with ``split.source_splits``.

Outputs in OUT/: ``images/<split>/<crop_id>.png`` (selected crops only), ``manifest.parquet``
(one row per candidate crop; metric columns are ``iqa_<name>``), ``rejects.parquet`` (one row
per image or box dropped before cropping, with stage and reason), ``config.yaml``,
``report.html``. Work is done in shards whose results are stored under ``OUT/.work/`` keyed by
a hash of the config and the shard's inputs, so a killed run resumes where it stopped.
"""

from osdhuman.curation.config import METRIC_PRESETS, CurationConfig
from osdhuman.curation.runner import BuildResult, OutputDirError, build_dataset
from osdhuman.curation.sources import SourceError

__all__ = ["METRIC_PRESETS", "BuildResult", "CurationConfig", "OutputDirError", "SourceError", "build_dataset"]
