"""Adversarial command lines: each mistake ends with one clear line naming the path / flag and
the problem (exit 2 when found before any work), never a traceback, and never touches inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osdhuman.cli import main

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


@pytest.fixture
def qa(tmp_path, monkeypatch):
    """good/ (3 small PNGs), empty/, corrupt/ (3 non-images), a.txt (a plain file), bad.yaml."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("OSDHUMAN_WEIGHTS", "OSDHUMAN_BASE_MODEL", "OSDHUMAN_HFIE_ENCODER"):
        monkeypatch.delenv(name, raising=False)
    rng = np.random.default_rng(0)
    for d in ("good", "empty", "corrupt", "emptyweights"):
        (tmp_path / d).mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "good" / f"img{i}.png")
        (tmp_path / "corrupt" / f"bad{i}.png").write_bytes(b"not an image")
    (tmp_path / "a.txt").write_text("hi")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n  b: :")
    (tmp_path / "binary.yaml").write_bytes(bytes(rng.integers(128, 256, 300, dtype=np.uint8)))  # not UTF-8
    (tmp_path / "dup.yaml").write_text("batch_size: 2\nseed: 1\nbatch_size: 3\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "random.pt").write_bytes(bytes(rng.integers(0, 128, 4000, dtype=np.uint8)))
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "dir.jpg").mkdir()
    return tmp_path


def _run(argv: list[str], qa, capsys) -> tuple[int, str]:
    argv = [a.replace("{Q}", str(qa)) for a in argv]
    before = sorted(p.relative_to(qa) for p in (qa / "good").rglob("*"))
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert sorted(p.relative_to(qa) for p in (qa / "good").rglob("*")) == before  # inputs untouched
    return rc, err


# (argv, expected exit code, substrings the error line must contain); {Q} = the fixture folder
USAGE_CASES = {
    # nonexistent input / file where a folder is expected / empty folder
    "degrade-missing": (["degrade", "{Q}/nope", "-o", "{Q}/o"], 2, ["{Q}/nope", "not a folder"]),
    "degrade-file": (["degrade", "{Q}/a.txt", "-o", "{Q}/o"], 2, ["{Q}/a.txt", "not a folder"]),
    "restore-missing": (["restore", "{Q}/nope", "-o", "{Q}/o", "--base-model", "tiny"], 2,
                        ["{Q}/nope", "no such file or folder"]),
    "restore-empty": (["restore", "{Q}/empty", "-o", "{Q}/o", "--base-model", "tiny"], 2,
                      ["{Q}/empty", "no image files"]),
    "evaluate-missing": (["evaluate", "--method", "A={Q}/nope", "-o", "{Q}/o", "--metrics", "offline"], 2,
                         ["{Q}/nope", "not a folder"]),
    "evaluate-empty-ref": (["evaluate", "--method", "A={Q}/good", "--reference", "{Q}/empty", "-o", "{Q}/o",
                            "--metrics", "offline"], 2, ["--reference", "{Q}/empty", "no image files"]),
    "dq-file": (["dataset-quality", "--dataset", "A={Q}/a.txt", "-o", "{Q}/o", "--metrics", "offline"], 2,
                ["{Q}/a.txt", "not a folder"]),
    "dq-empty": (["dataset-quality", "--dataset", "A={Q}/empty", "-o", "{Q}/o", "--metrics", "offline"], 2,
                 ["--dataset A", "{Q}/empty", "no image files"]),
    "build-missing": (["build-dataset", "--source", "folder:{Q}/nope", "-o", "{Q}/o"], 2, ["{Q}/nope", "does not exist"]),
    "build-file": (["build-dataset", "--source", "folder:{Q}/a.txt", "-o", "{Q}/o"], 2, ["{Q}/a.txt", "is not a directory"]),
    # output equal to / inside the input, or an existing FILE
    "degrade-out-in": (["degrade", "{Q}/good", "-o", "{Q}/good/sub"], 2, ["{Q}/good/sub", "inside"]),
    "degrade-out-file": (["degrade", "{Q}/good", "-o", "{Q}/a.txt"], 2, ["{Q}/a.txt", "not a folder"]),
    "restore-out-same": (["restore", "{Q}/good", "-o", "{Q}/good", "--base-model", "tiny"], 2,
                         ["{Q}/good/img0.png", "overwrite an input"]),
    "restore-out-in-recursive": (["restore", "{Q}/good", "-o", "{Q}/good/r", "--recursive", "--base-model", "tiny"], 2,
                                 ["{Q}/good/r", "inside"]),
    "restore-out-file": (["restore", "{Q}/good", "-o", "{Q}/a.txt", "--base-model", "tiny"], 2, ["{Q}/a.txt", "not a folder"]),
    "evaluate-out-file": (["evaluate", "--method", "A={Q}/good", "-o", "{Q}/a.txt", "--metrics", "offline"], 2,
                          ["{Q}/a.txt", "not a folder"]),
    "dq-out-in": (["dataset-quality", "--dataset", "A={Q}/good", "-o", "{Q}/good/q", "--metrics", "offline"], 2,
                  ["{Q}/good", "inside"]),
    "build-out-in": (["build-dataset", "--source", "folder:{Q}/good", "-o", "{Q}/good/ds"], 2, ["{Q}/good/ds", "inside"]),
    "build-out-file": (["build-dataset", "--source", "folder:{Q}/good", "-o", "{Q}/a.txt"], 2, ["{Q}/a.txt", "not a"]),
    "train-out-file": (["train", "--config", TINY, "-o", "{Q}/a.txt", "--set", "data.source={Q}/good"], 2,
                       ["{Q}/a.txt", "not a folder"]),
    "train-out-is-data": (["train", "--config", TINY, "-o", "{Q}/good", "--set", "data.source={Q}/good"], 2,
                          ["{Q}/good", "inside"]),
    # --set / --config mistakes
    "set-no-equals": (["degrade", "{Q}/good", "-o", "{Q}/o", "--set", "stage2"], 2, ["'stage2'", "KEY=VALUE"]),
    "set-unknown-key": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--set", "nokey=1"], 2,
                        ["unknown key", "nokey"]),
    "set-wrong-type": (["train", "--config", TINY, "-o", "{Q}/o", "--set", "batch_size=x"], 2,
                       ["batch_size", "expected an integer"]),
    "config-missing": (["evaluate", "--method", "A={Q}/good", "-o", "{Q}/o", "--config", "{Q}/none.yaml"], 2,
                       ["{Q}/none.yaml", "cannot read"]),
    "config-invalid": (["build-dataset", "--source", "folder:{Q}/good", "-o", "{Q}/o", "--config", "{Q}/bad.yaml"], 2,
                       ["{Q}/bad.yaml", "not valid YAML", "line 2"]),
    # NAME=DIR specs
    "spec-no-equals": (["evaluate", "--method", "{Q}/good", "-o", "{Q}/o"], 2, ["--method", "NAME=DIR"]),
    "spec-empty-name": (["dataset-quality", "--dataset", "={Q}/good", "-o", "{Q}/o"], 2, ["--dataset", "NAME=DIR"]),
    "spec-duplicate": (["evaluate", "--method", "A={Q}/good", "--method", "A ={Q}/empty", "-o", "{Q}/o"], 2,
                       ["'A'", "twice"]),
    "source-bad-kind": (["build-dataset", "--source", "nokind:{Q}/good", "-o", "{Q}/o"], 2, ["nokind", "unknown kind"]),
    "source-bad-arity": (["build-dataset", "--source", "coco:{Q}/good", "-o", "{Q}/o"], 2, ["coco:ANNOTATIONS.json:IMAGE_DIR"]),
    # numbers and devices
    "degrade-batch-0": (["degrade", "{Q}/good", "-o", "{Q}/o", "--batch-size", "0"], 2, ["--batch-size", ">= 1"]),
    "degrade-seed-neg": (["degrade", "{Q}/good", "-o", "{Q}/o", "--seed", "-1"], 2, ["--seed", ">= 0"]),
    "evaluate-batch-0": (["evaluate", "--method", "A={Q}/good", "-o", "{Q}/o", "--batch-size", "0"], 2, ["--batch-size"]),
    "dq-max-images-neg": (["dataset-quality", "--dataset", "A={Q}/good", "-o", "{Q}/o", "--max-images", "-3"], 2,
                          ["--max-images", ">= 0"]),
    "build-limit-neg": (["build-dataset", "--source", "folder:{Q}/good", "-o", "{Q}/o", "--limit", "-1"], 2, ["--limit"]),
    "restore-device": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--device", "gpu0"], 2,
                       ["--device", "gpu0"]),
    "evaluate-device": (["evaluate", "--method", "A={Q}/good", "-o", "{Q}/o", "--device", "bogus"], 2, ["--device", "bogus"]),
    "build-device": (["build-dataset", "--source", "folder:{Q}/good", "-o", "{Q}/o", "--device", "bogus"], 2,
                     ["--device", "bogus"]),
    # output names stay one file name inside the output folder (nothing written anywhere)
    "restore-suffix-escape": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--suffix", "/../../victim"],
                              2, ["--suffix '/../../victim'", "path separator"]),
    "restore-suffix-subfolder": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--suffix", "x/y"], 2,
                                 ["--suffix 'x/y'", "path separator"]),
    "restore-suffix-dotdot": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--suffix", ".."], 2,
                              ["--suffix '..'", "'..'"]),
    "restore-suffix-control": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--suffix", "a\nb"], 2,
                               ["--suffix 'a\\nb'", "control character"]),
    "restore-suffix-from-set": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--set", "suffix=..\\v"],
                                2, ["--suffix", "path separator"]),
    # explicit restore arguments that are not image files
    "restore-arg-dangling": (["restore", "{Q}/dangling.jpg", "-o", "{Q}/o", "--base-model", "tiny"], 2,
                             ["{Q}/dangling.jpg", "dangling_link"]),
    "restore-arg-loop": (["restore", "{Q}/loop.jpg", "-o", "{Q}/o", "--base-model", "tiny"], 2, ["{Q}/loop.jpg", "link_loop"]),
    "restore-arg-dir": (["restore", "{Q}/dir.jpg", "-o", "{Q}/o", "--base-model", "tiny"], 2,
                        ["{Q}/dir.jpg", "directory", "no image files"]),
    # a config file that is not text, or names a key twice
    **{f"config-binary-{c}": ([*argv, "--config", "{Q}/binary.yaml"], 2, ["{Q}/binary.yaml", "not a text (UTF-8) file"])
       for c, argv in {
           "degrade": ["degrade", "{Q}/good", "-o", "{Q}/o"],
           "restore": ["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny"],
           "evaluate": ["evaluate", "--method", "A={Q}/good", "-o", "{Q}/o"],
           "dataset-quality": ["dataset-quality", "--dataset", "A={Q}/good", "-o", "{Q}/o"],
           "build-dataset": ["build-dataset", "--source", "folder:{Q}/good", "-o", "{Q}/o"],
           "train": ["train", "-o", "{Q}/o"]}.items()},
    "config-duplicate-key": (["train", "--config", "{Q}/dup.yaml", "-o", "{Q}/o"], 2,
                             ["{Q}/dup.yaml", "line 3", "'batch_size' given twice (first on line 1)"]),
    # NaN / inf where an integer belongs
    "set-int-nan": (["train", "--config", TINY, "-o", "{Q}/o", "--set", "batch_size=nan"], 2,
                    ["batch_size", "expected an integer, got 'nan'"]),
    "set-seed-nan": (["train", "--config", TINY, "-o", "{Q}/o", "--set", "seed=nan"], 2, ["seed", "expected an integer"]),
    "set-scale-nan": (["degrade", "{Q}/good", "-o", "{Q}/o", "--set", "scale=.nan"], 2, ["scale", "expected an integer"]),
    "set-tile-inf": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--set", "tile_size=inf"], 2,
                     ["tile_size", "expected an integer"]),
    "set-seed-huge": (["train", "--config", TINY, "-o", "{Q}/o", "--set", "seed=123456789012345678901234567890"], 2,
                      ["seed", "must be <= 4294967295", "123456789012345678901234567890"]),
    # training sizes the model cannot take, a device this machine lacks
    "train-size-65": (["train", "--config", TINY, "-o", "{Q}/o", "--set", "data.source={Q}/good", "--set", "data.size=65"],
                      2, ["data.size: must be a multiple of 8, got 65 (nearest: 64)"]),
    "train-size-8": (["train", "--config", TINY, "-o", "{Q}/o", "--set", "data.source={Q}/good", "--set", "data.size=8"],
                     2, ["data.size: must be >= 16, got 8"]),
    "train-device-cuda": (["train", "--config", TINY, "-o", "{Q}/o", "--set", "data.source={Q}/good", "--device", "cuda"],
                          2, ["--device cuda", "CUDA is not available"]),
    "train-config-device-cuda": (["train", "--config", TINY, "-o", "{Q}/o", "--set", "data.source={Q}/good",
                                  "--set", "device=cuda"], 2, ["device cuda", "CUDA is not available"]),
    # flags range-checked as config values are
    "degrade-seed-2**32": (["degrade", "{Q}/good", "-o", "{Q}/o", "--seed", "4294967296"], 2,
                           ["--seed must be <= 4294967295, got 4294967296"]),
    "degrade-seed-30-digits": (["degrade", "{Q}/good", "-o", "{Q}/o", "--seed", "9" * 30], 2, ["--seed must be <= 4294967295"]),
    "build-workers-neg": (["build-dataset", "--source", "folder:{Q}/good", "-o", "{Q}/o", "--workers", "-2"], 2,
                          ["--workers must be >= 0, got -2"]),
    # detector flags that would be ignored, detector weights that cannot be loaded
    "detector-without-people": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--detector", "yolo"], 2,
                                ["--detector needs --people"]),
    "detector-weights-without-people": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny",
                                         "--detector-weights", "{Q}/random.pt"], 2, ["--detector-weights needs --people"]),
    "detector-yaml-weights": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--people", "--detector", "yolo",
                               "--detector-weights", "{Q}/empty.yaml"], 2, ["{Q}/empty.yaml", "not trained weights"]),
    "detector-random-weights": (["build-dataset", "--source", "folder:{Q}/good", "-o", "{Q}/o", "--detector", "yolo",
                                 "--detector-weights", "{Q}/random.pt"], 2, ["{Q}/random.pt", "not a YOLO weights file"]),
    # weights
    "weights-random-bytes": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--weights", "{Q}/random.pt"], 2,
                             ["{Q}/random.pt", "not a weights file"]),
    "weights-empty": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--weights", "{Q}/emptyweights"], 2,
                      ["{Q}/emptyweights", "no weights recognised", "an empty folder"]),
    "hfie-not-a-checkpoint": (["restore", "{Q}/good", "-o", "{Q}/o", "--base-model", "tiny", "--hfie-encoder", "{Q}/a.txt"],
                              2, ["{Q}/a.txt", "cannot be read as a torch checkpoint"]),
}


NEEDS = {  # rows that need something this machine may lack
    "train-device-cuda": "no-cuda", "train-config-device-cuda": "no-cuda",
    "detector-yaml-weights": "ultralytics", "detector-random-weights": "ultralytics",
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_bad_command_line_is_one_clear_line(case, qa, capsys):
    import importlib.util

    import torch

    if NEEDS.get(case) == "no-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if NEEDS.get(case) == "ultralytics" and importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed")
    argv, code, needles = USAGE_CASES[case]
    rc, err = _run([*argv, "--no-progress"] if argv[0] not in ("train",) else argv, qa, capsys)
    assert rc == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"osdhuman {argv[0]}: "), err
    for n in needles:
        assert n.replace("{Q}", str(qa)) in lines[0], (n, err)
    assert not (qa / "o").exists()  # refused before any work


@pytest.mark.parametrize("argv", [
    ["degrade", "{Q}/corrupt", "-o", "{Q}/o"],
    ["restore", "{Q}/corrupt", "-o", "{Q}/o", "--base-model", "tiny"],
])
def test_folder_of_only_corrupt_files_is_recorded_per_file(argv, qa, capsys):
    """A batch of unreadable files: each one named with its reason, a report written, exit 1."""
    rc, err = _run([*argv, "--no-progress"], qa, capsys)
    assert rc == 1
    for i in range(3):
        assert err.count(str(qa / "corrupt" / f"bad{i}.png")) == 1, err  # once each, not twice
    assert "not_an_image" in err
    assert any((qa / "o").glob("*.json*"))  # skipped.jsonl / restore_report.json


def _tiny_run(qa) -> None:
    rc = main(["train", "--config", TINY, "-o", str(qa / "run"), "--max-steps", "1",
               "--set", f"data.source={qa / 'good'}", "--set", "checkpoint.every=1", "--set", "logging.val_every=0"])
    assert rc == 0


def test_corrupt_weights_and_checkpoints_name_the_file(qa, capsys):
    _tiny_run(qa)
    capsys.readouterr()
    weights = qa / "run" / "final" / "osdhuman_weights.safetensors"
    weights.write_bytes(b"garbage")
    rc, err = _run(["restore", "{Q}/good", "-o", "{Q}/o", "--weights", str(weights.parent), "--no-progress"], qa, capsys)
    assert rc == 2 and str(weights) in err and "not a readable safetensors file" in err

    (ckpt,) = (qa / "run" / "checkpoints").glob("step-*")
    (ckpt / "trainable.safetensors").write_bytes(b"garbage")
    rc, err = _run(["train", "--config", TINY, "-o", "{Q}/run", "--max-steps", "2", "--resume", "latest",
                    "--set", "data.source={Q}/good"], qa, capsys)
    assert rc == 1 and str(ckpt / "trainable.safetensors") in err and "corrupt:" in err


def test_train_data_that_cannot_be_read(qa, capsys):
    rc, err = _run(["train", "--config", TINY, "-o", "{Q}/run", "--max-steps", "1",
                    "--set", "data.source={Q}/corrupt"], qa, capsys)
    assert rc == 1 and f"{qa / 'corrupt'}: none of the 3 images can be read" in err


def test_resume_latest_without_checkpoints_says_it_starts_fresh(qa, capsys):
    rc, err = _run(["train", "--config", TINY, "-o", "{Q}/run", "--max-steps", "1", "--resume", "latest",
                    "--set", "data.source={Q}/good", "--set", "logging.val_every=0"], qa, capsys)
    assert rc == 0 and "no checkpoint in" in err and "starting a new run" in err


def test_path_errors_during_work_are_one_line_and_bugs_too_unless_debugging(qa, capsys, monkeypatch):
    from osdhuman.cli import degrade

    def gone(args):
        raise FileNotFoundError(2, "No such file or directory", str(qa / "vanished.png"))

    monkeypatch.setattr(degrade, "run", gone)
    assert main(["degrade", str(qa / "good"), "-o", str(qa / "o")]) == 1
    assert capsys.readouterr().err.strip() == f"osdhuman degrade: error: {qa / 'vanished.png'}: No such file or directory"

    def bug(args):
        raise KeyError("a programming error")

    monkeypatch.setattr(degrade, "run", bug)
    assert main(["degrade", str(qa / "good"), "-o", str(qa / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "OSDHUMAN_DEBUG=1" in err
    monkeypatch.setenv("OSDHUMAN_DEBUG", "1")  # the way to the traceback
    with pytest.raises(KeyError):
        main(["degrade", str(qa / "good"), "-o", str(qa / "o")])
