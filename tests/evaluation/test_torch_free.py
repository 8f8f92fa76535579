"""`osdhuman evaluate` and `osdhuman dataset-quality` with offline metrics run as whole
processes without importing torch (numpy / numba / OpenCV only): each command runs in a fresh
interpreter with a torch that reports any import (the ``run_cli_without_torch`` fixture)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

skdata = pytest.importorskip("skimage.data")


@pytest.fixture()
def pairs(tmp_path):
    """Four 128x128 photo crops (HQ) and blurred JPEG copies (the 'restored' method)."""
    hq, lq = tmp_path / "hq", tmp_path / "lq"
    hq.mkdir()
    lq.mkdir()
    photos = {"astro": skdata.astronaut()[100:228, 150:278], "cat": skdata.chelsea()[:128, 100:228],
              "cup": skdata.coffee()[:128, 200:328], "rocket": skdata.rocket()[100:228, 100:228]}
    for k, v in photos.items():
        Image.fromarray(v).save(hq / f"{k}.png")
        Image.fromarray(v).filter(ImageFilter.GaussianBlur(1.0)).save(lq / f"{k}.jpg", quality=50)
    return tmp_path


@pytest.mark.parametrize("backend", ["offline", "auto"])
def test_evaluate_offline_never_imports_torch(pairs, backend, run_cli_without_torch):
    out = pairs / f"eval-{backend}"
    argv = ["evaluate", "--method", f"M={pairs / 'lq'}", "--reference", str(pairs / "hq"), "--metrics", "offline",
            "--backend", backend, "-o", str(out), "--no-progress"]
    rc, log, imports = run_cli_without_torch(argv)  # auto: pyiqa's weights are absent -> offline
    assert rc == 0, log
    assert imports == [], log
    settings = json.loads((out / "settings.json").read_text())
    assert settings["device"] == "cpu"
    assert {r["backend"] for r in settings["metrics"].values()} == {"offline"}
    summary = json.loads((out / "summary.json").read_text())["M"]
    assert set(summary) == {"psnr_y", "ssim_y", "niqe", "brisque", "piqe"}
    assert all(np.isfinite(v) for v in summary.values())
    assert 15 < summary["psnr_y"] < 45 and 0 < summary["ssim_y"] < 1


def test_dataset_quality_offline_never_imports_torch(pairs, run_cli_without_torch):
    out = pairs / "dq"
    argv = ["dataset-quality", "--dataset", f"HQ={pairs / 'hq'}", "--dataset", f"LQ={pairs / 'lq'}",
            "--metrics", "niqe,brisque,piqe", "--backend", "offline", "-o", str(out), "--no-progress"]
    rc, log, imports = run_cli_without_torch(argv)
    assert rc == 0 and imports == [], log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["LQ"]["piqe"] != summary["HQ"]["piqe"] and np.isfinite(summary["LQ"]["niqe"])


def test_the_trap_catches_a_torch_import(pairs, run_cli_without_torch):
    """The check itself: a command that does need torch (a pyiqa metric) is caught."""
    pytest.importorskip("pyiqa")
    argv = ["evaluate", "--method", f"M={pairs / 'lq'}", "--metrics", "piqe", "--backend", "pyiqa",
            "-o", str(pairs / "eval-pyiqa"), "--no-progress"]
    rc, log, imports = run_cli_without_torch(argv)
    assert imports, log
