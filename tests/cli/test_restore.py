"""`osdhuman restore` end to end on the tiny preset."""

import numpy as np
import pytest
from PIL import Image

from osdhuman.cli import main


@pytest.fixture()
def photos(tmp_path):
    from skimage import data

    d = tmp_path / "in"
    d.mkdir()
    img = data.astronaut()
    Image.fromarray(img[:88, :72]).save(d / "person.png")
    Image.fromarray(img[300:370, 200:264]).save(d / "face.jpg")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return d


def test_restore_folder_with_corrupt_file(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    rc = main(["restore", str(photos), "-o", str(out), "--base-model", "tiny", "--tile", "64",
               "--tile-overlap", "16", "--ext", "png", "--color-fix", "wavelet", "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["face.png", "person.png"]
    assert np.asarray(Image.open(out / "person.png")).shape == (88, 72, 3)
    text = capsys.readouterr()
    assert "corrupt.jpg" in text.err and "UNTRAINED" in text.out
    cfg = (out / "restore_config.yaml").read_text()
    assert "color_fix: wavelet" in cfg and "tile_size: 64" in cfg and "base_model: tiny" in cfg
    assert (photos / "corrupt.jpg").read_bytes() == b"\xff\xd8\xff\xe0 truncated jpeg"


def test_exit_code_1_when_nothing_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "bad"
    d.mkdir()
    (d / "x.png").write_bytes(b"nope")
    assert main(["restore", str(d), "-o", str(tmp_path / "o"), "--base-model", "tiny", "--no-progress"]) == 1


def test_no_weights_configured_is_a_usage_error(tmp_path, capsys, monkeypatch):
    for name in ("OSDHUMAN_WEIGHTS", "OSDHUMAN_BASE_MODEL", "OSDHUMAN_HFIE_ENCODER"):
        monkeypatch.delenv(name, raising=False)
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "OSDHUMAN_WEIGHTS" in err and "--base-model tiny" in err


def test_overwriting_an_input_is_refused(photos, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["restore", str(photos / "person.png"), "-o", str(photos), "--base-model", "tiny", "--no-progress"])
    assert rc == 2 and "overwrite an input" in capsys.readouterr().err


def test_missing_base_model_folder(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["restore", str(photos), "-o", str(tmp_path / "o"), "--base-model", str(tmp_path / "nosd"), "--no-progress"])
    assert rc == 2
    assert "huggingface-cli download" in capsys.readouterr().err


def test_restore_with_saved_weights_dir(photos, tmp_path, monkeypatch):
    import torch

    from osdhuman.models import OSDHumanConfig, build_osdhuman, load_osdhuman

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False))
    with torch.no_grad():
        for q in m.generator_parameters():
            q.add_(0.05 * torch.randn_like(q))
    m.save_weights(tmp_path / "w")
    monkeypatch.setenv("OSDHUMAN_WEIGHTS", str(tmp_path / "w"))  # the env var stands in for --weights
    out = tmp_path / "o"
    rc = main(["restore", str(photos / "person.png"), "-o", str(out), "--color-fix", "none", "--no-progress"])
    assert rc == 0
    got = np.asarray(Image.open(out / "person.png"))
    lq = torch.from_numpy(np.asarray(Image.open(photos / "person.png")).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref = load_osdhuman(tmp_path / "w").eval()(lq).image  # 88 x 72: already a multiple of 8
    ref = ((ref[0].permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)
    assert np.abs(got.astype(int) - ref).max() <= 1
