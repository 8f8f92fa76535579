"""`osdhuman restore --people / --boxes / --upscale` end to end on the tiny preset."""

import json

import numpy as np
import pytest
from PIL import Image

from osdhuman.cli import main

FAST = ["--base-model", "tiny", "--tile", "64", "--tile-overlap", "16", "--set", "person.crop_size=64", "--ext", "png"]


@pytest.fixture()
def photos(tmp_path, monkeypatch):
    from skimage import data

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(data.astronaut()[::4, ::4][:100, :120]).save(d / "two.png")  # 120 x 100
    Image.fromarray(np.full((80, 96, 3), 128, np.uint8)).save(d / "flat.png")
    return d


def _coco(path, entries):
    images = [{"id": i + 1, "file_name": n, "width": 0, "height": 0} for i, (n, _) in enumerate(entries)]
    anns = [{"id": k, "image_id": i + 1, "category_id": 1, "bbox": b}
            for i, (_, bs) in enumerate(entries) for k, b in enumerate(bs)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return path


def test_boxes_file_restores_people_with_report_and_contact_sheet(photos, tmp_path, capsys):
    boxes = _coco(tmp_path / "b.json", [("two.png", [[10, 5, 40, 85], [40, 10, 30, 70]])])  # x, y, w, h
    out = tmp_path / "out"
    rc = main(["restore", str(photos / "two.png"), "-o", str(out), "--boxes", str(boxes), "--save-crops",
               "--min-person-side", "20", "--context-margin", "1.1", "--no-progress", *FAST])
    assert rc == 0, capsys.readouterr().err
    assert np.asarray(Image.open(out / "two.png")).shape == (100, 120, 3)
    rep = json.loads((out / "restore_report.json").read_text())
    (rec,) = rep["people"]
    assert rec["boxes_from"] == "box_file" and len(rec["people"]) == 2
    assert rec["people"][0]["rank"] == 0 and rec["people"][0]["crop_side"] == round(70 * 1.1)
    assert set(rec["seconds"]) == {"detect", "crops", "people", "background", "blend"}
    sheet = np.asarray(Image.open(out / "crops" / "two_people.png"))
    assert sheet.shape[0] >= 2 * 256 and sheet.shape[1] > 2 * 256
    # work units: 2 person crops (one tile each) + the whole photo (2 x 3 latent tiles of 64 px at 120x100)
    assert rep["work_units"] == 2 + 6
    err = capsys.readouterr().err
    assert "%|" not in err and "tile/s" not in err  # --no-progress: clean log


def test_box_file_naming_an_unknown_image_is_a_usage_error(photos, tmp_path, capsys):
    boxes = _coco(tmp_path / "b.json", [("nobody.jpg", [[0, 0, 10, 10]])])
    out = tmp_path / "out"
    assert main(["restore", str(photos), "-o", str(out), "--boxes", str(boxes), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nobody.jpg" in err[0] and "not among the inputs" in err[0]
    assert not out.exists()


def test_box_outside_image_skips_that_photo_only(photos, tmp_path, capsys):
    boxes = _coco(tmp_path / "b.json", [("two.png", [[100, 10, 60, 60]]), ("flat.png", [[10, 10, 20, 30]])])
    out = tmp_path / "out"
    rc = main(["restore", str(photos), "-o", str(out), "--boxes", str(boxes), "--no-progress", *FAST])
    assert rc == 0
    assert not (out / "two.png").exists() and (out / "flat.png").exists()
    err = capsys.readouterr().err
    assert "two.png" in err and "outside the 120x100 image" in err
    rep = json.loads((out / "restore_report.json").read_text())
    assert rep["failed"][0]["reason"].startswith("box_outside_image")


def test_no_person_found_falls_back_to_whole_image_and_upscale_guards(photos, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["restore", str(photos / "flat.png"), "-o", str(out), "--people", "--upscale", "1.5", "--no-progress", *FAST])
    assert rc == 0
    assert "flat.png: no person found; restored as a whole image" in capsys.readouterr().err
    assert np.asarray(Image.open(out / "flat.png")).shape == (120, 144, 3)  # 1.5 x (80 x 96)
    rep = json.loads((out / "restore_report.json").read_text())
    assert rep["people"][0]["whole_image_fallback"] is True and rep["people"][0]["upscale"] == 1.5
    out2 = tmp_path / "out2"
    assert main(["restore", str(photos / "flat.png"), "-o", str(out2), "--upscale", "2", "--max-side", "150", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "192x160" in err[0] and "--max-side 150" in err[0]
    assert not out2.exists()
    assert main(["restore", str(photos / "flat.png"), "-o", str(out2), "--upscale", "5", *FAST]) == 2
    assert main(["restore", str(photos / "flat.png"), "-o", str(out2), "--people", "--context-margin", "0.5", *FAST]) == 2
    assert "context_margin" in capsys.readouterr().err and not out2.exists()


class IdentityPipeline:
    """Test double: a 'restorer' that returns its inputs unchanged (records the batches)."""

    untrained = False

    def __init__(self):
        from osdhuman.pipelines import PipelineConfig

        self.config = PipelineConfig(tile_size=64, tile_overlap=16)
        self.batches = []

    def __call__(self, arrays, batch_size=1, output_type="np", **kw):
        from types import SimpleNamespace

        self.batches.append([a.shape for a in arrays])
        return SimpleNamespace(images=[np.array(a, copy=True) for a in arrays])


def test_restore_paths_people_with_identity_restorer_writes_the_input_bit_for_bit(photos, tmp_path):
    from osdhuman.pipelines.restore import RestoreConfig, restore_paths

    cfg = RestoreConfig(people=True, batch_size=4, ext="png", tile_size=64, tile_overlap=16)
    cfg.person.min_person_side = 20
    boxes = {photos / "two.png": np.array([[10, 5, 50, 90], [40, 10, 70, 80], [80, 20, 119, 99]], float)}
    pipe = IdentityPipeline()
    report = restore_paths([photos / "two.png"], tmp_path / "o", cfg, pipeline=pipe, progress=False,
                           log=lambda m: None, boxes=boxes)
    assert len(report.restored) == 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "two.png")), np.asarray(Image.open(photos / "two.png")))
    assert pipe.batches == [[(512, 512, 3)] * 3, [(100, 120, 3)]]  # people batched, then the whole photo
