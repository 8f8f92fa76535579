"""``load_pretrained``: an OSDHuman model from weights in any supported format.

    model, summary = load_pretrained(path_or_hub_id, base_model=..., hfie_encoder_path=...)

1. resolve ``path`` (a local file / folder, or a hub id found in the local hub cache);
2. classify it from its files (``osdhuman.models.formats``);
3. our own folder -> ``load_osdhuman``; anything else -> an OSDHumanConfig whose LoRA layout
   (targets, ranks, alphas), timestep, conv_in and prompt source come from the files;
4. build the model, then load every tensor strictly: a tensor that matches nothing, is
   missing or has the wrong shape is an error naming it, before any image is read.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path

import torch

from osdhuman.models.config import SD21_BASE_ID, OSDHumanConfig, swin_kwargs
from osdhuman.models.errors import WeightsError
from osdhuman.models.families import FAMILIES
from osdhuman.models.formats import (
    RELEASE_HELP,
    ForeignWeights,
    classify,
    most_common,
    read_weights,
)
from osdhuman.models.hfie import HFIE, SwinEncoder
from osdhuman.models.lora import MissingTargetError
from osdhuman.models.osdhuman import OSDHuman, build_osdhuman, load_osdhuman, read_saved_config

# huggingface_hub is imported inside resolve_base (only when a hub id is resolved).

__all__ = ["config_for", "load_pretrained", "resolve_weights_path", "summarize"]


def resolve_weights_path(path: str | Path) -> Path:
    """A local path as is; ``owner/name`` (not a local path) from the local hub cache
    (``huggingface_hub.snapshot_download``; offline when ``HF_HUB_OFFLINE`` is set)."""
    p = Path(path).expanduser()
    text = str(path)
    if p.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        return p
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = bool(os.environ.get("HF_HUB_OFFLINE"))
    try:
        return Path(snapshot_download(text, local_files_only=offline))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        how = " (HF_HUB_OFFLINE is set: only the local hub cache is searched)" if offline else ""
        raise WeightsError(f"{text}: no such folder or file, and not found as a hub id{how}: "
                           f"{str(exc).splitlines()[0]}") from None


def _alpha_layout(part_alpha: dict[str, float], ranks: dict[str, int], default: float | None):
    """(alpha for most modules, {module: alpha} exceptions); default alpha = rank (docs/reference.md §weights)."""
    alphas = {m: part_alpha.get(m, default if default is not None else float(r)) for m, r in ranks.items()}
    common = most_common(alphas) or 1.0
    return float(common), {m: a for m, a in alphas.items() if a != common}


def config_for(fw: ForeignWeights, **overrides) -> OSDHumanConfig:
    """The OSDHumanConfig that reproduces ``fw``'s layout; ``overrides`` (not None) win."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    ur, vr = fw.unet.ranks(), fw.vae.ranks()
    rank = int(most_common(ur) or most_common(vr) or 4)
    alpha, alpha_pattern = _alpha_layout(fw.unet.alpha, ur, fw.default_alpha.get("unet"))
    if len(set(vr.values())) > 1:
        raise WeightsError(f"{fw.path}: VAE-encoder LoRA ranks differ between modules ({sorted(set(vr.values()))}); "
                           "osdhuman supports one VAE rank")
    vae_alpha, vae_pattern = _alpha_layout(fw.vae.alpha, vr, fw.default_alpha.get("vae"))
    if vae_pattern:
        raise WeightsError(f"{fw.path}: VAE-encoder LoRA alphas differ between modules; osdhuman supports one")
    recorded = {k: fw.recorded[k] for k in ("timestep", "prompt_source") if k in fw.recorded}
    if "latent_mode" in fw.recorded:
        recorded["latent_mode_infer"] = fw.recorded["latent_mode"]
    if fw.kind == "osdhuman-export":  # everything but the LoRA layout, which the files give
        layout = {"lora_rank", "lora_alpha", "vae_lora_rank", "vae_lora_alpha", "unet_lora_targets",
                  "vae_lora_targets", "unet_lora_rank_pattern", "unet_lora_alpha_pattern", "lora_init"}
        recorded = {k: v for k, v in fw.recorded.get("config", {}).items() if k not in layout}
    data = {
        "lora_rank": rank, "lora_alpha": alpha,
        "vae_lora_rank": int(most_common(vr)) if vr else None, "vae_lora_alpha": vae_alpha if vr else None,
        "unet_lora_targets": sorted(ur), "vae_lora_targets": sorted(vr),
        "unet_lora_rank_pattern": {m: r for m, r in ur.items() if r != rank},
        "unet_lora_alpha_pattern": alpha_pattern,
        "train_conv_in": bool(fw.conv_in),
        "prompt_source": "hfie_lq" if fw.head else ("null" if fw.kind == "osediff" else "hfie_lq"),
        "compute_null_prompt": False,
        # OSEDiff's test_osediff.py samples the LQ latent (latent_dist.sample()); --latent mode overrides
        **({"latent_mode_infer": "sample"} if fw.kind == "osediff" else {}),
        **recorded, **overrides,
    }
    known = {f.name for f in fields(OSDHumanConfig)}
    return OSDHumanConfig(**{k: v for k, v in data.items() if k in known})


def _model_tensors(model: OSDHuman, fw: ForeignWeights) -> dict[str, torch.Tensor]:
    """fw's tensors under the model's state-dict names."""
    out: dict[str, torch.Tensor] = {}
    for root, part in (("unet", fw.unet), ("vae", fw.vae)):
        for mod in part.B:
            out[f"{root}.{mod}.lora_A.generator.weight"] = part.A[mod]
            out[f"{root}.{mod}.lora_B.generator.weight"] = part.B[mod]
            if mod in part.B_bias:
                out[f"{root}.{mod}.lora_B.generator.bias"] = part.B_bias[mod]
    for name, v in fw.conv_in.items():
        out[model.conv_in_key + name] = v
    for k, v in fw.head.items():
        out[f"prompt_extractor.{k}"] = v
    if "embeds" in fw.prompt:
        out["prompt_extractor.embeds"] = fw.prompt["embeds"]
    return out


def _check_and_load(model: OSDHuman, fw: ForeignWeights, tensors: dict[str, torch.Tensor]) -> None:
    own = model.trainable_state_dict()
    where = fw.path
    unmatched = sorted(set(tensors) - set(own))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
             for k in tensors if k in own and tuple(tensors[k].shape) != tuple(own[k].shape)]
    optional = {"null_prompt_embeds"}
    if "embeds" not in fw.prompt:  # a text / null prompt computed from the base model's text encoder
        optional.add("prompt_extractor.embeds")
    missing = sorted(set(own) - set(tensors) - optional)
    if unmatched or wrong or missing:
        parts = ([f"unmatched {k}" for k in unmatched[:3]] + wrong[:3] + [f"missing {k}" for k in missing[:3]])
        raise WeightsError(f"{where}: {len(unmatched)} unmatched, {len(missing)} missing, {len(wrong)} wrong-shape "
                           f"tensor(s): {'; '.join(parts)}")
    with torch.no_grad():
        params = dict(model.state_dict(keep_vars=True))
        for k, v in tensors.items():
            params[k].copy_(v.to(params[k].dtype))
    if "null_prompt_embeds" in fw.prompt:
        model.register_buffer("null_prompt_embeds", fw.prompt["null_prompt_embeds"].clone(), persistent=False)


def summarize(fw: ForeignWeights, cfg: OSDHumanConfig) -> str:
    """One line: what was loaded from where."""
    bits = [f"unet {len(fw.unet)} LoRA (rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}"
            + (f", {len(cfg.unet_lora_rank_pattern)} other ranks" if cfg.unet_lora_rank_pattern else "") + ")"]
    if len(fw.vae):
        bits.append(f"vae-encoder {len(fw.vae)} LoRA (rank {cfg.effective_vae_lora_rank}, "
                    f"alpha {cfg.effective_vae_lora_alpha:g})")
    bits.append("conv_in trained" if fw.conv_in else "conv_in from SD")
    bits.append(f"HFIE head {len(fw.head)} tensors" if fw.head and not cfg.is_dape else f"prompt {cfg.prompt_source}")
    return f"weights: {fw.kind} from {fw.path}: " + ", ".join(bits) + f"; timestep {cfg.timestep}"


def load_pretrained(
    path: str | Path, base_model: str | None = None, hfie_encoder_path: str | None = None,
    guidance_scale: float | None = None, **overrides,
) -> tuple[OSDHuman, str]:
    """(model, one-line summary) for weights of any supported kind at ``path`` (or hub id).

    ``overrides``: OSDHumanConfig fields (e.g. timestep=199, prompt_source="null") applied on
    top of what the files record; None values are ignored. ``guidance_scale``: classifier-free
    guidance with a negative prompt (families that have one; default: the family's).
    The model carries ``family``, ``guidance_scale`` and ``overrides`` (one line per setting
    that differs from what the weights record: the caller prints and records them)."""
    p = resolve_weights_path(path)
    kind = classify(p)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if kind == "osdhuman":
        saved = read_saved_config(p).get("config", {})
        model = load_osdhuman(p, base_model=base_model, hfie_encoder_path=hfie_encoder_path, **overrides)
        c = model.config
        model.family, model.guidance_scale = "osdhuman", 1.0
        model.overrides = _generic_notes("osdhuman", saved, overrides)
        return model, (f"weights: osdhuman from {p}: rank {c.lora_rank}, alpha {c.lora_alpha:g}, "
                       f"prompt {c.prompt_source}, timestep {c.timestep}" + _prompt_note(model))
    fw = read_weights(p)
    if fw.prompt_encoder is not None:
        return _load_release(p, fw, base_model, guidance_scale, overrides)
    if fw.hfie_encoder and not hfie_encoder_path and overrides.get("prompt_source", "hfie_lq").startswith("hfie"):
        return _load_with_shipped_encoder(p, fw, base_model, overrides)
    cfg = config_for(fw, base_model=base_model or fw.recorded.get("base_model"),
                     hfie_encoder_path=hfie_encoder_path, **overrides)
    if cfg.base_model in (None, ""):
        cfg = replace(cfg, base_model=SD21_BASE_ID)
    if cfg.prompt_source.startswith("hfie") and not fw.head:
        raise WeightsError(f"{p}: a LoRA with no prompt encoder beside it: no HFIE head, and none of the released "
                           f"encoders ({RELEASE_HELP}); add the missing file, or choose a prompt source that needs "
                           "none (--prompt-source null)")
    needs_text = ((cfg.prompt_source in ("text", "null") and "embeds" not in fw.prompt)
                  or (cfg.compute_null_prompt and "null_prompt_embeds" not in fw.prompt))  # VSD's CFG
    try:
        model = build_osdhuman(cfg, text_encoder=needs_text)
    except MissingTargetError as exc:
        raise WeightsError(f"{p}: unmatched tensors: LoRA for modules the base model {cfg.base_model!r} "
                           f"does not have: {', '.join(exc.names[:5])}") from None
    _check_and_load(model, fw, _model_tensors(model, fw))
    model.weights_source = str(p)
    model.family = fw.family if fw.family in FAMILIES else "osdhuman"
    model.guidance_scale = 1.0
    model.overrides = _generic_notes(model.family, {"timestep": fw.recorded.get("timestep"),
                                                    "prompt_source": fw.recorded.get("prompt_source")}, overrides)
    return model, summarize(fw, cfg) + _prompt_note(model)


def _generic_notes(family: str, recorded: dict, overrides: dict) -> list[str]:
    """Lines for the user's overrides of a timestep / prompt source the weights record."""
    flags = {"timestep": "--timestep", "prompt_source": "--prompt-source"}
    return [f"{flags[k]} {overrides[k]} overrides the {family} weights' {recorded[k]}"
            for k in flags if k in overrides and recorded.get(k) is not None and overrides[k] != recorded[k]]


def _load_with_shipped_encoder(p: Path, fw: ForeignWeights, base_model: str | None,
                               overrides: dict) -> tuple[OSDHuman, str]:
    """An HFIE release whose embedder file also holds the encoder (``encoder.swin.*``,
    ``encoder.image_proj.*``): that encoder, loaded strictly, instead of --hfie-encoder."""

    cfg = config_for(fw, base_model=base_model or fw.recorded.get("base_model"), **overrides)
    cfg = replace(cfg, base_model=cfg.base_model or SD21_BASE_ID)
    model = build_osdhuman(replace(cfg, prompt_source="null"), text_encoder=False)
    swin = swin_kwargs(cfg.base_model, cfg.hfie_image_size)
    encoder = SwinEncoder(**swin)
    own = encoder.state_dict()
    shipped = fw.hfie_encoder
    bad = [f"encoder.{k}" for k in sorted(set(own) ^ set(shipped))] + [
        f"encoder.{k}: file {tuple(shipped[k].shape)} vs model {tuple(own[k].shape)}"
        for k in shipped if k in own and shipped[k].shape != own[k].shape]
    if bad:
        raise WeightsError(f"{fw.files[-1]}: its encoder.* tensors are not RAM's Swin-L image encoder under "
                           f"osdhuman's names (first mismatches: {', '.join(bad[:4])})")
    encoder.load_state_dict(shipped)
    model.prompt_extractor = HFIE(encoder, cross_dim=model.cross_attention_dim, query_len=cfg.hfie_query_len,
                                  heads=cfg.hfie_heads).eval()
    model.config = cfg
    _check_and_load(model, fw, _model_tensors(model, fw))
    model.weights_source, model.family, model.guidance_scale, model.overrides = str(p), "osdhuman", 1.0, []
    return model, summarize(fw, cfg) + f"; HFIE encoder from {fw.files[-1]} ({len(shipped)} tensors)"


def prompt_width(encoder) -> int:
    """The context width a released prompt encoder gives (its last layer's output size)."""
    if hasattr(encoder, "head_config"):
        return int(encoder.head_config.embed_dim)
    return int(encoder.embedding_change.conv2.weight.shape[0])


def _override_notes(fw: ForeignWeights, overrides: dict, guidance: float | None) -> list[str]:
    """One line per user setting that differs from what the family records."""
    fam = fw.family
    pairs = [("timestep", "--timestep", fw.recorded["timestep"]),
             ("latent_mode_infer", "--latent", fw.recorded["latent_mode"]),
             ("prompt_source", "--prompt-source", "its own prompt encoder")]
    notes = [f"{flag} {overrides[key]} overrides the {fam} weights' {rec}"
             for key, flag, rec in pairs if key in overrides and overrides[key] != rec]
    if guidance is not None and guidance != fw.recorded["guidance_scale"]:
        notes.append(f"--guidance-scale {guidance:g} overrides the {fam} weights' {fw.recorded['guidance_scale']:g}")
    return notes


def _load_release(p: Path, fw: ForeignWeights, base_model: str | None, guidance: float | None,
                  overrides: dict) -> tuple[OSDHuman, str]:
    """HAODiff / OSDFace: the UNet LoRA on the base model, their own prompt encoder, their settings."""
    user_prompt = overrides.pop("prompt_source", None)
    notes = _override_notes(fw, {**overrides, **({"prompt_source": user_prompt} if user_prompt else {})}, guidance)
    cfg = config_for(fw, base_model=base_model, prompt_source=user_prompt or "null", **overrides)
    if cfg.base_model in (None, ""):
        cfg = replace(cfg, base_model=SD21_BASE_ID)
    try:
        model = build_osdhuman(cfg, text_encoder=bool(user_prompt) and user_prompt in ("text", "null"))
    except MissingTargetError as exc:
        raise WeightsError(f"{p}: unmatched tensors: LoRA for modules the base model {cfg.base_model!r} "
                           f"does not have: {', '.join(exc.names[:5])}") from None
    width = prompt_width(fw.prompt_encoder)
    enc_file = next((f for f in fw.files if f.endswith("embedding_change_weights.pth")), fw.files[-1])
    if width != model.cross_attention_dim:
        raise WeightsError(f"{enc_file}: its prompts are {width} wide but the base model {cfg.base_model!r} has "
                           f"cross-attention width {model.cross_attention_dim}: these weights need a base model of "
                           f"width {width} (SD-2.1-base for the released files: --base-model)")
    _check_and_load(model, fw, _model_tensors(model, fw))
    if not user_prompt:
        model.prompt_extractor = fw.prompt_encoder
    model.weights_source = str(p)
    model.family = fw.family
    model.guidance_scale = float(guidance if guidance is not None else fw.recorded["guidance_scale"])
    model.overrides = notes
    fam = FAMILIES[fw.family]
    summary = (f"weights: {fw.family} from {p}: unet {len(fw.unet)} LoRA (rank {cfg.lora_rank}, alpha "
               f"{cfg.lora_alpha:g}, scale {cfg.lora_alpha / cfg.lora_rank:g}); prompt: "
               f"{fam.prompt if not user_prompt else user_prompt}; timestep {cfg.timestep}; guidance "
               f"{model.guidance_scale:g}; latent {cfg.latent_mode_infer}"
               + (f"; {len(fw.ignored)} tensor(s) ignored as {fw.family}'s own loader does" if fw.ignored else ""))
    return model, summary


def _prompt_note(model: OSDHuman) -> str:
    """What a DAPE prompt extractor was built from (empty for the other prompt sources)."""
    return f"; {model.prompt_summary}" if getattr(model, "prompt_summary", "") else ""
