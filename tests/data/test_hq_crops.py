"""HQCropDataset on an image folder and on a crafted PERSONA manifest.parquet."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from osdhuman.data import HQCropDataset
from osdhuman.degradation import Degrader, make_pairs


def _save(path, h, w, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "imgs"
    _save(d / "big.png", 80, 100, 0)
    _save(d / "small.jpg", 20, 40, 1)  # shorter side below the crop: upscaled
    _save(d / "exact.png", 32, 32, 2)
    (d / "bad.png").write_bytes(b"garbage")
    (d / "notes.txt").write_text("not an image")
    return d


def test_folder_items_shape_range_and_determinism(folder):
    ds = HQCropDataset(folder, size=32, seed=5)
    assert len(ds) == 4
    keys = set()
    assert ds.listing_skipped == [(str(folder / "notes.txt"), "not_an_image_extension")]
    items = [ds[i] for i in range(len(ds))]
    met = [line.split("\t")[:2] for it in items for line in it["skipped"].splitlines()]
    assert met == [[str(folder / "bad.png"), "not_an_image"]]  # said once, by the item that met it
    for it in items:
        assert it["hq"].shape == (3, 32, 32) and it["hq"].dtype == torch.float32
        assert it["hq"].min() >= -1 and it["hq"].max() <= 1
        assert isinstance(it["seed"], int) and isinstance(it["key"], str)
        keys.add(it["key"])
    assert {"big", "small", "exact"} <= keys and "bad" not in keys  # the bad file falls back to the next
    again = HQCropDataset(folder, size=32, seed=5)
    for i in (0, 2, 3):
        a, b = ds[i], again[i]
        assert torch.equal(a["hq"], b["hq"]) and a["seed"] == b["seed"]
    ds.set_epoch(1)
    assert [ds[i]["seed"] for i in (0, 2, 3)] != [again[i]["seed"] for i in (0, 2, 3)]
    # exact-size image without flip: the crop is the image itself
    fixed = HQCropDataset(folder, size=32, flip=False, random_crop=False)
    idx = next(k for k, (_, key) in enumerate(fixed.items) if key == "exact")
    ref = torch.from_numpy(np.asarray(Image.open(folder / "exact.png"))).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(fixed[idx]["hq"], ref)


def test_random_crops_differ_and_cover_the_image(folder):
    ds = HQCropDataset(folder, size=32, seed=0, flip=False)
    idx = next(k for k, (_, key) in enumerate(ds.items) if key == "big")
    crops = set()
    for e in range(8):
        ds.set_epoch(e)
        crops.add(ds[idx]["hq"].sum().item())
    assert len(crops) > 4


def test_manifest_selected_rows_of_the_split(tmp_path):
    root = tmp_path / "persona"
    rows = []
    for i, (sel, split) in enumerate([(True, "train"), (True, "train"), (True, "val"), (False, None), (True, "train")]):
        rel = f"images/{split or 'none'}/c{i}.png"
        _save(root / rel, 40, 40, i)
        rows.append({"crop_id": f"c{i}", "selected": sel, "split": split, "image_path": rel if sel else None})
    rows[4]["image_path"] = "images/train/missing.png"  # listed but absent: skipped with a warning
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    ds = HQCropDataset(root / "manifest.parquet", size=32, split="train")
    assert len(ds) == 3
    items = [ds[i] for i in range(3)]
    assert {it["key"] for it in items} == {"c0", "c1"}
    met = "".join(it["skipped"] for it in items)
    assert "missing.png\t" in met and met.count("\n") == 0
    val = HQCropDataset(root / "manifest.parquet", size=32, split="val")
    assert [val[0]["key"]] == ["c2"]
    pd.DataFrame({"crop_id": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet.*selected"):
        HQCropDataset(tmp_path / "bad.parquet")


def test_dataloader_batch_feeds_make_pairs(folder):
    ds = HQCropDataset(folder, size=32)
    dl = torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False, num_workers=0)
    batch = next(iter(dl))
    assert isinstance(batch["skipped"], list) and len(batch["skipped"]) == 3  # strings collate to a list
    lq, hq = make_pairs(batch["hq"], batch["seed"], Degrader())
    assert lq.shape == (3, 3, 32, 32) and lq.min() >= -1 and lq.max() <= 1
    assert hq is batch["hq"]
