"""--source specs and the annotation parsers, on small crafted files (malformed rows included)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from osdhuman.curation.config import LabelConfig
from osdhuman.curation.sources import (
    SourceError,
    parse_coco,
    parse_crowdhuman,
    parse_folder,
    parse_openimages,
    parse_specs,
)


@pytest.fixture
def imgdir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    return d


def test_parse_specs_names_and_errors(tmp_path, imgdir):
    ann = tmp_path / "a.json"
    ann.write_text("{}")
    specs = parse_specs([f"coco:{ann}:{imgdir}", f"coco:{ann}:{imgdir}", f"voc=coco:{ann}:{imgdir}", f"folder:{imgdir}"])
    assert [s.name for s in specs] == ["coco", "coco2", "voc", "folder"]
    assert specs[0].args == [str(ann.resolve()), str(imgdir.resolve())]
    bad = [
        ([], "no --source"),
        ([f"yolo:{ann}:{imgdir}"], "unknown kind"),
        ([f"coco:{ann}"], "expected coco:ANNOTATIONS.json:IMAGE_DIR"),
        ([f"openimages:{ann}:{imgdir}"], "expected openimages:"),
        ([f"coco:{tmp_path / 'missing.json'}:{imgdir}"], "does not exist"),
        ([f"coco:{ann}:{tmp_path / 'nodir'}"], "image directory"),
        ([f"bad name=folder:{imgdir}"], "must be letters"),
        ([f"x=folder:{imgdir}", f"x=folder:{imgdir}"], "used twice"),
    ]
    for argv, msg in bad:
        with pytest.raises(SourceError, match=msg):
            parse_specs(argv)


def _coco(tmp_path, imgdir, data, name="ann.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return parse_specs([f"coco:{p}:{imgdir}"])[0]


def test_coco_parser_person_boxes_and_malformed_rows(tmp_path, imgdir):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80},
                   {"id": 3, "file_name": "nobody.jpg", "width": 100, "height": 80},
                   {"id": 4, "file_name": "broken.jpg"}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 60], "iscrowd": 1},
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]},
            {"image_id": 2, "category_id": 1, "bbox": [1, 2, "x", 4]},
            {"image_id": 2, "category_id": 1, "bbox": [1, 2, 0, 4]},
            {"image_id": 2, "category_id": 1},
            {"image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10]},
            {"image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"image_id": 3, "category_id": 2, "bbox": [1, 1, 2, 2]},
        ],
    }
    ps = parse_coco(_coco(tmp_path, imgdir, data), LabelConfig())
    assert [(i.key, i.boxes, i.size) for i in ps.images] == [
        ("a.jpg", [[10.0, 20.0, 40.0, 60.0]], (100, 80)), ("b.jpg", [[5.0, 5.0, 15.0, 15.0]], (100, 80))]
    assert ps.images[0].path == str((imgdir / "a.jpg").resolve())
    reasons = sorted(r["reason"] for r in ps.rejects)
    assert reasons == ["crowd_box"] + ["malformed_annotation"] * 5
    details = " ".join(r["detail"] for r in ps.rejects)
    assert "images[3]" in details and "unknown image_id 99" in details and "empty box" in details


def test_objects365_person_category_and_synonyms(tmp_path, imgdir):
    data = {"images": [{"id": 7, "file_name": "o.jpg", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "Person"}, {"id": 2, "name": "Sneakers"}],
            "annotations": [{"image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]}]}
    assert len(parse_coco(_coco(tmp_path, imgdir, data), LabelConfig()).images) == 1
    data["categories"][0]["name"] = "pedestrian"
    with pytest.raises(SourceError, match="no category named"):
        parse_coco(_coco(tmp_path, imgdir, data), LabelConfig())
    ps = parse_coco(_coco(tmp_path, imgdir, data), LabelConfig(coco_names=["person", "pedestrian"]))
    assert len(ps.images) == 1


def test_coco_unreadable_files_are_clear_errors(tmp_path, imgdir):
    with pytest.raises(SourceError, match="not a readable COCO json"):
        parse_coco(_coco(tmp_path, imgdir, "{not json"), LabelConfig())
    with pytest.raises(SourceError, match="not COCO format"):
        parse_coco(_coco(tmp_path, imgdir, {"images": []}), LabelConfig())


def test_openimages_parser(tmp_path, imgdir):
    classes = tmp_path / "classes.csv"
    classes.write_text("/m/01g317,Person\n/m/04yx4,Man\n/m/0dzct,Human face\n/m/02p0tk3,Human body\n/m/0k4j,Car\n")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        "aaa,xclick,/m/01g317,1,0.1,0.5,0.2,0.9,0,0,0,0,0\n"
        "aaa,xclick,/m/0dzct,1,0.1,0.2,0.1,0.2,0,0,0,0,0\n"      # face: not a person box
        "aaa,xclick,/m/04yx4,1,0.6,0.9,0.1,0.8,0,0,0,0,0\n"
        "bbb,xclick,/m/02p0tk3,1,0.0,1.0,0.0,1.0,0,0,1,0,0\n"    # group of people
        "ccc,xclick,/m/01g317,1,0.5,0.4,0.1,0.2,0,0,0,0,0\n"     # x0 > x1
        "ddd,xclick,/m/01g317,1,abc,0.4,0.1,0.2,0,0,0,0,0\n"     # not a number
        "eee,xclick,/m/01g317\n"                                  # short row
        "fff,xclick,/m/0k4j,1,0.1,0.5,0.2,0.9,0,0,0,0,0\n"
    )
    spec = parse_specs([f"openimages:{boxes}:{classes}:{imgdir}"])[0]
    ps = parse_openimages(spec, LabelConfig())
    assert [i.key for i in ps.images] == ["aaa"]
    assert ps.images[0].normalized and ps.images[0].boxes == [[0.1, 0.2, 0.5, 0.9], [0.6, 0.1, 0.9, 0.8]]
    assert ps.images[0].path.endswith("aaa.jpg")
    assert sorted(r["reason"] for r in ps.rejects) == ["crowd_box"] + ["malformed_annotation"] * 3
    assert any("line 8" in r["detail"] for r in ps.rejects)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(SourceError, match="not an Open Images boxes csv"):
        parse_openimages(parse_specs([f"openimages:{bad}:{classes}:{imgdir}"])[0], LabelConfig())


def test_crowdhuman_parser_fbox_ignore_and_malformed_lines(tmp_path, imgdir):
    lines = [
        {"ID": "284193,faa9000f2678b5e", "gtboxes": [
            {"tag": "person", "fbox": [10, 20, 30, 60], "vbox": [12, 22, 20, 40], "extra": {"ignore": 0}},
            {"tag": "person", "fbox": [50, 20, 30, 60], "extra": {"ignore": 1}},
            {"tag": "mask", "fbox": [0, 0, 100, 100], "extra": {"ignore": 1}},
            {"tag": "person", "fbox": [1, 2], "extra": {}},
        ]},
        "{this is not json",
        {"ID": "only-ignored", "gtboxes": [{"tag": "person", "fbox": [1, 1, 5, 5], "extra": {"ignore": 1}}]},
        {"gtboxes": []},
    ]
    p = tmp_path / "train.odgt"
    p.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    ps = parse_crowdhuman(parse_specs([f"crowdhuman:{p}:{imgdir}"])[0], LabelConfig())
    assert [(i.key, i.boxes) for i in ps.images] == [("284193,faa9000f2678b5e", [[10.0, 20.0, 40.0, 80.0]])]
    assert ps.images[0].path.endswith("284193,faa9000f2678b5e.jpg")
    reasons = sorted(r["reason"] for r in ps.rejects)
    assert reasons == ["ignore_flagged", "ignore_flagged", "malformed_annotation", "malformed_annotation",
                       "malformed_annotation", "mask_box"]
    vbox = parse_crowdhuman(parse_specs([f"crowdhuman:{p}:{imgdir}"])[0], LabelConfig(crowdhuman_box="vbox"))
    assert vbox.images[0].boxes == [[12.0, 22.0, 32.0, 62.0]]
    junk = tmp_path / "junk.odgt"
    junk.write_text("nope\nnope\n")
    with pytest.raises(SourceError, match="no valid CrowdHuman"):
        parse_crowdhuman(parse_specs([f"crowdhuman:{junk}:{imgdir}"])[0], LabelConfig())


def test_folder_lists_images_recursively_sorted(tmp_path, imgdir):
    (imgdir / "sub").mkdir()
    for name in ["b.jpg", "a.png", "sub/c.webp"]:
        Image.new("RGB", (4, 4)).save(imgdir / name)
    (imgdir / "notes.txt").write_text("x")
    ps = parse_folder(parse_specs([f"folder:{imgdir}"])[0])
    assert [i.key for i in ps.images] == ["a.png", "b.jpg", "sub/c.webp"]
    assert all(i.boxes is None for i in ps.images)


def test_voc_parser(tmp_path, imgdir):
    from osdhuman.curation.sources import parse_voc

    ann = tmp_path / "Annotations"
    ann.mkdir()

    def obj(name, box, difficult=0):
        b = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        return f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{b}</bndbox></object>"

    (ann / "2008_000001.xml").write_text(
        "<annotation><filename>2008_000001.jpg</filename><size><width>500</width><height>375</height><depth>3</depth></size>"
        + obj("person", (11, 21, 110, 220)) + obj("dog", (1, 1, 50, 50)) + obj("person", (200, 10, 300, 300), difficult=1)
        + obj("person", (5, 5, "x", 9)) + "</annotation>")
    (ann / "2008_000002.xml").write_text("<annotation><filename>2008_000002.jpg</filename>")  # broken XML
    (ann / "2008_000003.xml").write_text(
        "<annotation><filename>2008_000003.jpg</filename>" + obj("cat", (1, 1, 5, 5)) + "</annotation>")
    ps = parse_voc(parse_specs([f"voc:{ann}:{imgdir}"])[0], LabelConfig())
    assert [(i.key, i.boxes, i.size) for i in ps.images] == [("2008_000001.jpg", [[10.0, 20.0, 110.0, 220.0]], (500, 375))]
    assert sorted(r["reason"] for r in ps.rejects) == ["difficult_box", "malformed_annotation", "malformed_annotation"]
    with pytest.raises(SourceError, match="annotation directory"):
        parse_specs([f"voc:{tmp_path / 'nope'}:{imgdir}"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no Pascal VOC"):
        parse_voc(parse_specs([f"voc:{empty}:{imgdir}"])[0], LabelConfig())
