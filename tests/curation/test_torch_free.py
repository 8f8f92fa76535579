"""`osdhuman build-dataset` with offline metrics runs as whole processes (the command and its
spawned workers) without importing torch: COCO-style annotations, and a photo folder through
the OpenCV person detector (the ``run_cli_without_torch`` fixture reports any torch import)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

OFFLINE = ["crop.size=96", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=50",
           "exec.shard_size=3", "iqa.metrics=[niqe,brisque,piqe]", "iqa.backend=offline", "split.val_fraction=0.25",
           "exec.report_thumbs=4"]


def _argv(source: str, out, workers: int) -> list[str]:
    argv = ["build-dataset", "--source", source, "--out", str(out), "--no-progress", "--workers", str(workers)]
    for s in OFFLINE:
        argv += ["--set", s]
    return argv


def test_build_dataset_from_annotations_with_workers_never_imports_torch(crafted, tmp_path, run_cli_without_torch):
    out = tmp_path / "out"
    rc, log, imports = run_cli_without_torch(_argv(crafted["source"], out, workers=2))
    assert rc == 0 and imports == [], log
    m = pd.read_parquet(out / "manifest.parquet")
    pool = m[m["score"].notna()]
    assert len(pool) > 0 and m["selected"].any()
    for name in ("niqe", "brisque", "piqe"):
        assert np.isfinite(pool[f"iqa_{name}"]).all(), name


def test_build_dataset_from_a_folder_with_the_opencv_detector_never_imports_torch(tmp_path, run_cli_without_torch):
    skdata = pytest.importorskip("skimage.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skdata.astronaut()).save(photos / "astronaut.png")  # one person, face and shoulders
    out = tmp_path / "out"
    rc, log, imports = run_cli_without_torch(_argv(f"folder:{photos}", out, workers=1))
    assert rc == 0 and imports == [], log
    m = pd.read_parquet(out / "manifest.parquet")
    assert (m["source_image"] == "astronaut.png").any()  # the detector found her, the crop was scored
    assert np.isfinite(m.loc[m["score"].notna(), "iqa_niqe"]).all()
