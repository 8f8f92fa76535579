"""`train --set init_weights=PATH`: training starts from weights in any format restore reads."""

from __future__ import annotations

from pathlib import Path

import torch

from osdhuman.config import load_config
from osdhuman.training import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = ["data.size=32", "device=cpu", "mixed_precision=no", "frozen_dtype=float32", "lpips.random_backbone=true",
         "logging.progress=false", "data.num_workers=0", "logging.val_every=0"]


def test_training_starts_from_an_exported_folder(photo_dir, tmp_path):
    from osdhuman.models import OSDHumanConfig, build_osdhuman
    from osdhuman.models.export import export_diffusers
    from osdhuman.models.pretrained import load_pretrained
    from osdhuman.training.update import build_for_training

    m = build_osdhuman(OSDHumanConfig(base_model="tiny", compute_null_prompt=False))
    with torch.no_grad():
        for q in m.generator_parameters():
            q.add_(0.05 * torch.randn_like(q))
    export_diffusers(m, tmp_path / "exp")
    cfg = load_config(TrainConfig, CONFIGS / "tiny.yaml",
                      [f"data.source={photo_dir}", *SMALL, f"init_weights={tmp_path / 'exp'}", "max_steps=2"])
    model, _, gen, _ = build_for_training(cfg, torch.device("cpu"))
    ref, _ = load_pretrained(tmp_path / "exp")
    want = ref.trainable_state_dict()
    got = model.trainable_state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items() if k != "null_prompt_embeds")
    assert model.null_prompt_embeds is not None and model.null_prompt_embeds.abs().sum() > 0  # VSD's CFG branch
    train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "final" / "osdhuman_weights.safetensors").is_file()
