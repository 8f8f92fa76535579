"""Training data: HQ crops for on-the-fly degradation.

Public API::

    from osdhuman.data import HQCropDataset

    ds = HQCropDataset(source, size=512, split="train", random_crop=True, flip=True, seed=0)
    # source: an image folder, or a PERSONA manifest.parquet written by `osdhuman build-dataset`
    #         (rows with selected == True and split == split; file = manifest_dir / image_path)
    item = ds[i]      # dict(hq=(3, size, size) float32 in [-1, 1], key=str, seed=int)
    ds.set_epoch(e)   # new crops / flips / degradation seeds per epoch, deterministic
    # LQ: osdhuman.degradation.make_pairs(batch["hq"].to(dev), batch["seed"], Degrader(cfg))
"""

from osdhuman.data.hq_crops import HQCropDataset

__all__ = ["HQCropDataset"]
