"""`train` end to end on the tiny preset (CPU, offline): learning, over-fitting, exact
resume, restore of the saved weights, every paper config, non-finite handling, CLI errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from osdhuman.config import load_config
from osdhuman.training import TrainConfig, TrainingError, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

SMALL = [
    "data.size=32", "device=cpu", "mixed_precision=no", "frozen_dtype=float32",
    "lpips.random_backbone=true", "logging.progress=false", "data.num_workers=0",
]


def tiny_cfg(source: Path, *overrides: str, config: str = "tiny.yaml") -> TrainConfig:
    return load_config(TrainConfig, CONFIGS / config, [f"data.source={source}", *SMALL, *overrides])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _val(out: Path, step: int) -> dict:
    return next(r for r in _records(out) if r["step"] == step and "val/psnr_y" in r)


def test_thirty_steps_lower_mse_lpips_and_write_a_complete_run(photo_dir, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(photo_dir, "max_steps=30", "data.num_val=5", "checkpoint.every=10", "checkpoint.keep=2",
                   "logging.val_every=0", "logging.every=5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "only 5 images, validation uses training images"
        res = train(cfg, out)
    assert res.step == 30
    start, end = _val(out, 0), _val(out, 30)
    assert end["val/mse_lpips"] < 0.9 * start["val/mse_lpips"], (start, end)
    assert end["val/psnr_y"] > start["val/psnr_y"]
    # the run folder: resolved config, logs, grids, rotated checkpoints, final weights
    saved = load_config(TrainConfig, out / "config.yaml")
    assert saved.max_steps == 30 and saved.data.source == str(photo_dir)
    recs = [r for r in _records(out) if "loss/loss" in r]
    keys = {"loss/mse", "loss/lpips", "loss/vsd", "loss/regularizer", "grad_norm/generator", "lr/generator", "images_per_s"}
    assert keys <= set(recs[-1])
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "val" / "step-00000030.png").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000020", "step-00000030"]
    final = load_file(str(out / "final" / "osdhuman_weights.safetensors"))
    ckpt = load_file(str(out / "checkpoints" / "step-00000030" / "weights" / "osdhuman_weights.safetensors"))
    assert final.keys() == ckpt.keys() and all(torch.equal(final[k], ckpt[k]) for k in final)

    from osdhuman.models import load_osdhuman

    model = load_osdhuman(out / "final")
    trained = load_file(str(out / "checkpoints" / "step-00000030" / "trainable.safetensors"))
    params = dict(model.named_parameters())
    for name, t in trained.items():
        assert torch.equal(params[name].detach(), t), name


def test_saved_weights_restore_through_the_cli(photo_dir, tmp_path):
    from osdhuman.cli import COMMAND_MODULES, main

    if "restore" not in COMMAND_MODULES:
        pytest.skip("the restore command is not registered yet")
    out = tmp_path / "run"
    train(tiny_cfg(photo_dir, "max_steps=2", "data.num_val=1", "logging.val_at_start=false",
                   "logging.val_every=0", "checkpoint.every=0"), out)
    src = sorted(photo_dir.glob("*.png"))[0]
    rc = main(["restore", str(src), "-o", str(tmp_path / "restored"), "--weights", str(out / "final"),
               "--device", "cpu"])
    assert rc == 0
    from PIL import Image

    outs = [p for p in (tmp_path / "restored").rglob("*") if p.is_file() and p.suffix in (".png", ".jpg")]
    assert len(outs) == 1 and Image.open(outs[0]).size == Image.open(src).size


def test_overfitting_one_pair_raises_its_psnr(one_photo_dir, fitted_tiny_base, tmp_path):
    """Over-fit one photo: the validation pass on its (LQ, HQ) pair gains several dB of PSNR.

    The base is the tiny architecture with a FITTED VAE (see ``fitted_tiny_base``): with the
    random ``tiny`` preset's decoder no latent decodes to the photo and every fit stalls near
    14 dB. A local base folder has no RAM checkpoint for HFIE, so the prompt is the paper's
    null-prompt ablation (Table 4); the trained generator is VAE-encoder LoRA + UNet LoRA +
    conv_in through the frozen decoder, MSE only (Eq. 4 with lambda1 = lambda2 = 0).
    """
    out = tmp_path / "run"
    cfg = tiny_cfg(one_photo_dir, f"model.base_model={fitted_tiny_base}", 'model.prompt_source="null"',
                   "max_steps=60", "batch_size=1", "data.crop=center", "data.hflip=false",
                   "data.num_val=1", "loss.lambda_lpips=0", "loss.lambda_vsd=0", "optim.lr=5e-3",
                   "logging.val_every=0", "checkpoint.every=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "only 1 image, validation uses training images"
        train(cfg, out)
    start, end = _val(out, 0)["val/psnr_y"], _val(out, 60)["val/psnr_y"]
    # measured on CPU: 13.4 -> 23.2 dB (+9.8), SSIM 0.30 -> 0.89
    assert end - start > 5.0, (start, end)


class _Kill(Exception):
    pass


def test_kill_and_resume_equals_an_uninterrupted_run(photo_dir, tmp_path):
    args = ("max_steps=7", "data.num_val=1", "checkpoint.every=2", "checkpoint.keep=0",
            "logging.val_at_start=false", "logging.val_every=0")
    full = tmp_path / "full"
    train(tiny_cfg(photo_dir, *args), full)

    def kill_at_5(step, metrics):
        if step == 5:
            raise _Kill

    cut = tmp_path / "cut"
    with pytest.raises(_Kill):
        train(tiny_cfg(photo_dir, *args), cut, on_step_end=kill_at_5)
    assert not (cut / "final").exists()
    with pytest.raises(TrainingError, match="--resume latest"):
        train(tiny_cfg(photo_dir, *args), cut)  # never silently restarts over a run
    res = train(tiny_cfg(photo_dir, *args), cut, resume="latest")  # from step 4
    assert res.step == 7
    for name in ("final/osdhuman_weights.safetensors", "checkpoints/step-00000007/trainable.safetensors",
                 "checkpoints/step-00000007/optimizer-generator.safetensors",
                 "checkpoints/step-00000007/optimizer-regularizer.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(cut / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
        # the same bytes, not only the same tensors (the metadata is written in sorted order)
        assert (full / name).read_bytes() == (cut / name).read_bytes(), f"{name}: the files differ"
    sa = json.loads((full / "checkpoints/step-00000007/state.json").read_text())
    sb = json.loads((cut / "checkpoints/step-00000007/state.json").read_text())
    assert sa["position"] == sb["position"] == 7 * 2
    # resuming with a different model is refused, naming the differing key
    from osdhuman.training import CheckpointError

    with pytest.raises(CheckpointError, match="model.lora_rank"):
        train(tiny_cfg(photo_dir, *args, "model.lora_rank=2", "max_steps=9"), cut, resume="latest")


@pytest.mark.parametrize("config", ["osdhuman.yaml", "prompt-null.yaml", "prompt-hfie-hq.yaml",
                                    "data-random-crops.yaml", "osediff.yaml", "prompt-dape.yaml"])
def test_paper_configs_build_and_run_two_steps(config, photo_dir, tmp_path):
    dape = []
    if load_config(TrainConfig, CONFIGS / config).model.prompt_source.startswith("dape"):
        # DAPE's tag files (random tiny tagger on the tiny preset; no RAM checkpoint needed)
        (tmp_path / "ram_tag_list.txt").write_text("person\nshirt\ntree")
        (tmp_path / "ram_tag_list_threshold.txt").write_text("0.5\n0.5\n0.5")
        dape = [f"model.ram_tag_list={tmp_path / 'ram_tag_list.txt'}"]
    cfg = tiny_cfg(photo_dir, "model.base_model=tiny", "model.hfie_encoder_path=null", "data.val_source=null",
                   "data.num_val=1", "batch_size=1", "max_steps=2", "grad_accum_steps=1",
                   "logging.val_at_start=false", "logging.val_every=0", "checkpoint.every=0", *dape, config=config)
    paper = load_config(TrainConfig, CONFIGS / config)
    assert cfg.model.prompt_source == paper.model.prompt_source
    res = train(cfg, tmp_path / "run")
    assert res.step == 2
    saved = json.loads((tmp_path / "run" / "final" / "osdhuman_config.json").read_text())
    assert saved["config"]["prompt_source"] == paper.model.prompt_source
    assert paper.loss.lambda_lpips == 2.0 and paper.loss.lambda_vsd == 1.0 and paper.optim.lr == 5e-5


def test_accumulation_checkpointing_and_bf16_autocast_run(photo_dir, tmp_path):
    res = train(tiny_cfg(photo_dir, "max_steps=2", "batch_size=1", "grad_accum_steps=2", "mixed_precision=bf16",
                         "gradient_checkpointing=true",
                         "data.num_val=1", "logging.val_at_start=false", "logging.val_every=0",
                         "checkpoint.every=0"), tmp_path / "run")
    assert res.step == 2
    recs = [r for r in _records(tmp_path / "run") if "loss/loss" in r]
    assert recs and all(r["nonfinite"] == 0.0 for r in recs)
    w = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000002" / "trainable.safetensors"))
    assert all(t.dtype == torch.float32 for t in w.values())  # trainable weights stay fp32


def test_non_finite_losses_skip_steps_then_stop(photo_dir, tmp_path, monkeypatch):
    import osdhuman.training.step as step_mod

    real = step_mod.generator_loss

    def nan_loss(*a, **k):
        out = real(*a, **k)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(step_mod, "generator_loss", nan_loss)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="3 non-finite losses in a row"):
        train(tiny_cfg(photo_dir, "max_steps=10", "max_nonfinite=3", "data.num_val=1",
                       "logging.val_at_start=false", "logging.val_every=0", "checkpoint.every=0"), out)
    bad = [r for r in _records(out) if r.get("nonfinite") is True]
    assert [r["step"] for r in bad] == [1, 2, 3]


def test_cli_stops_at_start_without_vgg_weights(tmp_path, capsys):
    from osdhuman.cli import main

    missing = tmp_path / "vgg16-397923af.pth"
    data = tmp_path / "data"  # an existing source: the data check comes first and would answer instead
    data.mkdir()
    rc = main(["train", "--config", str(CONFIGS / "osdhuman.yaml"), "--output-dir", str(tmp_path / "run"),
               "--set", f"lpips.vgg_weights={missing}", "--device", "cpu", "--set", f"data.source={data}"])
    err = capsys.readouterr().err
    assert rc == 1 and "vgg16-397923af.pth" in err and str(missing) in err
    assert not (tmp_path / "run").exists()  # nothing written before the check
    rc = main(["train", "--config", str(CONFIGS / "tiny.yaml"), "--output-dir", str(tmp_path / "run"),
               "--resume", str(tmp_path / "nowhere"), "--set", f"data.source={data}"])
    assert rc == 1 and "not a complete training checkpoint" in capsys.readouterr().err


def _launcher(kind: str, n: int) -> list[str] | None:
    import shutil
    import sys

    tool = shutil.which(kind, path=str(Path(sys.executable).parent)) or shutil.which(kind)
    if tool is None:
        return None
    if kind == "torchrun":
        return [tool, "--nproc_per_node", str(n)]
    return [tool, "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torchrun", "accelerate"])
def test_two_process_ddp_run_with_the_regularizer(kind, photo_dir, tmp_path):
    """DDP (gloo, 2 CPU processes) through each launcher the README gives: both updates per
    iteration, find_unused_parameters, one writer."""
    import os
    import subprocess

    launch = _launcher(kind, 2)
    if launch is None:
        pytest.skip(f"{kind} not found")
    out = tmp_path / "ddp"
    cmd = [*launch, "-m", "osdhuman.cli.train", "--config", str(CONFIGS / "tiny.yaml"),
           "--output-dir", str(out), "--max-steps", "2", "--set", f"data.source={photo_dir}",
           "--set", "data.size=32", "--set", "data.num_val=1", "--set", "logging.progress=false",
           "--set", "logging.val_at_start=false", "--set", "logging.every=1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 process(es)" in proc.stderr
    state = json.loads((out / "checkpoints" / "step-00000002" / "state.json").read_text())
    assert state["world_size"] == 2 and state["position"] == 2 * 2 * 2  # steps x batch x processes
    recs = [r for r in _records(out) if "loss/regularizer" in r]
    assert len(recs) == 2 and all(r["nonfinite"] == 0.0 for r in recs)
    assert proc.stdout.count("trained 2 steps") == 1  # only process 0 reports / writes


def test_accelerate_cpu_launch_that_would_run_one_process_is_refused(photo_dir, tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts ONE process: refused, naming what works."""
    import os
    import shutil
    import subprocess
    import sys

    tool = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if tool is None:
        pytest.skip("accelerate not found")
    cmd = [tool, "launch", "-q", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "osdhuman.cli.train", "--config", str(CONFIGS / "tiny.yaml"),
           "--output-dir", str(tmp_path / "run"), "--set", f"data.source={photo_dir}"]
    proc = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("osdhuman train: error:")]
    assert len(ours) == 1 and "not the 2 asked for" in ours[0] and "--multi_gpu --num_processes 2" in ours[0]
    assert not (tmp_path / "run").exists()


def test_requested_processes_reads_accelerate_command_lines():
    from osdhuman.cli.train import _requested_processes

    assert _requested_processes(["/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "4", "-m", "x"]) == 4
    assert _requested_processes(["accelerate", "launch", "--num-processes=3", "train.py"]) == 3
    assert _requested_processes(["accelerate", "launch", "train.py"]) is None
    assert _requested_processes(["torchrun", "--nproc_per_node", "2", "--num_processes", "2"]) is None
    assert _requested_processes(["bash", "-c", "accelerate launch --num_processes 2"]) is None


def _tensorboard_steps(tb: Path, tag: str) -> list[int]:
    """The steps TensorBoard itself shows for ``tag`` (its EventAccumulator applies purge events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def _rewrite_with_checksum(ckpt: Path, name: str, text: str) -> None:
    """Edit a checkpoint file as another run would have written it (its COMPLETE sum updated)."""
    import hashlib

    (ckpt / name).write_text(text)
    complete = json.loads((ckpt / "COMPLETE").read_text())
    data = (ckpt / name).read_bytes()
    complete["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "COMPLETE").write_text(json.dumps(complete))


def test_resume_skips_a_damaged_checkpoint_refuses_another_world_size_and_logs_each_step_once(
        photo_dir, tmp_path, capsys):
    from osdhuman.training import CheckpointError

    args = ("max_steps=6", "data.num_val=1", "checkpoint.every=2", "checkpoint.keep=0", "logging.every=1",
            "logging.val_at_start=false", "logging.val_every=0")
    out = tmp_path / "run"

    def kill_at_5(step, metrics):
        if step == 5:
            raise _Kill

    with pytest.raises(_Kill):
        train(tiny_cfg(photo_dir, *args), out, on_step_end=kill_at_5)
    ckpts = out / "checkpoints"
    blob = bytearray((ckpts / "step-00000004" / "trainable.safetensors").read_bytes())
    blob[-1] ^= 0xFF  # same size: only the checksum in COMPLETE tells
    (ckpts / "step-00000004" / "trainable.safetensors").write_bytes(bytes(blob))
    state = json.loads((ckpts / "step-00000002" / "state.json").read_text())
    _rewrite_with_checksum(ckpts / "step-00000002", "state.json", json.dumps({**state, "world_size": 2}))
    capsys.readouterr()
    with pytest.raises(CheckpointError, match="saved by 2 process.*--allow-world-size-change"):
        train(tiny_cfg(photo_dir, *args), out, resume="latest")
    err = capsys.readouterr().err
    assert "skipped checkpoint" in err and "step-00000004" in err and "corrupt:" in err
    res = train(tiny_cfg(photo_dir, *args), out, resume="latest", allow_world_size_change=True)
    assert res.step == 6
    steps = [r["step"] for r in _records(out) if "loss/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6], steps  # the killed run's 3, 4, 5 are not repeated
    assert _tensorboard_steps(out / "tb", "loss/loss") == [1, 2, 3, 4, 5, 6]  # TensorBoard shows each step once
    assert "global batch 2 = batch_size 2 per device x 1 accumulation x 1 process(es)" in capsys.readouterr().err


def test_global_batch_size_derives_accumulation_or_is_refused(photo_dir, tmp_path, capsys):
    cfg = tiny_cfg(photo_dir, "max_steps=1", "batch_size=1", "global_batch_size=3", "data.num_val=1",
                   "logging.val_at_start=false", "logging.val_every=0", "checkpoint.every=0")
    res = train(cfg, tmp_path / "a")
    assert res.step == 1
    assert "global batch 3 = batch_size 1 per device x 3 accumulation" in capsys.readouterr().err
    state = json.loads((tmp_path / "a" / "checkpoints" / "step-00000001" / "state.json").read_text())
    assert state["position"] == 3
    with pytest.raises(TrainingError, match="not a multiple of batch_size 2"):
        train(tiny_cfg(photo_dir, "batch_size=2", "global_batch_size=3"), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_tiny_preset_learns_one_fixed_pair_with_vsd_and_the_regularizer_running(tmp_path):
    """configs/tiny.yaml as shipped (VSD weight, lr): 50 steps on one photo raise the PSNR-Y of
    its fixed validation pair by at least 1 dB while VSD and the regularizer update run."""
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    src = tmp_path / "one"
    src.mkdir()
    Image.fromarray(skdata.astronaut()).convert("RGB").resize((64, 64), Image.LANCZOS).save(src / "astronaut.png")
    out = tmp_path / "run"
    cfg = load_config(TrainConfig, CONFIGS / "tiny.yaml", [
        f"data.source={src}", "max_steps=50", "data.crop=center", "data.hflip=false", "data.num_val=1",
        "logging.val_every=0", "logging.every=10", "checkpoint.every=0", "logging.progress=false"])
    assert cfg.loss.lambda_vsd > 0 and cfg.data.size == 64  # the preset's own VSD weight and size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "only 1 image, validation uses training images"
        train(cfg, out)
    start, end = _val(out, 0)["val/psnr_y"], _val(out, 50)["val/psnr_y"]
    logged = [r for r in _records(out) if "loss/vsd" in r]
    assert logged and all(r["loss/vsd"] > 0 and r["grad_norm/regularizer"] > 0 for r in logged)  # both running
    assert end - start >= 1.0, (start, end)
