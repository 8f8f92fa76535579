"""`osdhuman degrade` and degrade_folder on a folder with a corrupt file."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from osdhuman.cli import main
from osdhuman.config import load_config
from osdhuman.degradation import DegradationConfig, degrade_folder


def _hash(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def hq_dir(tmp_path):
    d = tmp_path / "hq"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in (("a.png", 64), ("b.jpg", 64), ("sub/c.png", 48)):
        arr = (rng.random((size, size, 3)) * 60 + np.linspace(0, 180, size)[None, :, None]).astype(np.uint8)
        Image.fromarray(arr).save(d / name)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return d


def test_cli_degrades_a_folder_and_reports_the_corrupt_file(hq_dir, tmp_path, capsys):
    before = {p.name: _hash(p) for p in hq_dir.rglob("*") if p.is_file()}
    out = tmp_path / "lq"
    rc = main(["degrade", str(hq_dir), "-o", str(out), "--seed", "3", "--batch-size", "2", "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "broken.png" in err
    for rel, size in (("a.png", 64), ("b.png", 64), ("sub/c.png", 48)):
        im = np.asarray(Image.open(out / rel))
        assert im.shape == (size, size, 3)
    recs = [json.loads(line) for line in (out / "params.jsonl").read_text().splitlines()]
    assert sorted(r["file"] for r in recs) == ["a.png", "b.jpg", "sub/c.png"]
    assert len({r["seed"] for r in recs}) == 3 and all("stage1" in r["params"] for r in recs)
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == 1 and skipped[0]["file"].endswith("broken.png")
    assert load_config(DegradationConfig, out / "config.yaml") == DegradationConfig()
    assert {p.name: _hash(p) for p in hq_dir.rglob("*") if p.is_file()} == before  # inputs untouched

    # same seed: same bytes; another seed: other images; the LQ of a file ignores its batch mates
    again = tmp_path / "lq2"
    assert main(["degrade", str(hq_dir), "-o", str(again), "--seed", "3", "--batch-size", "1", "--no-progress"]) == 0
    assert _hash(again / "a.png") == _hash(out / "a.png") and _hash(again / "sub/c.png") == _hash(out / "sub/c.png")
    other = tmp_path / "lq3"
    assert main(["degrade", str(hq_dir), "-o", str(other), "--seed", "4", "--no-progress"]) == 0
    assert _hash(other / "a.png") != _hash(out / "a.png")


def test_cli_refuses_to_write_into_the_input(hq_dir, capsys):
    assert main(["degrade", str(hq_dir), "-o", str(hq_dir / "lq"), "--seed", "0"]) == 2
    assert "must not be" in capsys.readouterr().err
    assert not (hq_dir / "lq").exists()
    assert main(["degrade", str(hq_dir / "nope"), "-o", "x"]) == 2
    assert main(["degrade", str(hq_dir), "-o", str(hq_dir.parent / "o"), "--set", "stage1.nope=1"]) == 2


def test_degrade_folder_config_changes_the_output(hq_dir, tmp_path):
    cfg = DegradationConfig(back_to_hq_size=False)
    s = degrade_folder(hq_dir, tmp_path / "small", seed=0, cfg=cfg, progress=False)
    assert s.written == 3 and len(s.skipped) == 1
    assert np.asarray(Image.open(tmp_path / "small" / "a.png")).shape == (16, 16, 3)


def test_two_inputs_with_one_output_name(tmp_path):
    hq = tmp_path / "hq"
    hq.mkdir()
    arr = np.full((40, 40, 3), 120, np.uint8)
    Image.fromarray(arr).save(hq / "x.png")
    Image.fromarray(arr).save(hq / "x.jpg")
    s = degrade_folder(hq, tmp_path / "out", seed=1, progress=False)
    # both kept (the one collision rule, README "Output names"): x.jpg -> x.png, x.png -> x-2.png
    assert s.written == 2 and not s.skipped
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["x-2.png", "x.png"]


def test_cli_on_a_cpu_never_imports_torch(hq_dir, tmp_path):
    """`osdhuman degrade` on a CPU, as a whole process: the numpy path, torch never imported;
    --threads sets the images degraded side by side and does not change a byte."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = ("import sys\nfrom osdhuman.cli import main\nrc = main(sys.argv[1:])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)")
    outs = []
    for threads in ("1", "3"):
        out = tmp_path / f"lq{threads}"
        r = subprocess.run([sys.executable, "-c", code, "degrade", str(hq_dir), "-o", str(out), "--seed", "5",
                            "--no-progress", "--threads", threads], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "broken.png" in r.stderr and "wrote 3 LQ images" in r.stdout
        outs.append(out)
    for rel in ("a.png", "b.png", "sub/c.png"):
        assert _hash(outs[0] / rel) == _hash(outs[1] / rel)
    # the same LQ as the torch Degrader makes for CPU tensors (what training on a CPU uses)
    import torch

    from osdhuman.degradation import Degrader
    from osdhuman.degradation.folder import image_seed

    hq = torch.from_numpy(np.asarray(Image.open(hq_dir / "a.png").convert("RGB")).copy()).permute(2, 0, 1)
    lq = Degrader()(hq[None].float() / 255.0, [image_seed(5, "a.png")])
    want = (lq[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(outs[0] / "a.png")), want)
