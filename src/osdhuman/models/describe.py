"""``describe_weights``: what a weights folder or file holds and needs, without building a model.

    info = describe_weights("weights/")   # {"family": "haodiff", "timestep": 199, ...}

Reads the files as ``restore --weights`` does (every tensor checked, the prompt encoder built
from its recorded kwargs) but loads no base model.
"""

from __future__ import annotations

from pathlib import Path

from osdhuman.models.families import FAMILIES
from osdhuman.models.formats import classify, most_common, read_weights
from osdhuman.models.osdhuman import CONFIG_FILE, WEIGHTS_FILE, read_saved_config
from osdhuman.models.pretrained import prompt_width

__all__ = ["describe_weights"]


def _lora(part, default_alpha: float | None) -> dict | None:
    if not len(part):
        return None
    ranks = sorted(set(part.ranks().values()))
    alpha = sorted(set(part.alpha.values())) or ([default_alpha] if default_alpha is not None else
                                                   "none recorded: alpha = rank, scale 1")
    return {"modules": len(part), "ranks": ranks, "alpha": alpha}


def describe_weights(path: str | Path) -> dict:
    p = Path(path).expanduser()
    kind = classify(p)
    if kind == "osdhuman":
        cfg = read_saved_config(p).get("config", {})
        fam = FAMILIES["osdhuman"]
        return {"path": str(p), "kind": kind, "family": "osdhuman",
                "parts": {"unet_lora": {"rank": cfg.get("lora_rank"), "alpha": cfg.get("lora_alpha")},
                          "vae_encoder_lora": {"rank": cfg.get("vae_lora_rank") or cfg.get("lora_rank"),
                                               "alpha": cfg.get("vae_lora_alpha") or cfg.get("lora_alpha")},
                          "conv_in": bool(cfg.get("train_conv_in"))},
                "timestep": cfg.get("timestep", fam.timestep), "guidance_scale": fam.guidance_scale,
                "latent": cfg.get("latent_mode_infer", fam.latent), "color_fix": fam.color_fix,
                "prompt": cfg.get("prompt_source", "hfie_lq"), "files": [str(p / WEIGHTS_FILE), str(p / CONFIG_FILE)],
                "needs": _needs(cfg.get("base_model"), cfg.get("prompt_source", "hfie_lq"), None)}
    fw = read_weights(p)
    fam = FAMILIES.get(fw.family, FAMILIES["lora"])
    ur = fw.unet.ranks()
    default_alpha = fw.default_alpha.get("unet")
    rank = most_common(ur)
    alpha = most_common(fw.unet.alpha) or default_alpha or rank
    width = None
    if fw.prompt_encoder is not None:
        width = prompt_width(fw.prompt_encoder)
    prompt = fam.prompt if fw.prompt_encoder is not None else (
        f"HFIE head ({len(fw.head)} tensors)" if fw.head else fw.recorded.get("prompt_source", "none in the files"))
    return {"path": str(p), "kind": fw.kind, "family": fw.family,
            "parts": {"unet_lora": _lora(fw.unet, default_alpha), "vae_encoder_lora": _lora(fw.vae, fw.default_alpha.get("vae")), "conv_in": bool(fw.conv_in),
                      "prompt_encoder": type(fw.prompt_encoder).__name__ if fw.prompt_encoder is not None else None,
                      "hfie_head": len(fw.head) or None},
            "lora_scale": (float(alpha) / rank) if rank else None,
            "timestep": fw.recorded.get("timestep", fam.timestep),
            "guidance_scale": fw.recorded.get("guidance_scale", fam.guidance_scale),
            "latent": fw.recorded.get("latent_mode", fam.latent), "color_fix": fw.recorded.get("color_fix", fam.color_fix),
            "prompt": prompt, "prompt_width": width, "files": fw.files or [str(fw.path)],
            "ignored_tensors": len(fw.ignored),
            "needs": _needs(fw.recorded.get("base_model"), "released" if fw.prompt_encoder is not None else
                            ("hfie_lq" if fw.head else "unknown"), width)}


def _needs(base: str | None, prompt: str, width: int | None) -> list[str]:
    out = []
    if not base:
        w = f" (cross-attention width {width})" if width else ""
        out.append(f"--base-model: a Stable Diffusion 2.1-base diffusers folder{w}")
    if prompt.startswith("hfie"):
        out.append("--hfie-encoder: RAM's ram_swin_large_14m.pth (HFIE's image encoder)")
    if prompt == "unknown":
        out.append("--prompt-source (no prompt encoder in the files)")
    return out
