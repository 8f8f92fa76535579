"""Key collisions and label semantics per source (issue 11 items 2 and 3), on faithful small files."""

from __future__ import annotations

import json

import pytest

from osdhuman.curation.config import LabelConfig
from osdhuman.curation.sources import parse_coco, parse_crowdhuman, parse_openimages, parse_specs, parse_voc


@pytest.fixture
def imgdir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    return d


def _reasons(ps) -> list[tuple[str | None, str]]:
    return sorted((r["source_image"], r["reason"]) for r in ps.rejects)


def test_coco_duplicate_image_id_and_file_name_reject_every_row_of_the_key(tmp_path, imgdir):
    images = [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
              {"id": 1, "file_name": "b.jpg", "width": 100, "height": 80},  # id 1 again
              {"id": 2, "file_name": "c.jpg", "width": 100, "height": 80},
              {"id": 3, "file_name": "c.jpg", "width": 100, "height": 80},  # file c.jpg under two ids
              {"id": 4, "file_name": "d.jpg", "width": 100, "height": 80}]
    anns = [{"id": k, "image_id": i, "category_id": 1, "bbox": [1, 2, 30, 40]} for k, i in enumerate([1, 1, 2, 3, 4])]
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    ps = parse_coco(parse_specs([f"coco:{p}:{imgdir}"])[0], LabelConfig())
    assert [i.key for i in ps.images] == ["d.jpg"]
    assert _reasons(ps) == [("a.jpg", "duplicate_image_id")] * 2 + [("c.jpg", "duplicate_image_id")] * 2
    assert all(r["box_x0"] == 1.0 for r in ps.rejects)  # each reject row keeps its box
    assert "listed 2 times" in ps.rejects[0]["detail"]


def test_objects365_isfake_and_isreflected_are_rejected_when_present(tmp_path, imgdir):
    images = [{"id": 1, "file_name": "o.jpg", "width": 100, "height": 80}]
    anns = [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 30, 40], "isfake": 0, "isreflected": 0},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [40, 2, 30, 40], "isfake": 1, "isreflected": 0},
            {"id": 3, "image_id": 1, "category_id": 5, "bbox": [60, 2, 30, 40], "isreflected": 1},
            {"id": 4, "image_id": 1, "category_id": 5, "bbox": [5, 5, 20, 20]}]  # no flag fields at all
    p = tmp_path / "o365.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 5, "name": "Person"}]}))
    spec = parse_specs([f"coco:{p}:{imgdir}"])[0]
    ps = parse_coco(spec, LabelConfig())
    assert ps.images[0].boxes == [[1.0, 2.0, 31.0, 42.0], [5.0, 5.0, 25.0, 25.0]]
    assert _reasons(ps) == [("o.jpg", "fake_box"), ("o.jpg", "reflected_box")]
    keep_all = parse_coco(spec, LabelConfig(coco_reject_flags=[]))
    assert len(keep_all.images[0].boxes) == 4 and not keep_all.rejects


OI_HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"


def test_openimages_flags_and_one_person_under_two_labels(tmp_path, imgdir):
    classes = tmp_path / "classes.csv"
    classes.write_text("/m/01g317,Person\n/m/04yx4,Man\n/m/03bt1vf,Woman\n/m/02p0tk3,Human body\n")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(OI_HEADER +
        "img1,xclick,/m/04yx4,1,0.10,0.50,0.20,0.90,1,0,0,0,0\n"    # line 2: Man ...
        "img1,xclick,/m/01g317,1,0.11,0.50,0.21,0.90,0,1,0,0,0\n"   # line 3: ... and Person: one person
        "img1,xclick,/m/01g317,1,0.12,0.52,0.20,0.88,0,0,0,0,0\n"   # line 4: another Person (same label: kept)
        "img1,xclick,/m/03bt1vf,1,0.60,0.90,0.10,0.80,0,0,0,0,1\n"  # line 5: Woman, IsInside: recorded
        "img2,xclick,/m/01g317,1,0.10,0.50,0.20,0.90,0,0,0,1,0\n"   # line 6: a statue (IsDepiction)
        "img2,xclick,/m/02p0tk3,1,0.00,1.00,0.00,1.00,0,0,1,0,0\n"  # line 7: a group
        "img2,xclick,/m/01g317,1,0.60,0.90,0.10,0.80,0,0,0,0,0\n")
    spec = parse_specs([f"openimages:{boxes}:{classes}:{imgdir}"])[0]
    ps = parse_openimages(spec, LabelConfig())
    by = {i.key: i for i in ps.images}
    # the Man box (line 2) merges into the Person box (line 3): Person comes first in openimages_names
    assert by["img1"].boxes == [[0.11, 0.21, 0.5, 0.9], [0.12, 0.2, 0.52, 0.88], [0.6, 0.1, 0.9, 0.8]]
    assert by["img1"].flags == ["IsTruncated", "", "IsInside"]
    assert by["img2"].boxes == [[0.6, 0.1, 0.9, 0.8]]
    assert _reasons(ps) == [("img1", "merged_label"), ("img2", "crowd_box"), ("img2", "depiction_box")]
    merged = next(r for r in ps.rejects if r["reason"] == "merged_label")
    assert "line 2: same person as line 3" in merged["detail"]
    # every flag is a config value: nothing rejected, nothing merged
    loose = parse_openimages(spec, LabelConfig(openimages_reject_flags=[], merge_iou=1.0))
    assert sum(len(i.boxes) for i in loose.images) == 7 and not loose.rejects
    assert {i.key: i.flags for i in loose.images}["img2"] == ["IsDepiction", "IsGroupOf", ""]


def test_crowdhuman_mask_boxes_and_duplicate_ids_are_reject_rows(tmp_path, imgdir):
    lines = [
        {"ID": "a", "gtboxes": [{"tag": "person", "fbox": [1, 2, 30, 60], "extra": {}},
                                {"tag": "mask", "fbox": [40, 2, 30, 60], "extra": {"ignore": 1}}]},
        {"ID": "b", "gtboxes": [{"tag": "person", "fbox": [1, 2, 30, 60], "extra": {}}]},
        {"ID": "b", "gtboxes": [{"tag": "person", "fbox": [5, 5, 30, 60], "extra": {}},
                                {"tag": "person", "fbox": [50, 5, 30, 60], "extra": {}}]},
    ]
    p = tmp_path / "ch.odgt"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ps = parse_crowdhuman(parse_specs([f"crowdhuman:{p}:{imgdir}"])[0], LabelConfig())
    assert [i.key for i in ps.images] == ["a"] and ps.images[0].boxes == [[1.0, 2.0, 31.0, 62.0]]
    assert _reasons(ps) == [("a", "mask_box")] + [("b", "duplicate_image_id")] * 3


def test_voc_two_xml_files_naming_one_image_are_rejected(tmp_path, imgdir):
    ann = tmp_path / "Annotations"
    ann.mkdir()
    xml = ("<annotation><filename>{}</filename><size><width>100</width><height>80</height></size>"
           "<object><name>person</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax><ymax>70</ymax></bndbox>"
           "</object></annotation>")
    (ann / "x1.xml").write_text(xml.format("same.jpg"))
    (ann / "x2.xml").write_text(xml.format("same.jpg"))
    (ann / "y.xml").write_text(xml.format("y.jpg"))
    ps = parse_voc(parse_specs([f"voc:{ann}:{imgdir}"])[0], LabelConfig())
    assert [i.key for i in ps.images] == ["y.jpg"]
    assert _reasons(ps) == [("same.jpg", "duplicate_image_id")] * 2
