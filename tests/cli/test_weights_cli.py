"""`osdhuman export` / `restore --weights` with every format, through the command line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from osdhuman.cli import main

pytestmark = pytest.mark.usefixtures("no_weights_env")


@pytest.fixture()
def photo(tmp_path):
    from skimage import data

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(data.astronaut()[:96, :80]).save(d / "person.png")
    return d / "person.png"


@pytest.fixture()
def run_final(tmp_path):
    """A trained-looking weights folder, as `osdhuman train` writes RUN/final/."""
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    m = build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for q in m.generator_parameters():
            q.add_(0.05 * torch.randn(q.shape, generator=g))
    return m.save_weights(tmp_path / "run" / "final")


def _restore(photo, out, weights, *extra):
    return main(["restore", str(photo), "-o", str(out), "--weights", str(weights), "--no-progress", *extra])


def test_restore_with_the_export_equals_restore_with_the_run_byte_for_byte(photo, run_final, tmp_path, capsys):
    assert main(["export", str(run_final), "-o", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "pytorch_lora_weights.safetensors").is_file()
    assert _restore(photo, tmp_path / "a", run_final) == 0
    assert _restore(photo, tmp_path / "b", tmp_path / "exp") == 0
    err = capsys.readouterr().err
    assert "weights: osdhuman-export" in err and "weights: osdhuman from" in err  # one summary line each
    assert (tmp_path / "a" / "person.png").read_bytes() == (tmp_path / "b" / "person.png").read_bytes()
    report = json.loads((tmp_path / "b" / "restore_report.json").read_text())
    assert report["untrained_model"] is True  # tiny is a random preset, even with weights


def test_no_fuse_gives_the_same_image_within_one_level(photo, run_final, tmp_path):
    assert _restore(photo, tmp_path / "a", run_final) == 0
    assert _restore(photo, tmp_path / "b", run_final, "--no-fuse") == 0
    a = np.asarray(Image.open(tmp_path / "a" / "person.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "b" / "person.png")).astype(int)
    assert np.abs(a - b).max() <= 1
    assert "fuse: false" in (tmp_path / "b" / "restore_config.yaml").read_text()


@pytest.mark.parametrize("case", ["wrong_shape", "unknown_key", "pickle_class", "empty"])
def test_bad_weights_are_one_line_exit_2_before_any_image(photo, run_final, tmp_path, capsys, case):
    exp = tmp_path / "exp"
    assert main(["export", str(run_final), "-o", str(exp)]) == 0
    capsys.readouterr()
    lora = exp / "pytorch_lora_weights.safetensors"
    target = lora
    if case in ("wrong_shape", "unknown_key"):
        sd = load_file(str(lora))
        if case == "wrong_shape":
            key = next(k for k in sd if k.endswith("attn1.to_q.lora_A.weight"))
            sd[key] = torch.zeros(4, 3)
        else:
            key = "unet.down_blocks.0.not_a_layer.lora_A.weight"
            sd[key] = torch.zeros(4, 3)
        save_file(sd, str(lora))
    elif case == "pickle_class":
        from osdhuman.models import OSDHumanConfig

        target = tmp_path / "evil.pth"
        torch.save({"x": OSDHumanConfig()}, target)
        key = "OSDHumanConfig"
    else:
        target = tmp_path / "empty.safetensors"
        target.write_bytes(b"")
        key = "empty file"
    out = tmp_path / "o"
    rc = _restore(photo, out, exp if case in ("wrong_shape", "unknown_key") else target)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "Traceback" not in err[0]
    line = err[0]
    assert str(target if case != "unknown_key" else lora) in line or str(exp) in line
    assert key.replace(".lora_A.weight", "") in line or key in line
    assert not (out / "person.png").exists()


def test_export_refuses_a_non_empty_folder_and_reads_every_format_restore_reads(run_final, tmp_path, capsys):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(run_final), "-o", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main(["export", str(run_final), "-o", str(tmp_path / "e1")]) == 0
    assert main(["export", str(tmp_path / "e1"), "-o", str(tmp_path / "e2")]) == 0  # export of an export
    a = load_file(str(tmp_path / "e1" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "e2" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_encoder_cli(tmp_path, capsys):
    from osdhuman.models import TINY_SWIN, SwinEncoder
    from osdhuman.models.loading import seeded

    with seeded(1):
        enc = SwinEncoder(**TINY_SWIN)
    sd = {("visual_encoder." + k[5:] if k.startswith("swin.") else k): v for k, v in enc.state_dict().items()}
    torch.save({"model": sd}, tmp_path / "ram.pth")
    assert main(["export-encoder", str(tmp_path / "ram.pth"), "-o", str(tmp_path / "enc.safetensors")]) == 0
    assert "--hfie-encoder" in capsys.readouterr().out
    assert main(["export-encoder", str(tmp_path / "ram.pth"), "-o", str(tmp_path / "enc.safetensors")]) == 2
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert main(["export-encoder", str(tmp_path / "bad.pth"), "-o", str(tmp_path / "e2.safetensors")]) == 2


def _sd_folder(tmp_path, with_text=True):
    from osdhuman.models.loading import build_sd_components

    unet, vae, te, tok = build_sd_components("tiny", seed=3, with_text=True)
    folder = tmp_path / "sd"
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    if with_text:
        te.save_pretrained(folder / "text_encoder")
        tok.save_pretrained(folder / "tokenizer")
    return folder


def test_real_base_without_weights_warns_every_run_and_loads_no_text_encoder(photo, tmp_path, capsys, monkeypatch):
    import transformers

    import osdhuman.models.config as model_config
    from osdhuman.models import TINY_SWIN, SwinEncoder
    from osdhuman.models.loading import seeded

    folder = _sd_folder(tmp_path)
    monkeypatch.setattr(model_config, "SWIN_L_RAM", dict(TINY_SWIN))  # test double: a toy-width RAM encoder
    with seeded(1):
        enc = SwinEncoder(**TINY_SWIN)
    sd = {("visual_encoder." + k[5:] if k.startswith("swin.") else k): v for k, v in enc.state_dict().items()}
    torch.save({"model": sd}, tmp_path / "ram.pth")

    def _no_clip(*a, **k):
        raise AssertionError("the CLIP text encoder was loaded for an HFIE model")

    monkeypatch.setattr(transformers.CLIPTextModel, "from_pretrained", _no_clip)
    for run in ("a", "b"):
        rc = main(["restore", str(photo), "-o", str(tmp_path / run), "--base-model", str(folder),
                   "--hfie-encoder", str(tmp_path / "ram.pth"), "--no-progress"])
        assert rc == 0
        err = capsys.readouterr().err
        assert "NO trained OSDHuman weights" in err
        assert json.loads((tmp_path / run / "restore_report.json").read_text())["untrained_model"] is True


def test_hfie_without_ram_checkpoint_says_it_is_required(photo, tmp_path, capsys):
    folder = _sd_folder(tmp_path, with_text=False)
    rc = main(["restore", str(photo), "-o", str(tmp_path / "o"), "--base-model", str(folder), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "ram_swin_large_14m.pth" in err and "export-encoder" in err
