"""Nothing lost, no traceback (issue 12): a folder holding every kind of bad entry through every
image command, a full disk, kills mid-write, resume / overwrite / lock of an output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osdhuman.cli import main

SRC = Path(__file__).resolve().parents[2] / "src"

# bad entry -> the reason every command gives for it
BAD = {
    "truncated.png": "truncated_image",
    "empty.png": "empty_file",
    "text.jpg": "not_an_image",
    "speck.png": "too_small",
    "notes.txt": "not_an_image_extension",
    "dangling.jpg": "dangling_link",
    "loop.jpg": "link_loop",
    "folder.jpg": "directory",
}
GOOD = ("a.png", "b.png", "c.avif")


def _noise(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def messy(tmp_path, monkeypatch):
    """in/: three good images (one AVIF) and one entry of every bad kind; ref/: the good ones as PNG."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d, ref = tmp_path / "in", tmp_path / "ref"
    d.mkdir()
    ref.mkdir()
    for i, name in enumerate(GOOD):
        Image.fromarray(_noise(48, i)).save(d / name, quality=100) if name.endswith(".avif") else \
            Image.fromarray(_noise(48, i)).save(d / name)
        Image.open(d / name).convert("RGB").save(ref / (Path(name).stem + ".png"))
    full = (d / "a.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.jpg").write_text("this is not a JPEG")
    Image.fromarray(_noise(1, 9)).save(d / "speck.png")
    (d / "notes.txt").write_text("hello")
    (d / "dangling.jpg").symlink_to(d / "gone.jpg")
    (d / "loop.jpg").symlink_to(d / "loop.jpg")
    (d / "folder.jpg").mkdir()
    for name in ("truncated", "empty", "text", "speck"):  # evaluate: these have a reference, their result is bad
        Image.fromarray(_noise(48, 5)).save(ref / f"{name}.png")
    return tmp_path


COMMANDS = {
    "degrade": ["degrade", "{T}/in", "-o", "{T}/out", "--seed", "1"],
    "restore": ["restore", "{T}/in", "-o", "{T}/out", "--base-model", "tiny", "--device", "cpu"],
    "evaluate": ["evaluate", "--method", "M={T}/in", "--reference", "{T}/ref", "-o", "{T}/out",
                 "--metrics", "psnr_y,ssim_y", "--device", "cpu"],
    "dataset-quality": ["dataset-quality", "--dataset", "D={T}/in", "-o", "{T}/out", "--metrics", "laplacian_var",
                        "--device", "cpu"],
    # a folder of HQ crops: validation takes a.png; 3 steps of 2 visit the other six once
    "train": ["train", "--config", str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"),
              "-o", "{T}/out", "--set", "data.source={T}/in", "--set", "max_steps=3", "--set", "data.num_val=1",
              "--set", "data.size=32", "--set", "data.shuffle=false", "--set", "logging.val_at_start=false",
              "--set", "checkpoint.every=0", "--set", "logging.progress=false"],
    "build-dataset": ["build-dataset", "--source", "folder:{T}/in", "-o", "{T}/out", "--set", "crop.size=64",
                      "--set", "iqa.metrics=[laplacian_var]"],
}
NO_PROGRESS_FLAG = {"train": []}  # train's progress bar is a config value (set above)


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        key = p.relative_to(folder).as_posix()
        out[key] = ("link:" + os.readlink(p)) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_bad_kind_is_named_once_and_the_good_files_are_processed(command, messy, capsys):
    before = _snapshot(messy / "in")
    rc = main([a.replace("{T}", str(messy)) for a in COMMANDS[command]] + NO_PROGRESS_FLAG.get(command, ["--no-progress"]))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Traceback" not in err
    assert _snapshot(messy / "in") == before  # inputs untouched
    lines = err.splitlines()
    for name, reason in BAD.items():
        path = str(messy / "in" / name)
        naming = [ln for ln in lines if path in ln.split()[-1] or f"{path}:" in ln or f"{path} " in ln]
        assert len(naming) == 1, (name, err)  # one line per bad entry ...
        assert reason in naming[0], (name, naming[0])  # ... with its reason
    written = {p.name for p in (messy / "out").rglob("*") if p.is_file()}
    for name in BAD:
        assert not any(w.startswith(Path(name).stem + ".") for w in written), (name, written)
    if command in ("degrade", "restore"):  # one output per good input
        for name in GOOD:
            assert any(w.startswith(Path(name).stem) and w.endswith(".png") for w in written), (name, written)
    elif command == "train":  # trained to the end on the good crops; every bad entry recorded once
        assert (messy / "out" / "final").is_dir()
        recs = [json.loads(x) for x in (messy / "out" / "skipped.jsonl").read_text().splitlines()]
        assert sorted((Path(r["file"]).name, r["reason"]) for r in recs) == sorted(BAD.items())
    elif command == "build-dataset":  # every good image decoded (no person in noise), every bad one a reject row
        import pandas as pd

        rej = pd.read_parquet(messy / "out" / "rejects.parquet")
        reasons = {Path(p).name: r for p, r in zip(rej["path"], rej["reason"])}
        assert all(reasons.get(g) == "no_person_detected" for g in GOOD), reasons
        assert {n: reasons.get(n) for n in BAD} == BAD
    else:
        summary = json.loads((messy / "out" / "summary.json").read_text())
        rows = next(iter(summary.values()))
        assert rows and all(v is not None for v in rows.values()), summary
        per_image = (messy / "out" / "per_image.csv").read_text()
        assert all(Path(g).stem in per_image for g in GOOD), per_image


# --- degrade: resume, overwrite, lock --------------------------------------------------------

def _degrade(args: list[str]) -> int:
    return main(["degrade", *args, "--no-progress"])


def test_degrade_resumes_redoes_what_changed_and_never_replaces_a_stranger(tmp_path, capsys):
    hq, lq = tmp_path / "hq", tmp_path / "lq"
    hq.mkdir()
    for i in range(3):
        Image.fromarray(_noise(40, i)).save(hq / f"img{i}.png")
    lq.mkdir()
    stranger = _noise(40, 7)
    Image.fromarray(stranger).save(lq / "img0.png")  # a file of the user's, not ours
    assert _degrade([str(hq), "-o", str(lq)]) == 0
    err = capsys.readouterr().err
    assert "img0.png" in err and "output_exists" in err and "--overwrite" in err
    assert np.array_equal(np.asarray(Image.open(lq / "img0.png")), stranger)  # not overwritten
    first = {p: (lq / p).read_bytes() for p in ("img1.png", "img2.png")}
    stamps = {p: (lq / p).stat().st_mtime_ns for p in first}

    assert _degrade([str(hq), "-o", str(lq)]) == 0  # nothing changed: kept, not rewritten
    assert "kept 2 unchanged" in capsys.readouterr().out
    assert {p: (lq / p).stat().st_mtime_ns for p in first} == stamps

    Image.fromarray(_noise(40, 11)).save(hq / "img2.png")  # an input changes
    assert _degrade([str(hq), "-o", str(lq)]) == 0
    err = capsys.readouterr().err
    assert f"redoing {lq / 'img2.png'}: its input changed" in err
    assert (lq / "img1.png").stat().st_mtime_ns == stamps["img1.png"]
    assert (lq / "img2.png").read_bytes() != first["img2.png"]

    assert _degrade([str(hq), "-o", str(lq), "--overwrite"]) == 0  # forced: the stranger is replaced
    assert not np.array_equal(np.asarray(Image.open(lq / "img0.png")), stranger)
    records = [json.loads(x) for x in (lq / "params.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == ["img0.png", "img1.png", "img2.png"]
    assert not list(lq.glob(".*journal*"))


def test_a_second_run_into_a_locked_output_folder_stops_with_a_clear_line(tmp_path, capsys):
    from osdhuman.outputs import OutputLock

    hq = tmp_path / "hq"
    hq.mkdir()
    Image.fromarray(_noise(32, 0)).save(hq / "a.png")
    with OutputLock(tmp_path / "lq"):
        assert _degrade([str(hq), "-o", str(tmp_path / "lq")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "another osdhuman run is writing here" in err and str(tmp_path / "lq") in err
    assert not (tmp_path / "lq" / "a.png").exists()
    assert _degrade([str(hq), "-o", str(tmp_path / "lq")]) == 0  # released: the next run goes ahead


# --- kills mid-write -------------------------------------------------------------------------

def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from osdhuman.cli import main; sys.exit(main())", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _kill_when(cmd: list[str], ready) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` holds (or fail after 120 s)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() - t0 < 120
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("command", ["degrade", "restore"])
def test_killed_mid_write_then_rerun_gives_the_same_outputs_and_no_partial_file(command, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hq = tmp_path / "hq"
    hq.mkdir()
    n = 12
    for i in range(n):
        Image.fromarray(_noise(64, i)).save(hq / f"img{i:02d}.png")
    extra = ["--seed", "3", "--batch-size", "2"] if command == "degrade" else ["--base-model", "tiny", "--device", "cpu"]
    clean, cut = tmp_path / "clean", tmp_path / "cut"
    if command == "degrade":  # uninterrupted run; degrade's output does not depend on the thread count
        assert main([command, str(hq), "-o", str(clean), "--no-progress", *extra]) == 0
    else:  # the random tiny model's floats do: same settings as the killed run
        subprocess.run(_cli(command, str(hq), "-o", str(clean), "--no-progress", *extra), env=_env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def some_written() -> bool:
        return cut.is_dir() and len(list(cut.glob("img*.png"))) >= 2

    _kill_when(_cli(command, str(hq), "-o", str(cut), "--no-progress", *extra), some_written)
    assert len(list(cut.glob("img*.png"))) < n  # killed part-way
    summary = "params.jsonl" if command == "degrade" else "restore_report.json"
    assert not (cut / summary).exists()  # an interrupted run does not look complete
    for p in cut.glob("img*.png"):  # whatever is there under a final name is a whole image
        Image.open(p).load()
    rc = subprocess.run(_cli(command, str(hq), "-o", str(cut), "--no-progress", *extra), env=_env(),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert rc.returncode == 0, rc.stderr
    images = {k: v for k, v in _files(clean).items() if k.endswith(".png")}
    assert {k: v for k, v in _files(cut).items() if k.endswith(".png")} == images
    assert len(images) == n
    assert not [p for p in cut.rglob(".*") if ".osdtmp-" in p.name]  # no temp file left
    if command == "degrade":
        assert (cut / "params.jsonl").read_text() == (clean / "params.jsonl").read_text()


# --- a full disk -----------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 160 KiB tmpfs (needs root to mount; skipped otherwise, saying so)."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full test mounts a small tmpfs, which needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_is_one_line_naming_the_path_and_leaves_nothing_that_looks_complete(tmp_path, tiny_disk, capsys):
    hq = tmp_path / "hq"
    hq.mkdir()
    for i in range(8):
        Image.fromarray(_noise(96, i)).save(hq / f"img{i}.png")
    (tiny_disk / "fill").write_bytes(b"\0" * (140 * 1024))  # leave ~20 KiB: a few LQ PNGs fit, not all
    rc = _degrade([str(hq), "-o", str(tiny_disk / "lq")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "Traceback" not in err
    assert err.count("\n") == 0, err
    assert str(tiny_disk / "lq") in err and "no space left on device" in err
    assert not (tiny_disk / "lq" / "params.jsonl").exists() and not (tiny_disk / "lq" / "config.yaml").exists()
    assert not [p for p in (tiny_disk / "lq").rglob("*") if ".osdtmp-" in p.name]
    for p in (tiny_disk / "lq").glob("img*.png"):
        Image.open(p).load()  # every file under a final name is whole

    for p in (tiny_disk / "lq").iterdir():
        p.unlink()
    (tiny_disk / "fill").unlink()
    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(40):
        Image.fromarray(_noise(24, i)).save(ref / f"r{i:02d}.png")
    (tiny_disk / "fill").write_bytes(b"\0" * (150 * 1024))  # leave ~10 KiB: the plots do not fit
    rc = main(["evaluate", "--method", f"A={ref}", "--reference", str(ref), "-o", str(tiny_disk / "ev"),
               "--metrics", "psnr_y,ssim_y", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "Traceback" not in err and "no space left on device" in err, err
    assert err.splitlines()[-1].startswith("osdhuman evaluate: error: " + str(tiny_disk / "ev"))
    assert not (tiny_disk / "ev" / "summary.json").exists() and not (tiny_disk / "ev" / "table.md").exists()
    assert not [p for p in (tiny_disk / "ev").rglob("*") if ".osdtmp-" in p.name or p.name.endswith(".tmp")]


# --- config values ---------------------------------------------------------------------------

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


@pytest.mark.parametrize("override,needle", [
    ("seed=-5", "seed: must be >= 0, got -5"),
    ("data.size=-64", "data.size: must be >= 16, got -64"),
    ("optim.lr=0", "optim.lr: must be > 0"),
    ("loss.lambda_vsd=nan", "loss.lambda_vsd: must be a finite number"),
    ("degradation.stage1.noise.gray_prob=1.5", "gray_prob"),
    ("global_batch_size=0", "global_batch_size: must be >= 1"),
    ("data.source=/no/such/folder", "data.source=/no/such/folder: no such file or folder"),
])
def test_bad_config_values_are_refused_before_anything_is_written(override, needle, tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    Image.fromarray(_noise(32, 0)).save(good / "a.png")
    rc = main(["train", "--config", TINY, "-o", str(tmp_path / "run"), "--set", f"data.source={good}",
               "--set", override])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and needle in err, err
    assert not (tmp_path / "run").exists()


def test_every_config_dataclass_default_passes_the_value_rules():
    import dataclasses
    import importlib
    import inspect

    from osdhuman.config import check_values

    checked = 0
    for mod in ("osdhuman.training.config", "osdhuman.degradation.config", "osdhuman.evaluation.config",
                "osdhuman.curation.config", "osdhuman.models.config", "osdhuman.pipelines.restore"):
        for _, cls in inspect.getmembers(importlib.import_module(mod), inspect.isclass):
            if dataclasses.is_dataclass(cls) and cls.__module__ == mod:
                try:
                    cfg = cls()
                except TypeError:  # not a config (required fields)
                    continue
                check_values(cfg)
                checked += 1
    assert checked >= 20


def test_train_on_a_full_disk_names_the_file_and_leaves_no_temp_folder(tmp_path, tiny_disk, capsys):
    """A real full disk (the 160 KiB tmpfs): one line naming a file of the run, exit 1, no
    ``.tmp-step-*`` / ``.tmp-final-*`` folder and no temp file left."""
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        Image.fromarray(_noise(48, i)).save(good / f"a{i}.png")
    out = tiny_disk / "run"
    rc = main(["train", "--config", TINY, "-o", str(out), "--max-steps", "2", "--set", f"data.source={good}",
               "--set", "data.num_val=1", "--set", "data.size=32", "--set", "checkpoint.every=1",
               "--set", "logging.val_every=0", "--set", "logging.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and not any("Traceback" in ln for ln in err), err
    assert err[-1].startswith(f"osdhuman train: error: {out}/") and err[-1].endswith(
        "no space left on device (free some space or choose another output folder)"), err
    assert not [p for p in out.rglob("*") if p.name.startswith((".tmp-", ".old-")) or ".osdtmp-" in p.name]
