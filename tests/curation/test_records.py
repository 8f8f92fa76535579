"""Source records spilled to parquet: layout, round trip, reuse on a rerun, parallel parsing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
from PIL import Image

from osdhuman.cli import main
from osdhuman.config import to_dict
from osdhuman.curation import records, runner, schema, worker
from osdhuman.curation.config import LabelConfig
from osdhuman.curation.sources import parse_source, parse_specs

FAST = [
    "crop.size=64", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=50",
    "exec.shard_size=3", "iqa.metrics=[laplacian_var]", "split.val_fraction=0.25", "exec.report_thumbs=4",
]


def _argv(spec: str, out: Path, *extra: str) -> list[str]:
    argv = ["build-dataset", "--source", spec, "--out", str(out), "--no-progress", "--workers", "1"]
    for s in FAST:
        argv += ["--set", s]
    return argv + list(extra)


def _tree(out: Path) -> dict:
    files = [out / "manifest.parquet", out / "rejects.parquet", *sorted((out / "images").rglob("*.png"))]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _coco(root: Path, n: int) -> str:
    imgs = root / "images"
    imgs.mkdir(parents=True)
    images = [{"id": 100 + i, "file_name": f"im{n - i:03d}.jpg", "width": 64, "height": 48} for i in range(n)]
    anns = [{"id": k, "image_id": 100 + (k % n), "category_id": 1, "bbox": [k, 2, 10 + k % 3, 20]} for k in range(2 * n)]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [{"id": 1, "name": "person"}]}))
    return f"coco:{root / 'ann.json'}:{imgs}"


def test_records_are_parts_of_whole_shards_and_read_back_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "PART_IMAGES", 4)  # -> parts of 6 images (whole shards of 3)
    monkeypatch.setattr(records, "GROUP_IMAGES", 3)  # one row group per shard
    (spec,) = parse_specs([_coco(tmp_path / "src", 10)])
    rec = records.spill_source(spec, to_dict(LabelConfig()), str(tmp_path / "rec"), 3)
    assert rec.part_rows == [6, 4] and rec.n_images == 10 and rec.n_boxes == 20 and len(rec.digests) == 4
    assert sorted(p.name for p in Path(rec.dir).iterdir()) == ["done.json", "part-00000.parquet", "part-00001.parquet",
                                                               "rejects.parquet"]
    want = [it.to_json() for it in parse_source(spec, LabelConfig()).images]  # the in-memory parse
    got = []
    for part, rows in enumerate(rec.part_rows):
        for start in range(0, rows, 3):
            chunk = [it.to_json() for it in records.read_items(rec.part_path(part), start, min(start + 3, rows), 3)]
            assert records.chunk_digest(chunk) == rec.digests[len(got) // 3]
            got += chunk
    assert got == want and [g["key"] for g in got] == sorted(g["key"] for g in got)
    # a shard across two row groups reads both
    assert [it.key for it in records.read_items(rec.part_path(0), 2, 5, 3)] == [w["key"] for w in want[2:5]]


def test_rerun_reuses_records_and_a_changed_annotation_redoes_only_its_shards(crafted, tmp_path, monkeypatch):
    root = tmp_path / "src"
    shutil.copytree(crafted["root"], root)
    spec = f"coco:{root / 'ann.json'}:{root / 'images'}"
    parses = {"n": 0}
    real_parse = records.parse_source
    monkeypatch.setattr(records, "parse_source", lambda *a, **k: parses.update(n=parses["n"] + 1) or real_parse(*a, **k))
    shards = {"n": 0}
    real_call = runner.ShardWorker.__call__
    monkeypatch.setattr(runner.ShardWorker, "__call__",
                        lambda self, items: shards.update(n=shards["n"] + 1) or real_call(self, items))
    out = tmp_path / "out"
    assert main(_argv(spec, out)) == 0
    assert parses["n"] == 1 and shards["n"] == 8  # 23 images in shards of 3
    assert main(_argv(spec, out)) == 0
    assert parses["n"] == 1 and shards["n"] == 8  # everything found: no parse, no shard
    # one image's boxes change in the annotation file: parsed again, only its shard redone
    ann = json.loads((root / "ann.json").read_text())
    ann["annotations"][0]["bbox"] = [25, 35, 50, 100]
    (root / "ann.json").write_text(json.dumps(ann))
    assert main(_argv(spec, out)) == 0
    assert parses["n"] == 2 and shards["n"] == 9
    assert len(list((out / ".work" / "records").iterdir())) == 1  # the old records folder is gone
    fresh = tmp_path / "fresh"
    assert main(_argv(spec, fresh)) == 0
    assert _tree(out) == _tree(fresh)
    # exec.verify_inputs=false trusts finished shards: a replaced photo is not looked at again
    Image.new("RGB", (200, 160), (128, 128, 128)).save(root / "images" / "good0.jpg")
    shards["n"] = 0
    assert main(_argv(spec, out, "--set", "exec.verify_inputs=false")) == 0
    assert shards["n"] == 0
    assert main(_argv(spec, out)) == 0
    assert shards["n"] == 1  # verified (the default): the shard holding good0.jpg is redone


def test_sources_are_parsed_in_parallel_in_source_order(tmp_path):
    specs = [f"s{i}={_coco(tmp_path / f's{i}', 4 + i)}" for i in range(3)]
    parsed = parse_specs(specs)
    labels = to_dict(LabelConfig())
    par = records.spill_all(parsed, labels, tmp_path / "par", 3, workers=3)
    seq = records.spill_all(parsed, labels, tmp_path / "seq", 3, workers=1)
    assert [r.name for r in par] == ["s0", "s1", "s2"] and [r.n_images for r in par] == [4, 5, 6]
    assert [r.digests for r in par] == [r.digests for r in seq]
    for a, b in zip(par, seq):
        assert pd.read_parquet(a.part_path(0)).equals(pd.read_parquet(b.part_path(0)))


def test_shard_files_written_with_arrow_read_back_as_the_pandas_frames(crafted):
    import io

    from osdhuman.config import apply_overrides
    from osdhuman.curation.config import CurationConfig
    from osdhuman.curation.scoring import _LaplacianFallback
    from osdhuman.curation.shard import ShardWorker

    cfg = apply_overrides(CurationConfig(), FAST)
    items = parse_source(parse_specs([crafted["source"]])[0], cfg.labels).images[:9]
    rows, rejects = ShardWorker(cfg, [_LaplacianFallback()])(items)
    assert rows and rejects and any(r["box_flags"] is None for r in rows)
    cand_b, rej_b, kept, nrej = worker.shard_bytes(rows, rejects, ["laplacian_var"], "digest")
    cand_schema = schema.candidate_schema(["laplacian_var"])
    cand, rej = schema.frame(rows, cand_schema), schema.frame(rejects, schema.REJECTS)
    pd.testing.assert_frame_equal(schema.typed(pd.read_parquet(io.BytesIO(cand_b)), cand_schema), cand)
    pd.testing.assert_frame_equal(schema.typed(pd.read_parquet(io.BytesIO(rej_b)), schema.REJECTS), rej)
    assert kept == int(cand["reject_reason"].isna().sum()) > 0 and nrej == len(rej)
