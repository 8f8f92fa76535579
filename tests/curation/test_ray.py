"""--backend ray runs the same shard functions on Ray Data and gives the same manifest. One
local Ray instance (1 CPU) serves the module: it takes seconds to start.

* one stage: actors prepare and score whole shards, reading their images from the parquet
  records themselves (the dataset the driver builds holds only shard descriptors);
* two stages (the GPU layout, here with ``num_gpus=0``, the same code): CPU actors crop,
  scoring actors score the crops of several shards per call with pyiqa's NIQE, loaded from a
  stand-in ``niqe_modelparameters.mat`` of pyiqa's exact name, keys and shapes written here.
"""

from __future__ import annotations

import hashlib

import pytest

from osdhuman.cli import main
from osdhuman.config import apply_overrides
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.ray_backend import _gpus_per_scorer, two_stage

ray = pytest.importorskip("ray")

FAST = [
    "crop.size=64", "boxes.min_long_side=40", "boxes.min_short_side=10", "blur.min_laplacian_var=50",
    "exec.shard_size=3", "iqa.metrics=[laplacian_var]", "split.val_fraction=0.25", "exec.report_thumbs=4",
]


def _tree(out) -> dict:
    files = [out / "manifest.parquet", out / "rejects.parquet", *sorted((out / "images").rglob("*.png"))]
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _build(crafted, out, backend: str, sets: list[str]) -> dict:
    argv = ["build-dataset", "--source", crafted["source"], "--out", str(out), "--no-progress",
            "--workers", "1", "--backend", backend]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    return _tree(out)


@pytest.fixture(scope="module")
def pyiqa_home(tmp_path_factory):
    """TORCH_HOME with a stand-in of pyiqa's NIQE parameter file (set before Ray starts, so
    the actors inherit it)."""
    pytest.importorskip("pyiqa")
    import os

    import numpy as np
    import scipy.io

    from osdhuman.iqa.niqe import load_pristine_params

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "pyiqa").mkdir(parents=True)
    p = load_pristine_params()
    scipy.io.savemat(home / "hub" / "pyiqa" / "niqe_modelparameters.mat",  # pyiqa: mu (1, 36), cov (36, 36)
                     {"mu_prisparam": p["mu"].reshape(1, 36), "cov_prisparam": np.asarray(p["cov"])})
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="module")
def local_ray(pyiqa_home):
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_backend_gives_the_same_manifest_and_images(crafted, tmp_path, local_ray, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)  # a relative --out: Ray's actors run in folders of their own
    local = _build(crafted, Path("local"), "local", FAST)
    seen = []
    real = ray.data.from_items
    monkeypatch.setattr(ray.data, "from_items", lambda items, **kw: seen.extend(items) or real(items, **kw))
    assert _build(crafted, Path("ray"), "ray", FAST) == local and len(local) > 3
    # the driver hands Ray shard descriptors; the actors read the images from the records
    assert seen and all(set(d) == {"key", "part", "start", "stop", "group"} for d in seen)
    assert all(Path(d["part"]).is_absolute() and d["part"].endswith(".parquet") and "/.work/records/" in d["part"]
               for d in seen)


def test_two_stage_scoring_actors_equal_the_local_run_with_pyiqa_niqe(crafted, tmp_path, local_ray):
    import pandas as pd

    sets = FAST + ["crop.size=192", "iqa.metrics=[niqe]", "iqa.backend=pyiqa", "iqa.batch_size=4",
                   "exec.max_images_per_source=12"]
    local = _build(crafted, tmp_path / "local", "local", sets)
    two = _build(crafted, tmp_path / "two", "ray", sets + ["exec.ray_score_actors=always", "exec.ray_score_shards=3"])
    assert two == local
    m = pd.read_parquet(tmp_path / "two" / "manifest.parquet")
    import json

    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(tmp_path / "two" / "manifest.parquet").metadata[b"osdhuman"])
    assert [(x["name"], x["backend"]) for x in meta["metrics"]] == [("niqe", "pyiqa")]
    scored = m["iqa_niqe"].notna()
    assert scored.sum() >= 6 and m.loc[scored, "iqa_niqe"].nunique() == scored.sum()  # real scores, per crop


def test_two_stage_is_chosen_for_cuda_scoring():
    cpu = CurationConfig()
    assert not two_stage(cpu) and _gpus_per_scorer(cpu) == 0.0
    cuda = apply_overrides(cpu, ["iqa.device=cuda"])
    assert two_stage(cuda) and _gpus_per_scorer(cuda) == 1.0
    shared = apply_overrides(cuda, ["exec.ray_num_gpus=0.25"])
    assert _gpus_per_scorer(shared) == 0.25
    assert not two_stage(apply_overrides(cuda, ["exec.ray_score_actors=never"]))
    assert two_stage(apply_overrides(cpu, ["exec.ray_score_actors=always"]))  # the CPU test path of the same code


def test_cuda_scoring_on_a_cluster_without_gpus_stops_with_a_clear_line(crafted, tmp_path, local_ray, capsys):
    argv = ["build-dataset", "--source", crafted["source"], "--out", str(tmp_path / "o"), "--no-progress",
            "--workers", "1", "--backend", "ray", "--set", "iqa.device=cuda"]
    for s in FAST:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "need 1 GPU(s) each, the Ray cluster has 0" in err and "Traceback" not in err
