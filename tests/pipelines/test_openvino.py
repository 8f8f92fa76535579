"""The OpenVINO export and backend on the tiny preset: `export --format openvino`, then
`restore` with it against the PyTorch restore of the same weights, and the bad inputs."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("openvino")

from osdhuman.cli import main

TILE = ["--tile", "64", "--tile-overlap", "16", "--no-progress", "--ext", "png"]


def _trained_like(seed: int = 0):
    """The tiny preset with every trained tensor moved off its initial value (LoRA B non-zero)."""
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    m = build_osdhuman(OSDHumanConfig(base_model="tiny"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.generator_parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return m


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w") / "weights"
    _trained_like().save_weights(d)
    return d


@pytest.fixture(scope="module")
def ov_fp32(weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov") / "fp32"
    assert main(["export", str(weights), "-o", str(out), "--format", "openvino", "--precision", "fp32"]) == 0
    return out


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp("in")
    Image.fromarray(data.astronaut()[40:240:2, 100:300:2][:96, :80]).save(d / "person.png")  # 80 x 96: tiled at 64
    return d / "person.png"


def _restore(src, out, *flags):
    assert main(["restore", str(src), "-o", str(out), *TILE, *flags]) == 0
    return np.asarray(Image.open(out / "person.png")).astype(np.float64)


def test_export_folder_layout(ov_fp32):
    cfg = json.loads((ov_fp32 / "osdhuman_config.json").read_text())
    assert cfg["format"] == "osdhuman-openvino" and cfg["precision"] == "fp32" and cfg["prompt"]["kind"] == "hfie"
    assert cfg["timestep"] == 999 and cfg["shapes"]["traced_tile"] == 512
    assert {"vae_encoder_stats", "vae_encoder_shared", "vae_decoder_stats", "vae_decoder_shared"} <= set(cfg["files"])
    for name in cfg["files"].values():
        assert (ov_fp32 / name).stat().st_size > 0
    assert not [p for p in ov_fp32.iterdir() if "osdtmp" in p.name]


def test_fp32_backend_matches_torch_within_1e3(weights, ov_fp32):
    """Every tile path (one tile, latent + VAE tiles with shared VAE GroupNorm statistics)."""
    from osdhuman.pipelines import RestorationPipeline
    from osdhuman.pipelines.openvino_backend import OpenVINOPipeline

    kw = {"tile_size": 64, "tile_overlap": 16}
    tp = RestorationPipeline.from_pretrained(str(weights), device="cpu", **kw)
    op = OpenVINOPipeline.from_export(ov_fp32, **kw)
    g = torch.Generator().manual_seed(1)
    for h, w in [(64, 64), (96, 80), (136, 72)]:
        x = torch.rand(3, h, w, generator=g)
        a, b = tp(x, output_type="pt").images, op(x, output_type="pt").images
        assert a.shape == b.shape == (1, 3, h, w)
        assert (a - b).abs().max().item() < 1e-3
    assert op.backend.compile_seconds > 0 and set(op.backend.step.compiled) == {((1, 4, 8, 8), (1, 77, 32))}


def test_cli_restore_detects_export_reports_backend_and_resumes(weights, ov_fp32, photo, tmp_path):
    out = tmp_path / "ov"
    a = _restore(photo, out, "--weights", str(ov_fp32))  # detected from the folder
    rep = json.loads((out / "restore_report.json").read_text())
    assert rep["backend"] == "openvino" and rep["precision"] == "fp32" and rep["work_units"] == 4
    t = _restore(photo, tmp_path / "torch", "--weights", str(weights), "--backend", "torch")
    assert json.loads((tmp_path / "torch" / "restore_report.json").read_text())["backend"] == "torch"
    assert np.abs(a - t).max() <= 1  # the same picture, to the 8-bit rounding
    b = _restore(photo, out, "--weights", str(ov_fp32))  # resume: kept, not redone
    assert json.loads((out / "restore_report.json").read_text())["kept"] and np.array_equal(a, b)


def test_people_and_upscale_run_through_the_export(ov_fp32, photo, tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"images": [{"id": 1, "file_name": photo.name}],
                                 "annotations": [{"image_id": 1, "bbox": [10, 10, 50, 80]}]}))
    out = tmp_path / "p"
    assert main(["restore", str(photo), "-o", str(out), *TILE, "--weights", str(ov_fp32), "--people",
                 "--boxes", str(boxes), "--upscale", "2"]) == 0
    assert np.asarray(Image.open(out / "person.png")).shape == (192, 160, 3)
    assert json.loads((out / "restore_report.json").read_text())["backend"] == "openvino"


def test_int8w_export_stays_close_to_fp32(weights, ov_fp32, tmp_path):
    pytest.importorskip("nncf")
    from osdhuman.pipelines.openvino_backend import OpenVINOPipeline

    out = tmp_path / "int8"
    assert main(["export", str(weights), "-o", str(out), "--format", "openvino", "--precision", "int8w"]) == 0
    assert (out / "unet_step.bin").stat().st_size < 0.5 * (ov_fp32 / "unet_step.bin").stat().st_size
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))
    a = OpenVINOPipeline.from_export(ov_fp32, tile_size=64, tile_overlap=16)(x, output_type="pt").images
    b = OpenVINOPipeline.from_export(out, tile_size=64, tile_overlap=16)(x, output_type="pt").images
    assert 0 < (a - b).abs().mean().item() < 0.05


# ---------------------------------------------------------------------------------------- bad input
def _copy(src, dst, drop=None, **config):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ov_cache", *(drop or [])))
    if config:
        cfg = json.loads((dst / "osdhuman_config.json").read_text())
        (dst / "osdhuman_config.json").write_text(json.dumps({**cfg, **config}))
    return dst


def test_export_of_another_version_or_missing_ir_is_one_line_exit_2(ov_fp32, photo, tmp_path, capsys):
    old = _copy(ov_fp32, tmp_path / "old", version=99, osdhuman_version="9.9")
    gone = _copy(ov_fp32, tmp_path / "gone", drop=["unet_step.bin"])
    for folder, words in ((old, ("format version 99", "export the weights again")), (gone, ("unet_step.bin", "missing"))):
        assert main(["restore", str(photo), "-o", str(tmp_path / "o"), *TILE, "--weights", str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words)
    assert not (tmp_path / "o").exists()


def test_backend_does_not_fit_the_weights(weights, ov_fp32, photo, tmp_path, capsys):
    assert main(["restore", str(photo), "-o", str(tmp_path / "a"), *TILE, "--weights", str(weights),
                 "--backend", "openvino"]) == 2
    assert "--format openvino" in capsys.readouterr().err
    assert main(["restore", str(photo), "-o", str(tmp_path / "b"), *TILE, "--weights", str(ov_fp32),
                 "--backend", "torch"]) == 2
    assert "--backend openvino" in capsys.readouterr().err


def test_openvino_folder_given_to_export(ov_fp32, tmp_path, capsys):
    assert main(["export", str(ov_fp32), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "OpenVINO export (inference only" in err
    from osdhuman.models import WeightsError
    from osdhuman.models.pretrained import load_pretrained

    with pytest.raises(WeightsError, match="train and export read the PyTorch weights"):  # train's init_weights
        load_pretrained(str(ov_fp32))


def test_without_the_package_the_extra_is_named(weights, photo, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # what a machine without the extra sees
    assert main(["restore", str(photo), "-o", str(tmp_path / "o"), *TILE, "--weights", str(weights),
                 "--backend", "openvino"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "osdhuman[openvino]" in err
    assert main(["export", str(weights), "-o", str(tmp_path / "e"), "--format", "openvino"]) == 2
    assert "osdhuman[openvino]" in capsys.readouterr().err


def test_bf16_on_a_cpu_without_it_falls_back_to_fp32_once(ov_fp32, tmp_path, monkeypatch):
    import osdhuman.pipelines.openvino_backend as ob

    folder = _copy(ov_fp32, tmp_path / "bf16", precision="bf16")  # fp32 weights, bf16 requested
    monkeypatch.setattr(ob, "cpu_supports_bf16", lambda core=None: False)  # a CPU without AVX-512 BF16 / AMX
    said = []
    pipe = ob.OpenVINOPipeline.from_export(folder, tile_size=64, tile_overlap=16, log=said.append)
    pipe(torch.rand(3, 96, 80), output_type="pt")
    assert len(said) == 1 and "runs in float32" in said[0]
    assert pipe.backend.compute == "f32" and pipe.precision_name == "bf16 (computed in fp32)"


def test_the_app_offers_the_export(ov_fp32, photo, tmp_path, monkeypatch):
    from osdhuman.app.config import AppConfig
    from osdhuman.app.restore_tab import OPENVINO, TINY, RestoreService

    for name in ("OSDHUMAN_WEIGHTS", "OSDHUMAN_BASE_MODEL", "OSDHUMAN_HFIE_ENCODER"):
        monkeypatch.delenv(name, raising=False)
    svc = RestoreService(AppConfig(weights=str(ov_fp32), work_dir=str(tmp_path)))
    assert svc.models() == [OPENVINO, TINY] and "OpenVINO" in svc.banner()
    (view,), report = svc.run([str(photo)], OPENVINO, "whole image", tile=64)
    assert view.after.shape == (96, 80, 3) and report["backend"] == "openvino"
