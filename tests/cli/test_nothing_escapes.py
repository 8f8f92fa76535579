"""Nothing escapes, nothing is replaced (issue 19): output names stay inside the output folder, every
command that writes a folder takes its lock, annotations cannot point outside their image folder,
name collisions cost no file, unreadable inputs are recorded and the run goes on, a full disk during
training names the file and leaves no temp folder, and files we write are byte-identical."""

from __future__ import annotations

import builtins
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osdhuman.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")


def _noise(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """in/: three 48 px PNGs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray(_noise(48, i)).save(d / f"img{i}.png")
    return tmp_path


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# --- output names ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["/../../victim", "x/y", "..", "a\x00b", "a\tb", "\\..\\v", "x" * 300])
def test_a_suffix_that_is_not_part_of_one_file_name_writes_nothing_anywhere(suffix, photos, capsys):
    before = _tree(photos)
    rc = main(["restore", str(photos / "in"), "-o", str(photos / "out"), "--base-model", "tiny", "--suffix", suffix,
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.startswith("osdhuman restore: error: --suffix "), err
    assert _tree(photos) == before  # no output folder, no victim file, no sub-folder


# --- one lock for every command that writes a folder -------------------------------------------

LOCKED = {
    "degrade": ["degrade", "{T}/in", "-o", "{T}/out", "--no-progress"],
    "restore": ["restore", "{T}/in", "-o", "{T}/out", "--base-model", "tiny", "--no-progress"],
    "train": ["train", "--config", TINY, "-o", "{T}/out", "--max-steps", "1", "--set", "data.source={T}/in",
              "--set", "data.num_val=1", "--set", "data.size=32", "--set", "logging.val_every=0"],
    "build-dataset": ["build-dataset", "--source", "folder:{T}/in", "-o", "{T}/out", "--set", "crop.size=64",
                      "--set", "iqa.metrics=[laplacian_var]", "--no-progress"],
    "evaluate": ["evaluate", "--method", "A={T}/in", "--reference", "{T}/in", "-o", "{T}/out", "--metrics", "psnr_y",
                 "--no-progress"],
    "dataset-quality": ["dataset-quality", "--dataset", "A={T}/in", "-o", "{T}/out", "--metrics", "laplacian_var",
                        "--no-progress"],
}


@pytest.mark.parametrize("command", list(LOCKED))
def test_every_command_that_writes_a_folder_stops_while_another_run_holds_it(command, photos, capsys):
    from osdhuman.outputs import OutputLock

    argv = [a.replace("{T}", str(photos)) for a in LOCKED[command]]
    with OutputLock(photos / "out"):  # "another run" (this process, through another open file)
        rc = main(argv)
        assert _tree(photos / "out") == {".osdhuman.lock"}  # nothing written beside the lock
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1, err
    assert err[-1].startswith(f"osdhuman {command}: error: {photos / 'out'}: another osdhuman run is writing here (pid "), err
    assert not any("Traceback" in ln for ln in err)


def test_a_train_run_sweeps_the_temp_folders_a_killed_run_left(photos, capsys):
    out = photos / "out"
    left = [out / "checkpoints" / ".tmp-step-00000004-99999", out / "checkpoints" / ".old-step-00000002-99999",
            out / ".tmp-final-99999"]
    for d in left:
        (d / "weights").mkdir(parents=True)
        (d / "weights" / "half.safetensors").write_bytes(b"\0" * 10)
    argv = [a.replace("{T}", str(photos)) for a in LOCKED["train"]]
    assert main(argv) == 0, capsys.readouterr().err
    assert not any(d.exists() for d in left)
    assert (out / "final" / "osdhuman_weights.safetensors").is_file()


# --- a full disk while training ------------------------------------------------------------------

def test_train_on_a_full_disk_names_the_file_and_leaves_no_temp_folder(photos, capsys, monkeypatch):
    """A write that fails with ENOSPC (a patched fsync, where a full disk also surfaces) while the
    first checkpoint is saved: one line naming the file under its final name, exit 1, no .tmp-step-*."""
    real_fsync = os.fsync

    def full_disk(fd):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".trainable.safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    argv = [a.replace("{T}", str(photos)) for a in LOCKED["train"]] + ["--set", "checkpoint.every=1"]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    ckpts = photos / "out" / "checkpoints"
    assert rc == 1, err
    assert err[-1] == (f"osdhuman train: error: {ckpts / 'step-00000001' / 'trainable.safetensors'}: no space left on "
                       "device (free some space or choose another output folder)"), err
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")], list(ckpts.iterdir())
    assert not [p for p in (photos / "out").rglob("*") if ".osdtmp-" in p.name]


# --- annotations name files inside their image folder -----------------------------------------

def _outside_sources(tmp_path: Path) -> dict[str, str]:
    """One source of every annotation kind; each names ok.jpg, ../outside.jpg and an absolute path."""
    imgs, anns = tmp_path / "images", tmp_path / "anns"
    imgs.mkdir()
    anns.mkdir()
    Image.fromarray(_noise(64, 0)).save(imgs / "ok.jpg")
    Image.fromarray(_noise(64, 1)).save(tmp_path / "outside.jpg")  # must never be read
    names = ["ok.jpg", "../outside.jpg", str(tmp_path / "outside.jpg")]
    coco = {"categories": [{"id": 1, "name": "person"}],
            "images": [{"id": i, "file_name": n, "width": 64, "height": 64} for i, n in enumerate(names)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 40, 50]} for i in range(3)]}
    (anns / "coco.json").write_text(json.dumps(coco))
    ids = ["ok", "../outside", str(tmp_path / "outside")]
    (anns / "ch.odgt").write_text("".join(json.dumps({"ID": k, "gtboxes": [{"tag": "person", "fbox": [4, 4, 40, 50]}]})
                                          + "\n" for k in ids))
    (anns / "voc").mkdir()
    for i, n in enumerate(names):
        (anns / "voc" / f"{i}.xml").write_text(
            f"<annotation><filename>{n}</filename><size><width>64</width><height>64</height></size>"
            "<object><name>person</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>44</xmax><ymax>54</ymax></bndbox>"
            "</object></annotation>")
    (anns / "classes.csv").write_text("/m/01g317,Person\n")
    (anns / "boxes.csv").write_text("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax\n" + "".join(
        f"{k},x,/m/01g317,1,0.1,0.7,0.1,0.8\n" for k in ids))
    return {"coco": f"coco:{anns / 'coco.json'}:{imgs}", "crowdhuman": f"crowdhuman:{anns / 'ch.odgt'}:{imgs}",
            "voc": f"voc:{anns / 'voc'}:{imgs}", "openimages": f"openimages:{anns / 'boxes.csv'}:{anns / 'classes.csv'}:{imgs}"}


@pytest.mark.parametrize("kind", ["coco", "crowdhuman", "voc", "openimages"])
def test_an_annotation_naming_a_file_outside_its_image_folder_is_a_reject_row(kind, tmp_path):
    from osdhuman.curation.config import LabelConfig
    from osdhuman.curation.sources import parse_source, parse_specs

    (spec,) = parse_specs([_outside_sources(tmp_path)[kind]])
    parsed = parse_source(spec, LabelConfig())
    assert [Path(im.path).name for im in parsed.images] == ["ok.jpg"]
    outside = [r for r in parsed.rejects if r["reason"] == "path_outside_image_dir"]
    assert len(outside) == 2, parsed.rejects
    assert all("outside" in r["path"] and "not a file inside the image folder" in r["detail"] for r in outside)


def test_build_dataset_never_reads_outside_the_image_folder_and_counts_the_rows(tmp_path, capsys, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = _outside_sources(tmp_path)["coco"]
    opened = []
    real_open = builtins.open

    def watch(file, *a, **k):
        opened.append(os.path.abspath(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else "")
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", watch)
    rc = main(["build-dataset", "--source", src, "-o", str(tmp_path / "ds"), "--set", "crop.size=64", "--workers", "1",
               "--set", "iqa.metrics=[laplacian_var]", "--no-progress"])
    monkeypatch.setattr(builtins, "open", real_open)
    assert rc == 0, capsys.readouterr().err
    assert str(tmp_path / "outside.jpg") not in opened
    rej = pd.read_parquet(tmp_path / "ds" / "rejects.parquet")
    assert (rej["reason"] == "path_outside_image_dir").sum() == 2
    assert "path_outside_image_dir" in (tmp_path / "ds" / "report.html").read_text()


def test_detector_flags_a_build_would_not_use_are_said_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = _outside_sources(tmp_path)["coco"]  # person boxes given: no detector runs
    with pytest.warns(UserWarning) as seen:  # on the command line: one "osdhuman: UserWarning: ..." line
        rc = main(["build-dataset", "--source", src, "-o", str(tmp_path / "ds"), "--set", "crop.size=64",
                   "--workers", "1", "--set", "iqa.metrics=[laplacian_var]", "--no-progress", "--detector", "opencv"])
    assert rc == 0, capsys.readouterr().err
    notes = [str(w.message) for w in seen if "--detector" in str(w.message)]
    assert notes == ["--detector not used: the detector finds people in folder: sources only, and every source "
                     "here has person boxes"], notes


@pytest.mark.parametrize("bbox,detail", [
    ("notalist", "bbox 'notalist' is not a list of 4 numbers [x, y, w, h]"),
    (None, "bbox None is not a list of 4 numbers [x, y, w, h]"),
    ([1, 2, 3], "bbox 3 numbers, expected 4"),
    (["a", 1, 2, 3], "bbox ['a', 1, 2, 3] is not 4 numbers"),
    ("MISSING", "bbox missing (no 'bbox' key)"),
])
def test_a_coco_bbox_that_is_not_four_numbers_says_what_it_is(bbox, detail, tmp_path):
    from osdhuman.curation.config import LabelConfig
    from osdhuman.curation.sources import parse_source, parse_specs

    (tmp_path / "im").mkdir()
    ann = {"id": 1, "image_id": 1, "category_id": 1} | ({} if bbox == "MISSING" else {"bbox": bbox})
    (tmp_path / "c.json").write_text(json.dumps({
        "categories": [{"id": 1, "name": "person"}], "images": [{"id": 1, "file_name": "a.jpg", "width": 9, "height": 9}],
        "annotations": [ann]}))
    (spec,) = parse_specs([f"coco:{tmp_path / 'c.json'}:{tmp_path / 'im'}"])
    (row,) = parse_source(spec, LabelConfig()).rejects
    assert row["reason"] == "malformed_annotation" and row["detail"] == f"annotations[0]: {detail}", row


# --- name collisions cost no file ------------------------------------------------------------

@pytest.mark.parametrize("command", ["degrade", "restore"])
def test_two_inputs_with_one_output_name_both_keep_their_file(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(_noise(48, 0)).save(d / "a.png")
    full = (d / "a.png").read_bytes()
    Image.fromarray(_noise(48, 1)).save(d / "a.jpg")
    (d / "a.jpg").write_bytes((d / "a.jpg").read_bytes()[:300])  # truncated: a.png is the good one
    Image.fromarray(_noise(48, 2)).save(d / "b.png")
    Image.fromarray(_noise(48, 3)).save(d / "b.webp")  # two good ones
    extra = ["--base-model", "tiny", "--ext", "png"] if command == "restore" else []  # png: the names collide
    rc = main([command, str(d), "-o", str(tmp_path / "out"), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert (d / "a.png").read_bytes() == full
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == ["a-2.png", "b-2.png", "b.png"], written  # a.jpg (truncated) -> nothing; a.png -> a-2.png
    assert any(str(d / "a.jpg") in ln and ("truncated_image" in ln or "corrupt_image" in ln) for ln in err.splitlines())
    assert "output_name_collision" not in err


def test_evaluate_scores_both_files_of_one_stem(tmp_path, capsys):
    m, ref = tmp_path / "m", tmp_path / "ref"
    m.mkdir()
    ref.mkdir()
    Image.fromarray(_noise(32, 0)).save(ref / "a.png")
    Image.fromarray(_noise(32, 0)).save(m / "a.png")
    Image.fromarray(_noise(32, 1)).save(m / "a.webp", lossless=True)
    assert main(["evaluate", "--method", f"M={m}", "--reference", str(ref), "-o", str(tmp_path / "ev"),
                 "--metrics", "psnr_y", "--no-progress"]) == 0
    err = capsys.readouterr().err
    per_image = (tmp_path / "ev" / "per_image.csv").read_text()
    assert "a-2" in per_image and "duplicate_stem" in err and "scored as a-2" in err


# --- unreadable inputs: recorded, the run goes on ---------------------------------------------

def _deny(monkeypatch, path: Path) -> None:
    """``open(path)`` raises PermissionError (tests run as root, where chmod 000 still reads)."""
    real_open = builtins.open

    def guarded(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(os.fspath(file)) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)


def test_restore_records_an_unreadable_input_and_restores_the_others(photos, capsys, monkeypatch):
    _deny(monkeypatch, photos / "in" / "img1.png")
    rc = main(["restore", str(photos / "in"), "-o", str(photos / "out"), "--base-model", "tiny", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert sorted(p.name for p in (photos / "out").glob("*.png")) == ["img0.png", "img2.png"]
    naming = [ln for ln in err.splitlines() if str(photos / "in" / "img1.png") in ln]
    assert len(naming) == 1 and "unreadable_file" in naming[0], err
    report = json.loads((photos / "out" / "restore_report.json").read_text())
    assert any("unreadable_file" in str(f) for f in report["failed"]), report


@pytest.mark.parametrize("command", ["evaluate", "dataset-quality"])
def test_scoring_commands_call_an_unreadable_file_unreadable(command, photos, capsys, monkeypatch):
    _deny(monkeypatch, photos / "in" / "img1.png")
    argv = [a.replace("{T}", str(photos)) for a in LOCKED[command]]
    assert main(argv) == 0
    issues = (photos / "out" / "issues.csv").read_text()
    row = [ln for ln in issues.splitlines() if "img1" in ln]
    assert row and "unreadable_file" in row[0] and "corrupt_image" not in issues, issues


def test_build_dataset_calls_an_unreadable_file_unreadable(photos, capsys, monkeypatch):
    import pandas as pd

    _deny(monkeypatch, photos / "in" / "img1.png")
    argv = [a.replace("{T}", str(photos)) for a in LOCKED["build-dataset"]] + ["--workers", "1"]  # in this process
    assert main(argv) == 0, capsys.readouterr().err
    rej = pd.read_parquet(photos / "out" / "rejects.parquet")
    reasons = dict(zip(rej["path"].map(lambda p: Path(p).name), rej["reason"]))
    assert reasons.get("img1.png") == "unreadable_file", reasons
    assert "unreadable_file" in capsys.readouterr().err


def test_reading_an_unreadable_file_is_unreadable_file_for_every_reader(tmp_path, monkeypatch):
    from osdhuman.imageio import ImageReadError, read_rgb

    Image.fromarray(_noise(32, 0)).save(tmp_path / "a.png")
    _deny(monkeypatch, tmp_path / "a.png")
    with pytest.raises(ImageReadError) as exc:
        read_rgb(tmp_path / "a.png")
    assert exc.value.reason == "unreadable_file" and "Permission denied" in str(exc.value)


def test_restore_arguments_that_are_not_images_are_each_named(photos, capsys):
    t = photos
    (t / "dangling.jpg").symlink_to(t / "gone.jpg")
    (t / "loop.jpg").symlink_to(t / "loop.jpg")
    (t / "dir.jpg").mkdir()
    rc = main(["restore", str(t / "in" / "img0.png"), str(t / "dangling.jpg"), str(t / "loop.jpg"), str(t / "dir.jpg"),
               str(t / "nope.png"), "-o", str(t / "out"), "--base-model", "tiny", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    for name, reason in (("dangling.jpg", "dangling_link"), ("loop.jpg", "link_loop"), ("dir.jpg", "directory"),
                         ("nope.png", "missing_file")):
        naming = [ln for ln in err.splitlines() if str(t / name) in ln]
        assert len(naming) == 1 and reason in naming[0], (name, err)


# --- messages --------------------------------------------------------------------------------

def test_evaluate_says_how_many_issues_it_did_not_print(tmp_path, capsys):
    m, ref = tmp_path / "m", tmp_path / "ref"
    m.mkdir()
    ref.mkdir()
    for i in range(12):
        Image.fromarray(_noise(24, i)).save(m / f"x{i:02d}.png")
    Image.fromarray(_noise(24, 99)).save(ref / "other.png")
    assert main(["evaluate", "--method", f"M={m}", "--reference", str(ref), "-o", str(tmp_path / "ev"),
                 "--metrics", "psnr_y", "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sum(ln.startswith("  [") for ln in err) == 10
    assert f"  ... and 3 more (see {tmp_path / 'ev' / 'issues.csv'})" in err, err  # 12 + 1 issues


def test_importing_the_models_prints_no_kernels_hub_noise(tmp_path):
    """bitsandbytes (through diffusers) asks `kernels` for a hub kernel on some CPUs; offline, its
    logger warned on every run. Silenced where it is configured (osdhuman/__init__.py)."""
    code = "import osdhuman.cli; from diffusers import AutoencoderKL, UNet2DConditionModel"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert "publisher trust check" not in r.stderr and "kernels-community" not in r.stderr, r.stderr


# --- byte-identical files --------------------------------------------------------------------

def test_safetensors_we_write_have_the_same_bytes_in_every_process(tmp_path):
    """The metadata map's order changed between processes; now it is sorted (weights, checkpoints, exports)."""
    code = ("import sys, torch; from osdhuman.outputs import save_safetensors; "
            "save_safetensors({'b': torch.arange(6.).reshape(2, 3), 'a': torch.ones(2, dtype=torch.int64)}, sys.argv[1], "
            "{k: str(i) for i, k in enumerate(['format', 'version', 'zeta', 'alpha', 'mid', 'beta'])})")
    files = []
    for i in range(4):
        files.append(tmp_path / f"w{i}.safetensors")
        subprocess.run([sys.executable, "-c", code, str(files[-1])], check=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert len({f.read_bytes() for f in files}) == 1
    from safetensors import safe_open

    with safe_open(str(files[0]), "pt") as f:
        assert f.metadata()["zeta"] == "2"
        assert f.get_tensor("b").tolist() == [[0, 1, 2], [3, 4, 5]]
    head = files[0].read_bytes()
    n = int.from_bytes(head[:8], "little")
    assert n % 8 == 0 and list(json.loads(head[8:8 + n])["__metadata__"]) == sorted(["format", "version", "zeta",
                                                                                      "alpha", "mid", "beta"])


def test_a_file_written_by_another_library_gets_its_metadata_sorted(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from osdhuman.outputs import sort_safetensors_metadata

    meta = {k: k.upper() for k in ("z", "a", "m", "format")}
    t = {"w": torch.randn(3, 4), "v": torch.arange(5)}
    save_file(t, str(tmp_path / "x.safetensors"), metadata=meta)
    sort_safetensors_metadata(tmp_path / "x.safetensors")
    data = (tmp_path / "x.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert list(json.loads(data[8:8 + n])["__metadata__"]) == ["a", "format", "m", "z"]
    back = load_file(str(tmp_path / "x.safetensors"))
    assert torch.equal(back["w"], t["w"]) and torch.equal(back["v"], t["v"])
