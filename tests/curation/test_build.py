"""`osdhuman build-dataset` end to end: outputs, bad input, resume after a kill, workers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from osdhuman.cli import main
from osdhuman.config import load_config
from osdhuman.curation import images, runner
from osdhuman.curation import select as sel
from osdhuman.curation.config import CurationConfig

FAST = [
    "crop.size=64", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=50",
    "exec.shard_size=3", "iqa.metrics=[laplacian_var]", "split.val_fraction=0.25", "exec.report_thumbs=4",
]


def _argv(crafted, out, *extra):
    argv = ["build-dataset", "--source", crafted["source"], "--out", str(out), "--no-progress", "--workers", "1"]
    for s in FAST:
        argv += ["--set", s]
    return argv + list(extra)


def _tree(out: Path) -> dict:
    """Relative path -> sha256 of every result file (manifest, rejects, images)."""
    files = [out / "manifest.parquet", out / "rejects.parquet", *sorted((out / "images").rglob("*.png"))]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def built(crafted, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "out"
    rc = main(_argv(crafted, out))
    assert rc == 0
    return out


def test_outputs_and_manifest(built, crafted):
    m = pd.read_parquet(built / "manifest.parquet")
    for col in ["crop_id", "source", "source_image", "person_x0", "person_y1", "crop_x0", "crop_y0", "crop_size",
                "laplacian_var", "iqa_laplacian_var", "score", "selected", "split", "reject_reason", "image_path"]:
        assert col in m.columns
    assert m["crop_id"].is_unique
    pool = m[m["score"].notna()]
    assert m["selected"].sum() == sel.keep_count(len(pool), 1 / 3)
    assert set(m.loc[m["reject_reason"].notna(), "reject_reason"]) <= {"nms_suppressed", "not_top_fraction"}
    # the selected ones are the best scores of the pool
    assert m.loc[m["selected"], "score"].min() >= m.loc[~m["selected"] & m["score"].notna(), "score"].max()
    # sharper sources rank higher: goodN is blurred with sigma 0.3 + 0.25 N
    best = [pool.loc[pool["source_image"] == f"good{i}.jpg", "score"].max() for i in range(5)]
    assert best == sorted(best, reverse=True) and np.isfinite(best).all()
    chosen = m[m["selected"]]
    assert set(chosen["split"]) <= {"train", "val"} and m.loc[~m["selected"], "split"].isna().all()
    assert chosen.groupby("source_image")["split"].nunique().max() == 1
    for r in chosen.itertuples():
        assert r.image_path == f"images/{r.split}/{r.crop_id}.png"
        with Image.open(built / r.image_path) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert sorted(p.relative_to(built).as_posix() for p in (built / "images").rglob("*.png")) == sorted(chosen["image_path"])
    cfg = load_config(CurationConfig, built / "config.yaml")
    assert cfg.crop.size == 64 and cfg.sources == [crafted["source"]]
    html = (built / "report.html").read_text()
    assert "laplacian_var" in html and "Backend" in html and "selected" in html
    # blurry.jpg: rejected before cropping, shown with the threshold used
    assert "blur.min_laplacian_var = 50" in html and 'src="report/thumbs/blur_0.jpg"' in html
    assert (built / "report" / "thumbs" / "blur_0.jpg").is_file()
    hists = sorted(p.name for p in (built / "report").glob("hist_*"))
    assert hists == ["hist_laplacian_var.svg", "hist_score.svg"]
    assert all(f'src="report/{h}"' in html for h in hists)


def test_selected_png_is_the_resized_square_crop(built):
    import cv2

    m = pd.read_parquet(built / "manifest.parquet")
    r = m[m["selected"]].iloc[0]
    src = np.asarray(Image.open(r["source_path"]).convert("RGB"))
    x0, y0, s = int(r.crop_x0), int(r.crop_y0), int(r.crop_size)
    assert s == round(max(r.person_x1 - r.person_x0, r.person_y1 - r.person_y0))
    expected = cv2.resize(src[y0:y0 + s, x0:x0 + s], (64, 64), interpolation=cv2.INTER_AREA if s > 64 else cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(np.asarray(Image.open(built / r["image_path"])), expected)


def test_bad_files_land_in_rejects_with_specific_reasons(built):
    rej = pd.read_parquet(built / "rejects.parquet")
    by_image = {r.source_image: r.reason for r in rej.itertuples() if r.stage != "annotations" or r.reason != "malformed_annotation"}
    assert by_image["zero.jpg"] == "empty_file"
    assert by_image["text.jpg"] == "not_an_image"
    assert by_image["trunc.jpg"] == "truncated_image"
    assert by_image["one.png"] == "too_small"
    assert by_image["bomb.png"] == "decompression_bomb"
    assert by_image["missing.jpg"] == "missing_file"
    assert by_image["blurry.jpg"] == "blurry"
    assert by_image["wrongsize.jpg"] == "annotation_size_mismatch"
    malformed = rej[rej["reason"] == "malformed_annotation"]
    assert len(malformed) == 2 and malformed["detail"].str.contains("unknown image_id 4242").any()
    assert rej["path"].dropna().str.len().gt(0).all()


def test_unusual_valid_images_are_read_and_judged_on_merit(built):
    m = pd.read_parquet(built / "manifest.parquet")
    rej = pd.read_parquet(built / "rejects.parquet")
    for name in ["gray.png", "palette.png", "cmyk.jpg", "g16.png", "alpha.png", "photo.webp", "rotated.jpg"]:
        assert (m["source_image"] == name).any(), name
        assert not ((rej["source_image"] == name) & (rej["stage"] == "read")).any()
    # EXIF orientation 6 turned the stored 200x160 into 160x200 and the box rotated with it:
    # stored box x 20..70, y 30..130 -> displayed x 160-130..160-30 = 30..130, y 20..70
    r = m[m["source_image"] == "rotated.jpg"].iloc[0]
    assert (r.image_w, r.image_h) == (160, 200)
    assert [r.person_x0, r.person_y0, r.person_x1, r.person_y1] == [30, 20, 130, 70]


def test_bad_source_and_unreadable_annotations_fail_before_work(crafted, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["build-dataset", "--source", "coco:only-one-arg", "--out", str(out)]) == 2
    assert "expected coco:ANNOTATIONS.json:IMAGE_DIR" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    assert main(["build-dataset", "--source", f"coco:{bad}:{crafted['images']}", "--out", str(out)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if ".parse-" in p.name]  # no scratch records left behind
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("user data")
    assert main(_argv(crafted, foreign)) == 2
    assert "not a build-dataset output" in capsys.readouterr().err
    assert (foreign / "mine.txt").read_text() == "user data" and len(list(foreign.iterdir())) == 1


def test_resume_after_kill_is_identical_and_skips_finished_shards(crafted, built, tmp_path, monkeypatch, capsys):
    out = tmp_path / "resumed"
    calls = {"n": 0}
    real_call = runner.ShardWorker.__call__

    def dying(self, items):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_call(self, items)

    monkeypatch.setattr(runner.ShardWorker, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(crafted, out))
    done = list((out / ".work" / "shards").glob("*.cand.parquet"))
    assert len(done) == 2 and not (out / "manifest.parquet").exists()
    n_shards = _n_shards(built)
    assert n_shards > 3

    # killed again while writing the PNGs
    monkeypatch.setattr(runner.ShardWorker, "__call__", real_call)
    real_write = images.write_crop_group
    writes = {"n": 0}

    def dying_write(payload):
        writes["n"] += 1
        if writes["n"] == 2:
            raise KeyboardInterrupt("killed while writing")
        return real_write(payload)

    counted = {"n": 0}

    def counting(self, items):
        counted["n"] += 1
        return real_call(self, items)

    monkeypatch.setattr(runner.ShardWorker, "__call__", counting)
    monkeypatch.setattr(images, "write_crop_group", dying_write)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(crafted, out))
    assert counted["n"] == n_shards - 2  # finished shards were not redone
    monkeypatch.setattr(images, "write_crop_group", real_write)
    counted["n"] = 0
    assert main(_argv(crafted, out)) == 0
    assert counted["n"] == 0
    assert _tree(out) == _tree(built)


def _n_shards(out: Path) -> int:
    """Shards of a finished build: packed (listed in packs.json) plus any still loose."""
    import json

    root = out / ".work" / "shards"
    packed = json.loads((root / "packs.json").read_text()) if (root / "packs.json").exists() else {}
    return sum(len(v) for v in packed.values()) + len(list(root.glob("*.cand.parquet")))


def test_finished_shards_are_consolidated_and_a_kill_while_packing_resumes_exactly(crafted, built, tmp_path, monkeypatch):
    import json

    root = built / ".work" / "shards"
    packs = json.loads((root / "packs.json").read_text())
    assert len(packs) == 1 and not list(root.glob("*.cand.parquet"))  # 23 images < pack_images: one pack
    assert len(list((root / "packs").glob("*.parquet"))) == 2
    # several packs (pack_images=4: ~2 shards each); killed after a pack's files, before its index
    out = tmp_path / "packs"
    from osdhuman.curation import store

    real = store.atomic_write_bytes
    seen = {"n": 0}

    def dying(path, data):
        if path.name == "packs.json":
            seen["n"] += 1
            if seen["n"] == 2:
                raise KeyboardInterrupt("killed while packing")
        return real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", dying)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(crafted, out, "--set", "exec.pack_images=4"))
    monkeypatch.setattr(store, "atomic_write_bytes", real)
    assert main(_argv(crafted, out, "--set", "exec.pack_images=4")) == 0
    idx = json.loads((out / ".work" / "shards" / "packs.json").read_text())
    assert len(idx) > 2 and sum(len(v) for v in idx.values()) == _n_shards(built)
    assert not list((out / ".work" / "shards").glob("*.cand.parquet"))
    assert _tree(out) == _tree(built)  # packing changes where results live, never the results
    # a rerun that finds everything done computes no shard
    calls = {"n": 0}
    real_call = runner.ShardWorker.__call__
    monkeypatch.setattr(runner.ShardWorker, "__call__", lambda self, items: calls.update(n=calls["n"] + 1) or real_call(self, items))
    assert main(_argv(crafted, out, "--set", "exec.pack_images=4")) == 0
    assert calls["n"] == 0 and _tree(out) == _tree(built)


def test_two_worker_processes_give_the_same_result(crafted, built, tmp_path):
    out = tmp_path / "two"
    argv = _argv(crafted, out)
    argv[argv.index("--workers") + 1] = "2"
    assert main(argv) == 0
    assert _tree(out) == _tree(built)


def test_real_sigkill_mid_run_then_resume(tmp_path):
    """A subprocess killed with SIGKILL while working; the rerun equals an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = pytest.importorskip("skimage.data")
    folder = tmp_path / "photos"
    folder.mkdir()
    astronaut = data.astronaut()  # a portrait the OpenCV face cascade finds
    for i in range(10):
        img = np.roll(astronaut, 4 * i, axis=1)
        img = img[:, ::-1] if i % 2 else img
        Image.fromarray(np.ascontiguousarray(img)).save(folder / f"p{i:02d}.jpg", quality=70 + i)
    sets = FAST + ["exec.shard_size=1", "detector.hog=false", "boxes.min_long_side=200"]

    def argv(out):
        a = ["build-dataset", "--source", f"folder:{folder}", "--out", str(out), "--no-progress", "--workers", "1"]
        for s in sets:
            a += ["--set", s]
        return a

    killed = tmp_path / "killed"
    code = f"import sys; from osdhuman.cli import main; sys.exit(main({argv(killed)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    shards = killed / ".work" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list(shards.glob("*.cand.parquet"))) >= 2:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.parquet").exists()
    n_before = _n_shards(killed)
    assert 2 <= n_before < 10
    assert main(argv(killed)) == 0
    fresh = tmp_path / "fresh"
    assert main(argv(fresh)) == 0
    assert _tree(killed) == _tree(fresh)
    assert len(pd.read_parquet(fresh / "manifest.parquet")) > 0


def test_openimages_and_crowdhuman_sources_with_a_pinned_split(tmp_path):
    import json

    from osdhuman.curation import CurationConfig, build_dataset
    from osdhuman.curation.scoring import _LaplacianFallback

    rng = np.random.default_rng(3)
    oi_dir, ch_dir = tmp_path / "oi", tmp_path / "ch"
    oi_dir.mkdir()
    ch_dir.mkdir()
    for d, names in ((oi_dir, ["img1", "img2"]), (ch_dir, ["273271,1a2b", "273272,3c4d"])):
        for n in names:
            Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(d / f"{n}.jpg", quality=95)
    (tmp_path / "classes.csv").write_text("/m/02p0tk3,Human body\n/m/0k4j,Car\n")
    (tmp_path / "boxes.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        "img1,xclick,/m/02p0tk3,1,0.1,0.35,0.125,0.75,0,0,0,0,0\n"
        "img2,xclick,/m/02p0tk3,1,0.5,0.8,0.0,0.6,0,0,0,0,0\n")
    odgt = [{"ID": "273271,1a2b", "gtboxes": [{"tag": "person", "fbox": [-10, 20, 50, 150], "extra": {}}]},
            {"ID": "273272,3c4d", "gtboxes": [{"tag": "person", "fbox": [100, 10, 40, 90], "extra": {}}]}]
    (tmp_path / "ch.odgt").write_text("\n".join(json.dumps(x) for x in odgt))
    cfg = CurationConfig(sources=[f"oi=openimages:{tmp_path / 'boxes.csv'}:{tmp_path / 'classes.csv'}:{oi_dir}",
                                  f"crowdhuman:{tmp_path / 'ch.odgt'}:{ch_dir}"])
    from osdhuman.config import apply_overrides

    cfg = apply_overrides(cfg, FAST + ["exec.workers=1", "selection.keep_fraction=1.0", "split.source_splits.oi=test",
                                       "split.val_fraction=0", "selection.sources.oi.max_count=1"])
    res = build_dataset(cfg, tmp_path / "out", progress=False, metrics=[_LaplacianFallback()])
    m = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("source_image")
    assert res.n_selected == 3 and m.loc[m["source"] == "crowdhuman", "selected"].all()
    assert sorted(m.loc[m["source"] == "oi", "reject_reason"].fillna("-")) == ["-", "not_sampled"]
    m = m[m["selected"]]
    assert (tmp_path / "out" / "config.yaml").read_text().count("max_count: 1") == 1
    # normalised Open Images box scaled to the 200x160 image
    full = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("source_image")
    assert full.loc["img1", ["person_x0", "person_y0", "person_x1", "person_y1"]].tolist() == [20, 20, 70, 120]
    # CrowdHuman full-body box partly outside the image is clipped to it
    assert m.loc["273271,1a2b", ["person_x0", "person_y0", "person_x1", "person_y1"]].tolist() == [0, 20, 40, 160]
    assert (m.loc[m["source"] == "oi", "split"] == "test").all()
    assert (m.loc[m["source"] == "crowdhuman", "split"] == "train").all()
    assert m.loc["273271,1a2b", "crop_id"] == "crowdhuman_273271-1a2b-" + m.loc["273271,1a2b", "crop_id"].split("-")[-1]
    for p in m["image_path"]:
        assert (tmp_path / "out" / p).is_file()


def test_images_whose_boxes_are_all_too_small_are_not_decoded(tmp_path, monkeypatch):
    from osdhuman.curation import shard
    from osdhuman.curation.config import CurationConfig
    from osdhuman.curation.sources import SourceImage

    reads = []
    monkeypatch.setattr(shard, "read_rgb_info", lambda p, *a, **k: reads.append(p) or (_ for _ in ()).throw(AssertionError))
    cfg = CurationConfig()
    item = SourceImage("coco", "x.jpg", str(tmp_path / "x.jpg"), [[0, 0, 30, 60], [5, 5, 300, 40]], (640, 480))
    out = shard.prepare_image(item, cfg)
    assert reads == [] and not out.rows
    assert [r["reason"] for r in out.rejects] == ["box_too_small", "box_too_small"]


def test_rerun_with_another_keep_fraction_rewrites_only_the_difference(crafted, built, tmp_path):
    import shutil

    out = tmp_path / "tuned"
    shutil.copytree(built, out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    (out / "images" / "train" / ".stale.tmp123.png").write_bytes(b"half")
    (out / "report" / "hist_niqe.png").write_bytes(b"an older version's histogram")
    assert main(_argv(crafted, out, "--keep-fraction", "0.5", "--set", "split.val_fraction=0")) == 0
    m = pd.read_parquet(out / "manifest.parquet")
    chosen = m[m["selected"]]
    # the crafted photos gray/palette/cmyk/... are one picture: duplicates keep one image's crops
    n_dup = int((m["reject_reason"] == "duplicate_image").sum())
    assert n_dup > 0 and len(chosen) + n_dup == sel.keep_count(int(m["score"].notna().sum()), 0.5)
    files = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file())
    assert files == sorted(chosen["image_path"])  # stale and half-written files removed
    assert not (out / "images" / "val").exists()  # val is empty now
    assert not (out / "report" / "hist_niqe.png").exists()  # stale report files go too
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images" / "train").glob("*.png")}
    kept_train = [n for n in before if n in after and before[n] == after[n]]
    assert kept_train  # crops already written under images/train were not rewritten


def test_an_unexpected_error_on_one_image_is_recorded_not_fatal(tmp_path, monkeypatch):
    from osdhuman.curation import shard
    from osdhuman.curation.config import CurationConfig
    from osdhuman.curation.scoring import _LaplacianFallback
    from osdhuman.curation.sources import SourceImage

    real = shard.prepare_image

    def flaky(item, cfg, detector=None):
        if item.key == "bad":
            raise RuntimeError("detector crashed")
        return real(item, cfg, detector)

    monkeypatch.setattr(shard, "prepare_image", flaky)
    p = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(p)
    items = [SourceImage("s", "bad", str(p), [[0, 0, 280, 280]]), SourceImage("s", "ok", str(p), [[0, 0, 280, 280]])]
    rows, rejects = shard.ShardWorker(CurationConfig(), [_LaplacianFallback()])(items)
    assert [r["source_image"] for r in rows] == ["ok"] and np.isfinite(rows[0]["iqa_laplacian_var"])
    assert rejects[0]["reason"] == "processing_error" and "detector crashed" in rejects[0]["detail"]


def test_dry_run_and_limit(crafted, tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(_argv(crafted, out, "--dry-run")) == 0
    text = capsys.readouterr().out
    assert "coco: coco" in text and "23 images" in text and "2 annotation rows rejected" in text
    assert not out.exists()
    assert main(_argv(crafted, out, "--limit", "3")) == 0
    m = pd.read_parquet(out / "manifest.parquet")
    assert set(m["source_image"]) <= {"alpha.png", "blurry.jpg", "bomb.png"} and len(m) >= 1


def test_an_input_file_replaced_between_runs_is_processed_again(crafted, tmp_path):
    """Resume skips finished shards only while their input files are unchanged: a photo replaced
    under the same name (size / mtime differ) is decoded and scored again, and the result equals
    a fresh build on the new files."""
    import os
    import shutil

    root = tmp_path / "src"
    shutil.copytree(crafted["root"], root)
    spec = f"coco:{root / 'ann.json'}:{root / 'images'}"

    def argv(out):
        a = _argv(crafted, out)
        a[a.index(crafted["source"])] = spec
        return a

    resumed = tmp_path / "resumed"
    assert main(argv(resumed)) == 0
    before = pd.read_parquet(resumed / "manifest.parquet")
    photo = root / "images" / "good0.jpg"  # the sharpest photo: selected in the first run
    old = before[before["source_image"] == "good0.jpg"]
    assert old["selected"].all()
    old_var = old["laplacian_var"].iloc[0]
    flat = np.full((160, 200, 3), 128, np.uint8)
    flat[::7] = 140  # a few stripes: valid, but far less detail than the textured original
    Image.fromarray(flat).save(photo, quality=95)
    st = photo.stat()
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # mtime surely differs

    assert main(argv(resumed)) == 0
    after = pd.read_parquet(resumed / "manifest.parquet")
    rows = after[after["source_image"] == "good0.jpg"]
    rejects = pd.read_parquet(resumed / "rejects.parquet")
    blurry = set(rejects.loc[rejects["reason"] == "blurry", "source_image"])
    assert "good0.jpg" in blurry or (len(rows) and rows["laplacian_var"].iloc[0] < old_var / 10)

    fresh = tmp_path / "fresh"
    assert main(argv(fresh)) == 0
    assert _tree(resumed) == _tree(fresh)
