"""Duplicate and leakage control (issue 11 item 1): hashes, multi-index near pairs, groups, splits."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osdhuman.config import apply_overrides
from osdhuman.curation import CurationConfig, build_dataset, dedup
from osdhuman.curation.scoring import _LaplacianFallback

FAST = ["crop.size=64", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=1",
        "exec.shard_size=2", "exec.workers=1", "iqa.metrics=[laplacian_var]", "exec.report_thumbs=4",
        "selection.keep_fraction=1.0", "split.val_fraction=0"]


def test_near_pairs_equal_brute_force_on_random_hashes_with_planted_neighbours():
    rng = np.random.default_rng(0)
    h = rng.integers(-2**63, 2**63 - 1, 3000, dtype=np.int64)
    for k, bits in enumerate([1, 2, 3, 4, 5, 6]):  # plant neighbours at every distance up to 6
        flip = rng.choice(64, bits, replace=False)
        h[100 + k] = h[k] ^ np.int64(sum(1 << int(b) for b in flip) - (1 << 64 if 63 in flip else 0))
    hu = h.astype(np.uint64)
    dist = np.bitwise_count(hu[:, None] ^ hu[None, :])
    for t in (0, 2, 4, 6):
        bi, bj = np.nonzero(np.triu(dist <= t, 1))
        want = sorted(zip(bi.tolist(), bj.tolist()))
        assert len(want) >= t  # the planted ones at least
        # every plan finds the same pairs: exact chunks (k = t + 1), probes at radius 1 and 2
        for chunks in (None, (max(1, t // 2 + 1), t // max(1, t // 2 + 1)), (2, t // 2)):
            assert sorted(map(tuple, dedup.near_pairs(h, t, chunks).tolist())) == want, (t, chunks)
    with pytest.raises(ValueError, match="radius"):
        dedup.near_pairs(h, 4, (2, 1))
    assert dedup.plan(8_000_000, 4) == (3, 1) and dedup.plan(20_000, 4) == (5, 0)


def test_groups_join_exact_near_and_mirrored_copies_only():
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 256, (240, 320), dtype=np.uint8), (0, 0), 4)
    other = cv2.GaussianBlur(rng.integers(0, 256, (240, 320), dtype=np.uint8), (0, 0), 4)
    smaller = cv2.resize(base, (256, 192), interpolation=cv2.INTER_AREA)
    _, jpg = cv2.imencode(".jpg", smaller, [cv2.IMWRITE_JPEG_QUALITY, 70])
    images = [base, cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE), base[:, ::-1].copy(), other, base.copy()]
    hashes = [dedup.perceptual_hashes(g) for g in images]
    content = [dedup.content_hash(g) for g in images]
    assert content[0] == content[4] and len(set(content[:4])) == 4
    ph = np.array([a for a, _ in hashes])
    mi = np.array([b for _, b in hashes])
    labels = dedup.duplicate_groups(ph, mi, content, 4)
    assert labels[0] == labels[1] == labels[2] == labels[4] != labels[3]
    no_mirror = dedup.duplicate_groups(ph, None, content, 4)
    assert no_mirror[0] == no_mirror[1] == no_mirror[4] and no_mirror[2] != no_mirror[0]
    exact = dedup.duplicate_groups(ph, mi, content, -1)  # content hashes only
    assert exact[0] == exact[4] and len(set(exact.tolist())) == 4
    ids = dedup.group_ids(labels, ["a", "b", "c", "d", "e"])
    assert ids[3] is None and len({ids[0], ids[1], ids[2], ids[4]}) == 1


@pytest.fixture
def three_sources(tmp_path):
    """One photo reached through COCO (original), Open Images (smaller, re-encoded) and VOC
    (mirrored), plus distinct photos in each source."""
    rng = np.random.default_rng(7)

    def photo():
        return cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 2.5)

    shared = photo()
    dirs = {k: tmp_path / k for k in ("coco", "oi", "voc")}
    for d in dirs.values():
        d.mkdir()
    Image.fromarray(shared).save(dirs["coco"] / "shared.png")
    Image.fromarray(photo()).save(dirs["coco"] / "c2.png")
    Image.fromarray(cv2.resize(shared, (280, 210), interpolation=cv2.INTER_AREA)).save(dirs["oi"] / "oishared.jpg", quality=80)
    Image.fromarray(photo()).save(dirs["oi"] / "oi2.jpg", quality=95)
    Image.fromarray(shared[:, ::-1]).save(dirs["voc"] / "vshared.jpg", quality=90)
    Image.fromarray(photo()).save(dirs["voc"] / "v2.jpg", quality=95)
    box = [60, 40, 80, 150]  # x, y, w, h
    coco = {"images": [{"id": i, "file_name": n, "width": 320, "height": 240} for i, n in enumerate(["shared.png", "c2.png"])],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": box} for i in range(2)],
            "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    (tmp_path / "classes.csv").write_text("/m/01g317,Person\n")
    (tmp_path / "boxes.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        + "".join(f"{k},xclick,/m/01g317,1,0.2,0.45,0.15,0.8,0,0,0,0,0\n" for k in ("oishared", "oi2")))
    ann = tmp_path / "Annotations"
    ann.mkdir()
    for name in ("vshared.jpg", "v2.jpg"):
        (ann / f"{name[:-4]}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>320</width><height>240</height></size><object>"
            "<name>person</name><bndbox><xmin>170</xmin><ymin>40</ymin><xmax>250</xmax><ymax>190</ymax></bndbox>"
            "</object></annotation>")
    return [f"coco:{tmp_path / 'coco.json'}:{dirs['coco']}",
            f"oi=openimages:{tmp_path / 'boxes.csv'}:{tmp_path / 'classes.csv'}:{dirs['oi']}",
            f"voc:{ann}:{dirs['voc']}"]


def _build(sources, out, *extra):
    cfg = apply_overrides(CurationConfig(sources=sources), FAST + ["split.source_splits.voc=test", *extra])
    build_dataset(cfg, out, progress=False, metrics=[_LaplacianFallback()])
    return pd.read_parquet(out / "manifest.parquet").set_index("source_image")


def test_one_photo_through_three_sources_ends_in_one_split_and_is_kept_once(three_sources, tmp_path):
    m = _build(three_sources, tmp_path / "out")
    group = m.loc[["shared.png", "oishared", "vshared.jpg"], "dup_group"]
    assert group.notna().all() and group.nunique() == 1
    assert m.loc[["c2.png", "oi2", "v2.jpg"], "dup_group"].isna().all()
    # the group holds a VOC (test) image: the VOC copy is kept in test, the others are dropped
    assert m.loc["vshared.jpg", "split"] == "test" and m.loc["vshared.jpg", "selected"]
    assert m.loc[["shared.png", "oishared"], "reject_reason"].tolist() == ["duplicate_image"] * 2
    assert not m.loc[["shared.png", "oishared"], "selected"].any()
    assert set(m.loc[m["selected"] & (m["source"] != "voc"), "split"]) == {"train"}
    chosen = m[m["selected"]]
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out" / "images").rglob("*.png"))
    assert files == sorted(chosen["image_path"])  # one PNG per selected row
    from osdhuman.curation.report import duplicate_tables, funnel_table

    pairs, groups = duplicate_tables(m.reset_index())
    assert pairs.values.tolist() == [["coco", "oi", 1], ["coco", "voc", 1], ["oi", "voc", 1]]
    assert groups[["images", "split", "selected crops", "dropped as duplicate"]].values.tolist() == [[3, "test", 1, 2]]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "1 groups of source images" in page and page.count('src="report/thumbs/dup_') == 3
    rej = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    funnel = funnel_table(m.reset_index(), rej, {"coco": (2, 2), "oi": (2, 2), "voc": (2, 2)}).set_index("source")
    assert funnel.loc["coco", ["images", "candidate crops", "selected", "selected train"]].tolist() == [2, 2, 1, 1]
    assert funnel.loc["voc", ["selected", "selected test"]].tolist() == [2, 2]
    assert "Funnel per source" in page and "merge_iou" in page
    # keep_duplicates: every copy keeps its crops, all in the one split of the group
    kept = _build(three_sources, tmp_path / "keep", "dedup.keep_duplicates=true")
    assert kept.loc[["shared.png", "oishared", "vshared.jpg"], "split"].tolist() == ["test"] * 3
    # dedup off: the leak the issue describes (the same photo in train and test)
    off = _build(three_sources, tmp_path / "off", "dedup.enabled=false")
    assert off.loc["shared.png", "split"] == "train" and off.loc["vshared.jpg", "split"] == "test"


def test_duplicate_coco_keys_give_one_png_per_selected_row(tmp_path):
    rng = np.random.default_rng(2)
    d = tmp_path / "img"
    d.mkdir()
    for n in ("a.png", "b.png", "c.png"):
        Image.fromarray(cv2.GaussianBlur(rng.integers(0, 256, (200, 240, 3), dtype=np.uint8), (0, 0), 1)).save(d / n)
    images = [{"id": 1, "file_name": "a.png", "width": 240, "height": 200}, {"id": 1, "file_name": "b.png", "width": 240, "height": 200},
              {"id": 2, "file_name": "c.png", "width": 240, "height": 200}, {"id": 3, "file_name": "c.png", "width": 240, "height": 200}]
    anns = [{"id": k, "image_id": i, "category_id": 1, "bbox": [20 + 90 * (k % 2), 20, 60, 150]} for k, i in enumerate([1, 1, 2, 3])]
    (tmp_path / "a.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    cfg = apply_overrides(CurationConfig(sources=[f"coco:{tmp_path / 'a.json'}:{d}"]), FAST)
    res = build_dataset(cfg, tmp_path / "out", progress=False, metrics=[_LaplacianFallback()])
    rej = pd.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert res.n_candidates == 0 and (rej["reason"] == "duplicate_image_id").sum() == 4
