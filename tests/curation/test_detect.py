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


_YOLO_CHECK = r"""
import json, sys
import numpy as np
from ultralytics import YOLO
from osdhuman.curation.config import DetectorConfig
from osdhuman.curation.detect import YOLOPersonDetector

weights = sys.argv[1]
YOLO("yolo11n.yaml").save(weights)  # YOLO11n from ultralytics' own YAML, random weights
img = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
boxes = YOLOPersonDetector(DetectorConfig(kind="yolo", weights=weights, yolo_conf=1e-4))(img)
res = YOLO(weights).predict(np.ascontiguousarray(img[..., ::-1]), conf=1e-4, verbose=False, device="cpu")[0]
person = res.boxes.xyxy[res.boxes.cls == 0].numpy().astype(np.float64)
print(json.dumps({"boxes": boxes.tolist(), "dtype": str(boxes.dtype), "person": person.tolist()}))
"""


def test_yolo_path_end_to_end_with_a_random_yolo11(tmp_path):
    """Class filtering (person = class 0 only), box format (xyxy pixels of the input image) and
    the folder: source through build-dataset, on a YOLO11 whose weights are random. Run in
    subprocesses: importing ultralytics changes PIL / cv2 behaviour process-wide (after it, PIL
    tries a missing HEIF plugin on a non-image), which other tests must not inherit."""
    import importlib.util

    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics not installed")
    import json
    import os
    import subprocess
    import sys

    from PIL import Image

    weights = tmp_path / "yolo11n-random.pt"
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", _YOLO_CHECK, str(weights)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    boxes, person = np.array(got["boxes"]).reshape(-1, 4), np.array(got["person"]).reshape(-1, 4)
    assert got["dtype"] == "float64" and len(boxes) > 0
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 320).all() and (boxes[:, [1, 3]] <= 240).all()
    # exactly the class-0 detections of the unfiltered model (BGR input, as ultralytics expects)
    np.testing.assert_allclose(np.sort(boxes, axis=0), np.sort(person, axis=0), atol=1e-3)
    rng = np.random.default_rng(1)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "out"
    argv = ["build-dataset", "--source", f"folder:{folder}", "--out", str(out), "--no-progress", "--workers", "1",
            "--detector", "yolo", "--detector-weights", str(weights), "--metrics", "laplacian_var",
            "--set", "detector.yolo_conf=0.0001", "--set", "crop.size=32", "--set", "boxes.min_long_side=8",
            "--set", "boxes.min_short_side=4", "--set", "boxes.max_people=1000", "--set", "boxes.max_overlapping=1000",
            "--set", "blur.min_laplacian_var=0"]
    code = f"import sys; from osdhuman.cli import main; sys.exit(main({argv!r}))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    import pandas as pd

    m = pd.read_parquet(out / "manifest.parquet")
    assert len(m) > 0 and set(m["source_image"]) <= {"p0.png", "p1.png"}
    assert (m["person_x1"] <= 320).all() and (m["person_y1"] <= 240).all()
