"""Person detectors for folder: sources."""

from __future__ import annotations

import numpy as np
import pytest

from osdhuman.cli import main
from osdhuman.curation.config import DetectorConfig
from osdhuman.curation.detect import DetectorUnavailable, OpenCVPersonDetector, check_detector, merge_boxes


def test_opencv_detector_finds_the_astronaut_portrait():
    data = pytest.importorskip("skimage.data")
    img = data.astronaut()  # (512, 512, 3): a portrait, face near (225, 115)
    boxes = OpenCVPersonDetector(DetectorConfig())(img)
    assert len(boxes) >= 1
    hit = [b for b in boxes if b[0] < 225 < b[2] and b[1] < 115 < b[3]]
    assert hit and (hit[0][3] - hit[0][1]) > 250  # a head-and-shoulders box, not just the face
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 512).all()
    # nothing to find in flat grey
    assert len(OpenCVPersonDetector(DetectorConfig())(np.full((300, 300, 3), 128, np.uint8))) == 0


def test_merge_boxes_keeps_the_higher_score():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    kept = merge_boxes(boxes, np.array([0.5, 2.0, 1.0]), iou=0.4)
    np.testing.assert_array_equal(kept, boxes[[1, 2]])


def test_yolo_needs_weights_and_fails_before_work(tmp_path, capsys):
    with pytest.raises(DetectorUnavailable, match="--detector-weights"):
        check_detector(DetectorConfig(kind="yolo"))
    with pytest.raises(DetectorUnavailable, match="not found"):
        check_detector(DetectorConfig(kind="yolo", weights=str(tmp_path / "yolo11x.pt")))
    folder = tmp_path / "photos"
    folder.mkdir()
    out = tmp_path / "out"
    rc = main(["build-dataset", "--source", f"folder:{folder}", "--out", str(out), "--detector", "yolo",
               "--metrics", "laplacian_var"])
    assert rc == 2 and "--detector-weights" in capsys.readouterr().err
    assert not (out / "manifest.parquet").exists()
