"""--backend ray runs the same shard function on Ray Data and gives the same manifest (one test:
a local Ray instance takes seconds to start)."""

from __future__ import annotations

import hashlib

import pytest

from osdhuman.cli import main

ray = pytest.importorskip("ray")

FAST = [
    "crop.size=64", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=50",
    "exec.shard_size=3", "iqa.metrics=[laplacian_var]", "split.val_fraction=0.25", "exec.report_thumbs=4",
]


def test_ray_backend_gives_the_same_manifest_and_images(crafted, tmp_path):
    outs = {}
    for backend in ("local", "ray"):
        out = tmp_path / backend
        argv = ["build-dataset", "--source", crafted["source"], "--out", str(out), "--no-progress",
                "--workers", "1", "--backend", backend]
        for s in FAST:
            argv += ["--set", s]
        if backend == "ray":
            ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            assert main(argv) == 0
        finally:
            if backend == "ray":
                ray.shutdown()
        files = [out / "manifest.parquet", out / "rejects.parquet", *sorted((out / "images").rglob("*.png"))]
        outs[backend] = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert len(outs["local"]) > 3
    assert outs["ray"] == outs["local"]
