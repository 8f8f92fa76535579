"""`osdhuman evaluate --ablation`: the paper's ablation layout (Tables 3 and 4), one row per run
from earlier evaluate outputs (a Val and a Test evaluation per run), best per column in bold."""

from __future__ import annotations

import pytest
from PIL import Image, ImageFilter

from osdhuman.cli import main

skdata = pytest.importorskip("skimage.data")


def _evaluate(out, method_dir, title, capsys, reference=None, metrics="psnr_y,ssim_y"):
    argv = ["evaluate", "--method", f"run={method_dir}", "--metrics", metrics, "--title", title,
            "-o", str(out), "--device", "cpu", "--no-progress"]
    if reference:
        argv += ["--reference", str(reference)]
    assert main(argv) == 0
    capsys.readouterr()
    return out


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("abl")
    photos = {"astro": skdata.astronaut()[100:228, 150:278], "cat": skdata.chelsea()[:128, 100:228]}
    dirs = {n: tmp / n for n in ("hq", "sharp", "blurry", "test_sharp", "test_blurry")}
    for d in dirs.values():
        d.mkdir()
    for k, v in photos.items():
        Image.fromarray(v).save(dirs["hq"] / f"{k}.png")
        Image.fromarray(v).filter(ImageFilter.GaussianBlur(0.6)).save(dirs["sharp"] / f"{k}.png")
        Image.fromarray(v).filter(ImageFilter.GaussianBlur(2.0)).save(dirs["blurry"] / f"{k}.png")
        Image.fromarray(v[::-1]).save(dirs["test_sharp"] / f"{k}.png")
        Image.fromarray(v[::-1]).filter(ImageFilter.GaussianBlur(2.0)).save(dirs["test_blurry"] / f"{k}.png")
    return tmp, dirs


def test_ablation_table_has_one_row_per_run_and_groups_by_evaluation(evals, capsys):
    tmp, d = evals
    a_val = _evaluate(tmp / "a_val", d["sharp"], "PERSONA-Val", capsys, reference=d["hq"])
    b_val = _evaluate(tmp / "b_val", d["blurry"], "PERSONA-Val", capsys, reference=d["hq"])
    a_test = _evaluate(tmp / "a_test", d["test_sharp"], "PERSONA-Test", capsys, metrics="laplacian_var")
    b_test = _evaluate(tmp / "b_test", d["test_blurry"], "PERSONA-Test", capsys, metrics="laplacian_var")
    out = tmp / "table"
    rc = main(["evaluate", "--ablation", f"DAPE={b_val},{b_test}", "--ablation", f"HFIE (LQ)={a_val},{a_test}",
               "--ablation", f"Null={b_val}", "--row-header", "Prompt extractor", "-o", str(out)])
    assert rc == 0
    table = (out / "table_ablation.md").read_text()
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| Prompt extractor | PERSONA-Val PSNR")
    assert "PERSONA-Test" in lines[0] and lines[0].index("PERSONA-Val") < lines[0].index("PERSONA-Test")
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in lines[2:]}
    assert list(rows) == ["DAPE", "HFIE (LQ)", "Null"]  # rows = runs, in the order given
    assert rows["HFIE (LQ)"][0].startswith("**")  # the sharper run has the best PSNR
    assert not rows["DAPE"][0].startswith("**")
    assert rows["Null"][2] == "n/a"  # no Test evaluation for that run
    assert "ablation table written" in capsys.readouterr().out


def test_ablation_inputs_are_checked_with_one_line(evals, capsys, tmp_path):
    _, d = evals
    rc = main(["evaluate", "--ablation", f"X={d['hq']}", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not an `osdhuman evaluate` output folder" in err[0]
    rc = main(["evaluate", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "--method" in err[0] and "--ablation" in err[0]
