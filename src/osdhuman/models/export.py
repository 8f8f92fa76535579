"""``export_diffusers``: an OSDHuman model as a folder a diffusers user recognises.

    OUT/pytorch_lora_weights.safetensors   UNet generator LoRA, diffusers / peft key names
                                           (``unet.<module>.lora_A.weight``), rank / alpha in
                                           its ``lora_adapter_metadata`` (diffusers' own writer)
    OUT/vae_encoder_lora.safetensors       VAE-encoder LoRA, ``vae.<module>.lora_A.weight``
    OUT/hfie_head.safetensors              HFIE head: query, attn.*, norm.* (our names)
    OUT/prompt.safetensors                 fixed prompt embeddings (text / null prompt modes)
    OUT/unet_conv_in.safetensors           trained conv_in (weight, bias) + its rank-r LoRA,
                                           exact, for osdhuman and for hand merging
    OUT/osdhuman_config.json               format, base model, timestep, ranks, prompt source
    OUT/README.md                          model card (Hugging Face layout)

Scale: every B is written times its alpha / r, so the files are at scale 1 (alpha = rank,
the convention of the authors' releases). ``UNet2DConditionModel.load_lora_adapter(file)``
ignores the safetensors metadata unless told ``use_safetensors=True`` and then assumes
alpha = rank: with the scale baked in, every way of loading gives the same model (for the
default alpha / r = 2 the product is bit-exact).

conv_in: diffusers' loader drops non-LoRA keys without a word, so the trained conv_in
travels inside the LoRA file as an EXACT LoRA: its whole change from SD's conv_in
(full-weight training + its own LoRA), dW of shape (out, in, k, k), is a LoRA of rank
in*k*k with A the one-hot patch selector and B = dW reshaped (B @ A = dW bit for bit).
Its bias change cannot be a LoRA; peft's ``lora_bias`` would give EVERY adapted layer a
bias and make bias-less layers unmergeable (peft warns so), so the trained bias lives in
``unet_conv_in.safetensors`` and one documented line applies it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from osdhuman.config import to_dict
from osdhuman.models.formats import EXPORT_FORMAT, LORA_FILE
from osdhuman.models.lora import lora_layers
from osdhuman.models.osdhuman import OSDHuman
from osdhuman.outputs import (
    atomic_write_text,
    save_safetensors,  # metadata in sorted order: same bytes every run
    sort_safetensors_metadata,
)

# diffusers is imported inside export_diffusers (~1.5 s, only for an export).

__all__ = ["exact_conv_lora", "export_diffusers", "model_card"]

FILES = {"vae_encoder_lora": "vae_encoder_lora.safetensors", "hfie_head": "hfie_head.safetensors",
         "prompt": "prompt.safetensors", "conv_in": "unet_conv_in.safetensors"}


def exact_conv_lora(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dW (out, in, k, k) -> (A (R, in, k, k) one-hot, B (out, R, 1, 1)), R = in*k*k, B @ A = dW."""
    out_c, in_c, kh, kw = delta.shape
    r = in_c * kh * kw
    a = torch.eye(r, dtype=delta.dtype).reshape(r, in_c, kh, kw)  # A[j] picks input element j
    b = delta.reshape(out_c, r, 1, 1).clone()
    return a, b


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path, metadata)


def _lora_tensors(root: torch.nn.Module, prefix: str) -> tuple[dict, dict[str, int], dict[str, float]]:
    """{prefix.module.lora_A.weight: A, ...}, ranks and alphas of the ``generator`` adapter."""
    tensors, ranks, alphas = {}, {}, {}
    for name, layer in lora_layers(root):
        if "generator" not in layer.lora_A:
            continue
        tensors[f"{prefix}.{name}.lora_A.weight"] = layer.lora_A["generator"].weight
        tensors[f"{prefix}.{name}.lora_B.weight"] = layer.lora_B["generator"].weight * layer.scaling["generator"]
        ranks[name] = alphas[name] = int(layer.r["generator"])  # scale 1 (baked into B)
    return tensors, ranks, alphas


def _adapter_metadata(ranks: dict[str, int], alphas: dict[str, float]) -> dict:
    """A peft LoraConfig as a dict (what diffusers writes and reads back)."""
    r = Counter(ranks.values()).most_common(1)[0][0]
    a = Counter(alphas.values()).most_common(1)[0][0]
    return {"r": r, "lora_alpha": a, "target_modules": sorted(ranks), "lora_bias": False,
            "rank_pattern": {m: v for m, v in ranks.items() if v != r},
            "alpha_pattern": {m: v for m, v in alphas.items() if v != a},
            "init_lora_weights": "gaussian", "peft_type": "LORA", "bias": "none", "use_dora": False}


@torch.no_grad()
def _unet_file(model: OSDHuman) -> tuple[dict, dict, dict]:
    """(LoRA file tensors, adapter metadata, exact conv_in tensors)."""
    tensors, ranks, alphas = _lora_tensors(model.unet, "unet")
    conv_exact: dict[str, torch.Tensor] = {}
    if model.config.train_conv_in:
        conv = model.conv_in
        delta = (conv.weight - conv.original_weight).float()  # (out, in, k, k)
        if "conv_in" in ranks:  # add its own LoRA (already scaled in ``tensors``)
            a, b = tensors["unet.conv_in.lora_A.weight"], tensors["unet.conv_in.lora_B.weight"]
            conv_exact = {"conv_in.lora_A.weight": a, "conv_in.lora_B.weight": b}
            delta = delta + torch.einsum("or,rikl->oikl", b[:, :, 0, 0].float(), a.float())
        a36, b36 = exact_conv_lora(delta)
        tensors["unet.conv_in.lora_A.weight"], tensors["unet.conv_in.lora_B.weight"] = a36, b36
        ranks["conv_in"] = alphas["conv_in"] = a36.shape[0]  # scale 1
        conv_exact |= {"conv_in.weight": conv.weight, "conv_in.bias": conv.bias}
    return tensors, _adapter_metadata(ranks, alphas), conv_exact


def _write_lora_file(out: Path, tensors: dict, metadata: dict) -> None:
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers={k.removeprefix("unet."): v.detach().cpu().contiguous() for k, v in tensors.items()},
        unet_lora_adapter_metadata=metadata, safe_serialization=True)

    for f in sorted(Path(out).glob("*.safetensors")):  # diffusers writes the metadata in a per-process order
        sort_safetensors_metadata(f)


def export_diffusers(model: OSDHuman, out: str | Path, *, base_model_id: str | None = None,
                     card: dict | None = None, merge: bool = False) -> Path:
    """Write ``model``'s trained tensors into ``out`` (see the module docstring); returns ``out``.
    ``card``: facts for the model card (training data, last validation metrics).
    ``merge``: also write fused diffusers folders ``out/merged/unet`` and ``out/merged/vae``
    (this fuses ``model`` in place, last)."""

    if model.merged:
        raise ValueError("the model's LoRA is already fused: export it from unfused weights")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    unet_tensors, unet_meta, conv_exact = _unet_file(model)
    _write_lora_file(out, unet_tensors, unet_meta)
    vae_tensors, vr, va = _lora_tensors(model.vae, "vae")
    if vae_tensors:
        meta = {f"vae.{k}": v for k, v in _adapter_metadata(vr, va).items()}
        _save(vae_tensors, out / FILES["vae_encoder_lora"], {"lora_adapter_metadata": json.dumps(meta, sort_keys=True)})
        files["vae_encoder_lora"] = FILES["vae_encoder_lora"]
    head = {k[len("prompt_extractor."):]: v for k, v in model.trainable_state_dict().items()
            if k.startswith("prompt_extractor.") and k != "prompt_extractor.embeds"}
    if head:
        _save(head, out / FILES["hfie_head"])
        files["hfie_head"] = FILES["hfie_head"]
    prompt = {}
    if hasattr(model.prompt_extractor, "embeds"):
        prompt["embeds"] = model.prompt_extractor.embeds
    if model.null_prompt_embeds is not None:
        prompt["null_prompt_embeds"] = model.null_prompt_embeds
    if prompt:
        _save(prompt, out / FILES["prompt"])
        files["prompt"] = FILES["prompt"]
    if conv_exact:
        _save(conv_exact, out / FILES["conv_in"])
        files["conv_in"] = FILES["conv_in"]
    c = model.config
    base = base_model_id or c.base_model
    # the files hold B times alpha / r: they are at scale 1, i.e. alpha = rank as saved
    cfg = {"format": EXPORT_FORMAT, "version": 1, "base_model": base, "base_is_random": c.is_random,
           "timestep": c.timestep, "lora_rank": c.lora_rank, "lora_alpha": float(c.lora_rank), "lora_scale": 1.0,
           "trained_lora_alpha": c.lora_alpha, "vae_lora_rank": c.effective_vae_lora_rank,
           "vae_lora_alpha": float(c.effective_vae_lora_rank or 0) or None, "vae_lora_scale": 1.0,
           "trained_vae_lora_alpha": c.effective_vae_lora_alpha, "prompt_source": c.prompt_source,
           "conv_in_lora_rank": unet_meta["rank_pattern"].get("conv_in"), "files": {"unet_lora": LORA_FILE, **files},
           "config": to_dict(c)}
    atomic_write_text(out / "osdhuman_config.json", json.dumps(cfg, indent=2))
    atomic_write_text(out / "README.md", model_card(cfg, card or {}))
    if merge:
        _write_merged(model, out / "merged")
    return out


def _write_merged(model: OSDHuman, folder: Path) -> None:
    """Fused diffusers UNet / VAE folders. Fuses ``model`` in place (it is left inference-only)."""
    model.merge_generator_lora()
    model.unet.save_pretrained(str(folder / "unet"))
    model.vae.save_pretrained(str(folder / "vae"))


def model_card(cfg: dict, card: dict) -> str:
    """README.md in the Hugging Face model-card layout (YAML header, then how to load), with
    what a diffusers user needs to restore with no osdhuman code."""
    base = cfg["base_model"]
    random_base = bool(cfg.get("base_is_random")) or base in ("tiny", "sd21-random")
    named = isinstance(base, str) and base.count("/") == 1 and not base.startswith((".", "/"))
    hub_base = base if named else "stabilityai/stable-diffusion-2-1-base"
    metrics = card.get("metrics") or {}
    data = card.get("training_data") or "not recorded"
    r, vr = cfg["lora_rank"], cfg.get("vae_lora_rank")
    trained = cfg.get("trained_lora_alpha", cfg["lora_alpha"])
    header = ["---"] + ([] if random_base else [f"base_model: {hub_base}"]) + [
        "license: apache-2.0", "library_name: diffusers", "pipeline_tag: image-to-image",
        "tags:", "- image-restoration", "- human-body-restoration", "- one-step-diffusion", "- lora", "- osdhuman",
        "---", ""]
    base_row = (f"`{base}`: a random test preset of osdhuman, NOT Stable Diffusion; these weights restore nothing"
                if random_base else f"`{base}`")
    lines = header + [
        "# OSDHuman weights", "",
        "One-step human body restoration (Gong, Wang et al., ICML 2025), exported by "
        "[osdhuman](https://pypi.org/project/osdhuman/).", "",
        "| field | value |", "|---|---|",
        f"| base model | {base_row} |", f"| timestep | {cfg['timestep']} |",
        f"| UNet LoRA | rank {r}, saved at scale 1 (alpha = rank = {r} as saved; trained at alpha {trained:g}, "
        f"scale {trained / r:g}, already multiplied into B: apply it at scale 1) (conv_in: exact rank "
        f"{cfg.get('conv_in_lora_rank') or '-'}, scale 1) |",
        "| VAE-encoder LoRA | " + (f"rank {vr}, saved at scale 1 (alpha = rank = {vr} as saved; trained at alpha "
                                   f"{cfg.get('trained_vae_lora_alpha') or 0:g})" if vr else "none") + " |",
        f"| prompt | {cfg['prompt_source']} |", f"| training data | {data} |", "",
    ]
    if metrics:
        lines += ["## Last validation metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, (int, float)) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    base_flag = base if not named or random_base else hub_base
    lines += [
        "## Use with osdhuman", "", "```bash", "osdhuman restore photos/ -o restored/ --weights THIS_FOLDER \\",
        f"    --base-model {base_flag} --hfie-encoder ram_swin_large_14m.pth", "```", "",
        "```python", "from osdhuman.pipelines import RestorationPipeline",
        'pipe = RestorationPipeline.from_pretrained("THIS_FOLDER", hfie_encoder="ram_swin_large_14m.pth")',
        'restored = pipe(PIL.Image.open("person.jpg")).images[0]', "```", "",
        "## Use the UNet LoRA with diffusers alone", "",
        "```python", "from diffusers import UNet2DConditionModel",
        f'unet = UNet2DConditionModel.from_pretrained("{hub_base}", subfolder="unet")',
        'unet.load_lora_adapter("THIS_FOLDER/pytorch_lora_weights.safetensors", prefix="unet")  # scale 1',
        "```", "",
        "The trained conv_in weight is inside that file as an exact LoRA (rank in*k*k, B @ A = the weight "
        "change), so diffusers applies it; its trained bias is one more line:", "",
        "```python", "from safetensors.torch import load_file",
        'unet.conv_in.bias.data.copy_(load_file("THIS_FOLDER/unet_conv_in.safetensors")["conv_in.bias"])',
        "```", "",
        "Every LoRA here is at scale 1 (alpha = rank; the trained alpha / rank is baked into B): a loader "
        "that applies alpha / rank from `trained_lora_alpha` on top would scale the change twice. "
        "The VAE-encoder LoRA loads the same way: "
        '`vae.load_lora_adapter("THIS_FOLDER/vae_encoder_lora.safetensors", prefix="vae")`.', "",
        "## Restore with no osdhuman code", "",
        "1. `lq`: the image as float in [-1, 1], (1, 3, H, W), H and W multiples of 8.",
        "2. Prompt (HFIE), when `prompt` is `hfie_lq`: resize `(lq + 1) / 2` to 384x384 (bicubic, "
        "`antialias=True`, `align_corners=False`), clamp to [0, 1], normalise with ImageNet mean "
        "(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); run RAM's Swin-L image encoder "
        "(`ram_swin_large_14m.pth`, keys `visual_encoder.*`; timm's `swin_large_patch4_window12_384`) to its "
        "final LayerNorm: 12x12 tokens of 1536; put their mean FIRST (145 tokens); apply RAM's `image_proj` "
        "(Linear 1536 -> 512). Then `p = LayerNorm(MHA(query, tokens, tokens))` with "
        "`nn.MultiheadAttention(1024, 8, kdim=512, vdim=512, batch_first=True)`; from `hfie_head.safetensors`: "
        "`query` (77, 1024), `attn.q_proj_weight`, `attn.k_proj_weight`, `attn.v_proj_weight`, `attn.in_proj_bias`, "
        "`attn.out_proj.weight`, `attn.out_proj.bias` (the MHA's own names), `norm.weight`, `norm.bias`. "
        "For `null` / `text` prompts the embedding is `prompt.safetensors` `embeds`.",
        "3. `z = vae.encode(lq).latent_dist.mode() * 0.18215` (the posterior mode; with the VAE-encoder LoRA).",
        f"4. `eps = unet(z, {cfg['timestep']}, encoder_hidden_states=p).sample` (LoRA and conv_in applied).",
        "5. `a = alphas_cumprod[t]` of SD's scaled_linear schedule (betas from 0.00085 to 0.012 in sqrt space, "
        "1000 steps): `x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()`, in float32 or float64 (at t = 999 "
        "eps errors are amplified 14.6x).",
        "6. `image = vae.decode(x0 / 0.18215).sample.clamp(-1, 1)`; osdhuman then applies an AdaIN colour fix "
        "against `lq` by default and tiles images larger than 512 px.", "",
    ]
    return "\n".join(lines)
