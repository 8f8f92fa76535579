"""The paper's recipe as ``--preset persona`` (issue 11 item 4) and the bad-input cases around it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osdhuman.cli import main
from osdhuman.cli.build_dataset import preset_path
from osdhuman.config import load_config
from osdhuman.curation.config import CurationConfig

SMALL = ["crop.size=128", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=1",
         "exec.workers=1", "exec.report_thumbs=2"]


def _coco(root, name, n, seed):
    rng = np.random.default_rng(seed)
    d = root / name
    d.mkdir()
    images, anns = [], []
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8), (0, 0), 0.6 + 0.3 * i)
        Image.fromarray(img).save(d / f"{name}{i}.png")
        images.append({"id": i, "file_name": f"{name}{i}.png", "width": 260, "height": 200})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [40, 20, 110, 170]})
    ann = root / f"{name}.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return ann, d


@pytest.fixture
def persona_sources(tmp_path):
    coco, coco_dir = _coco(tmp_path, "coco", 6, 1)
    val, val_dir = _coco(tmp_path, "val", 3, 2)
    voc_img = tmp_path / "voc"
    voc_img.mkdir()
    ann = tmp_path / "Annotations"
    ann.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(cv2.GaussianBlur(rng.integers(0, 256, (200, 260, 3), dtype=np.uint8), (0, 0), 1.5)).save(
            voc_img / f"v{i}.jpg", quality=40)
        (ann / f"v{i}.xml").write_text(
            f"<annotation><filename>v{i}.jpg</filename><size><width>260</width><height>200</height></size><object>"
            "<name>person</name><bndbox><xmin>50</xmin><ymin>20</ymin><xmax>160</xmax><ymax>190</ymax></bndbox>"
            "</object></annotation>")
    return ["--source", f"coco=coco:{coco}:{coco_dir}", "--source", f"val=coco:{val}:{val_dir}",
            "--source", f"voc=voc:{ann}:{voc_img}"]


def test_the_preset_file_is_configs_persona_and_loads(tmp_path):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    assert preset_path("persona").read_text() == (repo / "configs" / "persona.yaml").read_text()
    cfg = load_config(CurationConfig, str(preset_path("persona")))
    assert cfg.iqa.metrics == ["clipiqa", "maniqa", "musiq", "niqe"]
    assert cfg.selection.sources["val"].max_count == 4216 and cfg.selection.sources["voc"].max_count == 3000
    assert cfg.split.source_splits == {"val": "val", "voc": "test"} and cfg.selection.stats_exclude == ["voc"]


def test_bad_preset_and_missing_weights_stop_before_work(persona_sources, tmp_path, monkeypatch, capsys):
    assert main(["build-dataset", "--preset", "imagenet", "--out", str(tmp_path / "o"), *persona_sources]) == 2
    assert "unknown preset; available: persona" in capsys.readouterr().err
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))  # pyiqa's weight files are not there
    out = tmp_path / "out"
    assert main(["build-dataset", "--preset", "persona", "--out", str(out), "--no-progress", *persona_sources]) == 2
    err = capsys.readouterr().err
    assert "clipiqa" in err and "--allow-offline-metrics" in err and not (out / "manifest.parquet").exists()


def test_preset_persona_builds_three_splits_with_offline_fallback(persona_sources, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    out = tmp_path / "out"
    argv = ["build-dataset", "--preset", "persona", "--allow-offline-metrics", "--out", str(out), "--no-progress",
            *persona_sources, "--set", "selection.sources.voc.max_count=2", "--set", "selection.keep_fraction=1.0",
            "--set", "selection.sources.val.keep_fraction=1.0", "--set", "iqa.thresholds={}",
            "--set", "selection.sources.val.thresholds={}"]
    for s in SMALL:
        argv += ["--set", s]
    with pytest.warns(UserWarning, match="OFFLINE"):
        assert main(argv) == 0
    m = pd.read_parquet(out / "manifest.parquet")
    chosen = m[m["selected"]]
    assert chosen.groupby("source")["split"].agg(set).to_dict() == {"coco": {"train"}, "val": {"val"}, "voc": {"test"}}
    assert (chosen["source"] == "voc").sum() == 2  # capped, seeded sample
    assert sorted(m.loc[m["source"] == "voc", "reject_reason"].fillna("-")) == ["-", "-", "not_sampled"]
    assert {c for c in m.columns if c.startswith("iqa_")} == {"iqa_niqe", "iqa_brisque", "iqa_piqe"}
    page = (out / "report.html").read_text()
    assert "Preset:</b> persona" in page and "not the paper&#x27;s metrics" in page
    # VOC is out of the statistics: the other crops' scores have mean 0 over coco + val
    pool = m[m["score"].notna()]
    assert abs(pool.loc[pool["source"] != "voc", "score"].mean()) < 1e-9
    assert abs(pool["score"].mean()) > 1e-6


def test_an_image_folder_laid_out_differently_is_a_clear_error(tmp_path, capsys):
    ann, d = _coco(tmp_path, "o365", 3, 4)
    data = json.loads(ann.read_text())
    for im in data["images"]:  # Objects365 names files under images/v1/patch0/
        im["file_name"] = "images/v1/patch0/" + im["file_name"]
    ann.write_text(json.dumps(data))
    rc = main(["build-dataset", "--source", f"o365=coco:{ann}:{d}", "--out", str(tmp_path / "out"), "--no-progress",
               "--set", "iqa.metrics=[laplacian_var]"])
    err = capsys.readouterr().err
    assert rc == 2 and "none of 3 sampled images it names exists" in err
    assert "images/v1/patch0/o3650.png" in err and "o3650.png" in err.split("holds")[1]
    assert not (tmp_path / "out" / "manifest.parquet").exists()
