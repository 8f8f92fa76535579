"""restore_paths (files / folders -> OUTDIR) and weights_from_env."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osdhuman.cli.weights_env import ENV_BASE_MODEL, ENV_HFIE_ENCODER, ENV_WEIGHTS, weights_from_env
from osdhuman.pipelines import OutputCollisionError, RestoreConfig, restore_paths


@pytest.fixture()
def folder(tmp_path, astronaut):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(astronaut[:72, :64]).save(d / "a.png")
    Image.fromarray(astronaut[100:164, 50:130]).save(d / "b.jpg", quality=95)
    Image.fromarray(astronaut[200:256, :56]).save(d / "sub" / "c.webp")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def test_folder_with_corrupt_file(tiny_pipe, folder, tmp_path):
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    cfg = RestoreConfig(base_model="tiny", batch_size=2, suffix="_r")
    rep = restore_paths([folder], out, cfg, pipeline=tiny_pipe, progress=False, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == ["a_r.png", "b_r.jpg", "restore_config.yaml", "restore_records.jsonl", "restore_report.json"]
    failed = {Path(f).name: why for f, why in rep.failed}  # every entry left out is named (issue 12)
    assert failed == {"broken.png": "not_an_image", "notes.txt": "not_an_image_extension"}
    assert len(rep.restored) == 2 and rep.untrained
    assert np.asarray(Image.open(out / "a_r.png")).shape == (72, 64, 3)
    report = json.loads((out / "restore_report.json").read_text())
    assert any(f["input"].endswith("broken.png") for f in report["failed"]) and report["untrained_model"] is True
    assert "suffix: _r" in (out / "restore_config.yaml").read_text()
    assert before == {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}  # inputs untouched
    # recursive keeps the sub-folder layout; --ext png
    rep2 = restore_paths([folder], tmp_path / "out2", RestoreConfig(base_model="tiny", recursive=True, ext="png"),
                         pipeline=tiny_pipe, progress=False, log=lambda m: None)
    assert (tmp_path / "out2" / "sub" / "c.png").is_file() and len(rep2.restored) == 3


def test_never_overwrites_inputs(tiny_pipe, folder):
    with pytest.raises(OutputCollisionError, match="overwrite an input"):
        restore_paths([folder / "a.png"], folder, RestoreConfig(base_model="tiny"), pipeline=tiny_pipe, progress=False)
    assert Image.open(folder / "a.png").size == (64, 72)
    # with a suffix the same folder is fine
    rep = restore_paths([folder / "a.png"], folder, RestoreConfig(base_model="tiny", suffix="_restored"),
                        pipeline=tiny_pipe, progress=False, log=lambda m: None)
    assert rep.restored == [(str(folder / "a.png"), str(folder / "a_restored.png"))]


def test_missing_and_duplicate_names(tiny_pipe, folder, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(folder / "a.png").save(other / "a.png")
    rep = restore_paths([folder / "a.png", other / "a.png", tmp_path / "absent.png"], tmp_path / "o",
                        RestoreConfig(base_model="tiny"), pipeline=tiny_pipe, progress=False, log=lambda m: None)
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["a-2.png", "a.png"]
    assert rep.failed == [(str(tmp_path / "absent.png"), "missing_file")]


def test_weights_from_env(tmp_path):
    s = weights_from_env({})
    assert not s.configured
    for name in (ENV_WEIGHTS, ENV_BASE_MODEL, ENV_HFIE_ENCODER, "huggingface"):
        assert name in s.message
    # weights trained on the tiny preset are not real weights
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False)).save_weights(tmp_path / "w")
    s = weights_from_env({ENV_WEIGHTS: str(tmp_path / "w")})
    assert not s.configured and "random preset" in s.message
    # a complete (fake) real setup
    meta = json.loads((tmp_path / "w" / "osdhuman_config.json").read_text())
    meta["config"]["base_model"] = "stabilityai/stable-diffusion-2-1-base"
    (tmp_path / "w" / "osdhuman_config.json").write_text(json.dumps(meta))
    (tmp_path / "ram.pth").write_bytes(b"x")
    s = weights_from_env({ENV_WEIGHTS: str(tmp_path / "w"), ENV_HFIE_ENCODER: str(tmp_path / "ram.pth")})
    assert s.configured, s.message
    s = weights_from_env({ENV_WEIGHTS: str(tmp_path / "w")})
    assert not s.configured and ENV_HFIE_ENCODER in s.message


def test_out_of_memory_splits_the_batch_then_shrinks_the_tiles(tiny_pipe, folder, tmp_path):
    """A device that runs out of memory above one image and above 128 px tiles: every image is
    still restored, first by splitting the batch, then by halving the tile size, and the
    output equals the pipeline's own output at that tiling."""
    import torch

    calls = []

    class TightMemory:  # the real tiny pipeline behind a simulated memory limit
        def __init__(self, pipe):
            self.pipe = pipe

        def __getattr__(self, name):
            return getattr(self.pipe, name)

        def __call__(self, images, **kw):
            tile = kw.get("tile_size", self.pipe.config.tile_size)
            calls.append((len(images), tile))
            if len(images) > 1 or tile > 128:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.pipe(images, **kw)

    same_size = tmp_path / "same"
    same_size.mkdir()
    a = np.asarray(Image.open(folder / "a.png"))
    for i, arr in enumerate([a, a[:, ::-1], a[::-1]]):
        Image.fromarray(np.ascontiguousarray(arr)).save(same_size / f"p{i}.png")
    messages = []
    out = tmp_path / "out"
    rep = restore_paths([same_size], out, RestoreConfig(batch_size=4), pipeline=TightMemory(tiny_pipe),
                        progress=False, log=messages.append)
    assert len(rep.restored) == 3 and not rep.failed
    assert calls[0] == (3, 512) and (1, 128) in calls and all(n == 1 for n, t in calls if t < 512)
    assert any("retrying with batch 2" in m for m in messages)
    assert any("retrying with 256px tiles" in m for m in messages)
    direct = tiny_pipe([np.asarray(Image.open(same_size / "p0.png"))], output_type="np", tile_size=128,
                       vae_tile_size=128, tile_overlap=32).images[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "p0.png")), direct)


def test_rerun_keeps_done_outputs_redoes_changed_ones_and_never_replaces_a_stranger(tiny_pipe, folder, tmp_path):
    out = tmp_path / "out"
    logs: list[str] = []
    cfg = RestoreConfig(base_model="tiny")
    first = restore_paths([folder], out, cfg, pipeline=tiny_pipe, progress=False, log=logs.append)
    assert sorted(Path(d).name for _, d in first.restored) == ["a.png", "b.jpg"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("[ab].*")}
    again = restore_paths([folder], out, cfg, pipeline=tiny_pipe, progress=False, log=logs.append)
    assert again.restored == [] and sorted(Path(d).name for _, d in again.kept) == ["a.png", "b.jpg"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("[ab].*")} == stamps  # not rewritten
    Image.open(folder / "a.png").transpose(Image.FLIP_LEFT_RIGHT).save(folder / "a.png")  # an input changes
    (out / "b.jpg").write_bytes((out / "b.jpg").read_bytes()[:-10])  # a result damaged by hand: not ours now
    third = restore_paths([folder], out, cfg, pipeline=tiny_pipe, progress=False, log=logs.append)
    assert [Path(d).name for _, d in third.restored] == ["a.png"]
    assert any(f"redoing {out / 'a.png'}: its input changed" in m for m in logs)
    assert any(f.endswith("b.jpg") and why.startswith("output_exists") for f, why in third.failed)
    forced = restore_paths([folder], out, RestoreConfig(base_model="tiny", overwrite=True), pipeline=tiny_pipe,
                           progress=False, log=logs.append)
    assert sorted(Path(d).name for _, d in forced.restored) == ["a.png", "b.jpg"]
    assert not list(out.glob(".*"))  # no lock, journal or temp file left


def test_new_weights_at_the_same_path_redo_the_outputs(tmp_path):
    """The resume key holds the weights' identity (names, sizes, mtimes), not only their path."""
    import os

    from osdhuman.pipelines.restore import _settings_key

    w = tmp_path / "run" / "final"
    w.mkdir(parents=True)
    (w / "osdhuman_weights.safetensors").write_bytes(b"A" * 100)
    cfg = RestoreConfig(weights=str(w))
    first = _settings_key(cfg)
    assert _settings_key(RestoreConfig(weights=str(w))) == first  # unchanged: outputs are kept
    (w / "osdhuman_weights.safetensors").write_bytes(b"B" * 100)  # retrained into the same folder
    st = (w / "osdhuman_weights.safetensors").stat()
    os.utime(w / "osdhuman_weights.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert _settings_key(cfg) != first
    assert _settings_key(RestoreConfig(weights="org/hub-id")) == _settings_key(RestoreConfig(weights="org/hub-id"))
