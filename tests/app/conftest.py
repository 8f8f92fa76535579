"""Small real build-dataset and evaluate outputs for the app's tests (made by the commands)."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from osdhuman.cli import main


def _photo(seed: int, h: int = 160, w: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 0.5 + seed * 0.3)


@pytest.fixture(scope="session")
def demo_like(tmp_path_factory):
    """{'dataset': build-dataset OUT, 'eval': evaluate OUT, 'photo': a photo file}."""
    root = tmp_path_factory.mktemp("applike")
    photos = root / "photos"
    photos.mkdir()
    images, anns = [], []
    for i in range(4):
        Image.fromarray(_photo(i)).save(photos / f"p{i}.png")
        images.append({"id": i + 1, "file_name": f"p{i}.png", "width": 200, "height": 160})
        for b in ([20, 30, 50, 100], [120, 10, 60, 120]):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": b, "iscrowd": 0})
    coco = root / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    fast = ["crop.size=64", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=1",
            "iqa.metrics=[laplacian_var]", "split.val_fraction=0.5", "exec.report_thumbs=2", "selection.keep_fraction=0.5"]
    argv = ["build-dataset", "--out", str(root / "dataset"), "--source", f"photos=coco:{coco}:{photos}", "--workers", "1"]
    for o in fast:
        argv += ["--set", o]
    assert main(argv) == 0
    hq = next(d for d in (root / "dataset" / "images" / s for s in ("val", "train")) if any(d.glob("*.png")))
    lq = root / "lq"
    lq.mkdir()
    for p in hq.glob("*.png"):
        Image.fromarray(cv2.GaussianBlur(np.asarray(Image.open(p)), (0, 0), 1.5)).save(lq / p.name)
    assert main(["evaluate", "--method", f"blurred={lq}", "--reference", str(hq), "--metrics", "psnr_y,ssim_y",
                 "-o", str(root / "eval"), "--no-progress"]) == 0
    return {"dataset": root / "dataset", "eval": root / "eval", "photo": photos / "p0.png"}
