"""Real weights for the demo and the app, configured through the environment.

``make demo`` and ``osdhuman app`` restore with real OSDHuman weights when the environment
names them (``OSDHUMAN_WEIGHTS``, ``OSDHUMAN_BASE_MODEL``, ``OSDHUMAN_HFIE_ENCODER``); otherwise
they say plainly what is missing and how to supply it. This is front-end knowledge (the
environment, the help text), so it lives with the CLI; the app imports it from here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from osdhuman.models import WeightsError
from osdhuman.models.formats import classify
from osdhuman.pipelines.restore import RestoreConfig, restore_paths

__all__ = ["ENV_BASE_MODEL", "ENV_HFIE_ENCODER", "ENV_WEIGHTS", "HOW_TO", "WeightsSetup", "demo_restore",
           "weights_from_env"]

ENV_WEIGHTS = "OSDHUMAN_WEIGHTS"
ENV_BASE_MODEL = "OSDHUMAN_BASE_MODEL"
ENV_HFIE_ENCODER = "OSDHUMAN_HFIE_ENCODER"


@dataclass
class WeightsSetup:
    weights: str | None
    base_model: str | None
    hfie_encoder: str | None
    configured: bool
    message: str


HOW_TO = (
    "To restore with OSDHuman, supply real weights:\n"
    f"  {ENV_WEIGHTS}=DIR        trained OSDHuman weights (osdhuman_weights.safetensors + osdhuman_config.json,\n"
    "                             written by `osdhuman train` or OSDHuman.save_weights)\n"
    f"  {ENV_BASE_MODEL}=DIR     Stable Diffusion 2.1-base in diffusers layout, e.g.\n"
    "                             `huggingface-cli download stabilityai/stable-diffusion-2-1-base --local-dir DIR`\n"
    f"  {ENV_HFIE_ENCODER}=FILE  RAM's ram_swin_large_14m.pth (HFIE image encoder), from\n"
    "                             https://huggingface.co/xinyu1205/recognize_anything_model\n"
    "or pass --weights / --base-model / --hfie-encoder to `osdhuman restore`."
)


def weights_from_env(env: dict | None = None) -> WeightsSetup:
    """Are real OSDHuman weights configured through the environment? (for ``make demo``)"""
    env = os.environ if env is None else env
    w, b, h = env.get(ENV_WEIGHTS) or None, env.get(ENV_BASE_MODEL) or None, env.get(ENV_HFIE_ENCODER) or None
    problems = []
    saved: dict = {}
    if not w:
        problems.append(f"{ENV_WEIGHTS} is not set")
    else:
        try:
            classify(w)
            if (Path(w) / "osdhuman_config.json").is_file():
                saved = json.loads((Path(w) / "osdhuman_config.json").read_text()).get("config", {})
        except WeightsError as exc:
            problems.append(f"{ENV_WEIGHTS}={w}: {exc}")
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(f"{w}/osdhuman_config.json unreadable ({exc})")
    base = b or saved.get("base_model")
    if saved and base in ("tiny", "sd21-random"):
        problems.append(f"the weights in {w} were trained on the random preset {base!r}")
    elif not base:
        problems.append(f"{ENV_BASE_MODEL} is not set")
    elif b and Path(b).expanduser().exists() is False and (b.startswith((".", "/", "~")) or b.count("/") != 1):
        problems.append(f"{ENV_BASE_MODEL}={b}: folder not found")
    if saved.get("prompt_source", "hfie_lq").startswith("hfie"):
        enc = h or saved.get("hfie_encoder_path")
        if not enc:
            problems.append(f"{ENV_HFIE_ENCODER} is not set")
        elif not Path(enc).is_file():
            problems.append(f"HFIE encoder {enc}: file not found")
    ok = not problems
    msg = ("real OSDHuman weights configured" if ok else
           "restoration skipped: no real weights (" + "; ".join(problems) + ").\n" + HOW_TO)
    return WeightsSetup(w, base, h, ok, msg)


def demo_restore(inputs: Sequence[str | Path], out_dir: str | Path, env: dict | None = None,
                 log: Callable[[str], None] = print) -> int:
    """The demo's restore step: restore ``inputs`` into ``out_dir`` when real weights are
    configured through the environment; otherwise say plainly that it was skipped and how to
    supply weights. Returns 0 (restored or skipped), 1 if nothing could be restored."""
    setup = weights_from_env(env)
    if not setup.configured:
        log(f"[restore] {setup.message}")
        return 0
    cfg = RestoreConfig(weights=setup.weights, base_model=setup.base_model, hfie_encoder=setup.hfie_encoder)
    report = restore_paths(inputs, out_dir, cfg)
    log(f"[restore] restored {len(report.restored)} image(s) into {out_dir}; {len(report.failed)} skipped")
    return 0 if report.restored else 1
