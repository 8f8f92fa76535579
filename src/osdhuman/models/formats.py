"""Reading weights in the formats found in the wild (docs/reference.md §weights), detected from the files.

    read_weights(path) -> ForeignWeights      # tensors by part, what the files record

Kinds (``ForeignWeights.kind``):

* ``osdhuman``         our own folder (osdhuman_weights.safetensors + osdhuman_config.json);
                       read by ``OSDHuman.load_weights``, only classified here;
* ``osdhuman-export``  what ``osdhuman export`` writes (diffusers LoRA + our side files);
* ``diffusers-lora``   a diffusers / peft LoRA file or folder: peft keys (``lora_A`` /
                       ``lora_B``, with or without an adapter name), the older diffusers keys
                       (``lora.down`` / ``lora.up``, ``processor`` names: converted with
                       diffusers' own ``convert_unet_state_dict_to_peft``), ``unet.`` /
                       ``vae.`` prefixes or none, kohya ``.alpha`` scalars;
* ``osdface``         OSDFace's folder: ``pytorch_lora_weights.safetensors``,
                       ``embedding_change_weights.pth`` and ``associate_2.ckpt`` (VQ-VAE
                       encoder + codebook) -> ``osdface_prompt``;
* ``group-release``    a LoRA file beside ``img_encoder_weights.pth`` (or another embedder
                       file); resolved when read into
                       ``haodiff`` (``{"model_state_dict", "swinir_kwargs", "performer_kwargs"}``
                       -> ``haodiff_prompt``) or the group's house style for an HFIE head
                       (``{"model_state_dict": {query, attn.*, norm.*}, "<name>_kwargs": ...}``);
                       anything else is refused with its top-level keys and first tensors;
* ``osediff``          OSEDiff's ``osediff.pkl`` (``torch.save`` of a plain dict).

Pickles are read with ``torch.load(weights_only=True)``: one that needs code is refused.
Everything here is plain tensor bookkeeping; ``osdhuman.models.pretrained`` builds the model.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from osdhuman.models.errors import WeightsError
from osdhuman.models.families import FAMILIES
from osdhuman.models.haodiff_prompt import HAODIFF_ENCODER_FILE, load_haodiff_encoder
from osdhuman.models.osdface_prompt import OSDFACE_CODEBOOK_FILE, OSDFACE_EMBED_FILE, load_osdface_encoder
from osdhuman.models.tensor_files import load_tensor_file

# diffusers is imported inside the one conversion that needs it (~1.5 s).

__all__ = [
    "EMBEDDER_FILES",
    "EXPORT_FORMAT",
    "HEAD_KEY_TABLE",
    "LORA_FILE",
    "RELEASE_HELP",
    "ForeignWeights",
    "LoraPart",
    "classify",
    "load_tensor_file",
    "read_weights",
]

LORA_FILE = "pytorch_lora_weights.safetensors"
EXPORT_FORMAT = "osdhuman-export"
EMBEDDER_FILES = ("img_encoder_weights.pth", "img_encoder_weights.safetensors", "embedding_change_weights.pth",
                  "embedding_change_weights.safetensors", "hfie_head.safetensors")
RELEASE_HELP = (f"HAODiff keeps {HAODIFF_ENCODER_FILE} beside the LoRA file; OSDFace keeps {OSDFACE_EMBED_FILE} "
                f"and {OSDFACE_CODEBOOK_FILE} there")
_TENSOR_EXT = (".safetensors", ".pth", ".pt", ".bin", ".pkl", ".ckpt")
_LORA_KEY = re.compile(r"^(?P<mod>.+?)\.(?P<ab>lora_A|lora_B)(?:\.(?P<adapter>[^.]+))?\.(?P<p>weight|bias)$")
_ALPHA_KEY = re.compile(r"^(?P<mod>.+)\.alpha$")

# HFIE head: our parameter names (nn.MultiheadAttention keeps q/k/v apart when kdim != embed_dim,
# as ours does: kdim 512, embed 1024). No public file uses other names, so no aliases are guessed.
HEAD_KEY_TABLE: tuple[str, ...] = (
    "query", "attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight", "attn.in_proj_bias",
    "attn.out_proj.weight", "attn.out_proj.bias", "norm.weight", "norm.bias")


@dataclass
class LoraPart:
    """LoRA tensors of one model (UNet or VAE) keyed by module name."""

    A: dict[str, torch.Tensor] = field(default_factory=dict)  # (r, in) | (r, in, k, k)
    B: dict[str, torch.Tensor] = field(default_factory=dict)  # (out, r) | (out, r, 1, 1)
    B_bias: dict[str, torch.Tensor] = field(default_factory=dict)  # (out,) peft lora_bias
    alpha: dict[str, float] = field(default_factory=dict)  # recorded per module (kohya / metadata)

    def ranks(self) -> dict[str, int]:
        return {m: int(b.shape[1]) for m, b in self.B.items()}

    def __len__(self) -> int:
        return len(self.B)


@dataclass
class ForeignWeights:
    kind: str
    path: Path
    unet: LoraPart = field(default_factory=LoraPart)
    vae: LoraPart = field(default_factory=LoraPart)
    conv_in: dict[str, torch.Tensor] = field(default_factory=dict)  # full trained conv_in
    head: dict[str, torch.Tensor] = field(default_factory=dict)  # HFIE head, our names
    prompt: dict[str, torch.Tensor] = field(default_factory=dict)  # embeds / null_prompt_embeds
    recorded: dict = field(default_factory=dict)  # rank, alpha, timestep, config ... as recorded
    default_alpha: dict[str, float] = field(default_factory=dict)  # part -> alpha for all modules
    family: str = "lora"  # osdhuman | osediff | haodiff | osdface | lora (osdhuman.models.families)
    prompt_encoder: object = None  # haodiff / osdface: their prompt encoder (an nn.Module), loaded
    files: list[str] = field(default_factory=list)  # every file read
    ignored: list[str] = field(default_factory=list)  # tensors the family's own loader also ignores
    hfie_encoder: dict[str, torch.Tensor] = field(default_factory=dict)  # house style: HFIE's encoder, if shipped


# ------------------------------------------------------------------------------ files
def _listing(d: dict, n: int = 6) -> str:
    keys = list(d)
    more = f" ... ({len(keys)} keys)" if len(keys) > n else ""
    return ", ".join(map(str, keys[:n])) + more


# ------------------------------------------------------------------------------ classification
def classify(path: str | Path) -> str:
    """The kind of weights at ``path`` (see the module docstring); WeightsError if unknown."""
    p = Path(path).expanduser()
    if p.is_dir():
        cfg = p / "osdhuman_config.json"
        if cfg.is_file():
            try:
                fmt = json.loads(cfg.read_text()).get("format")
            except (json.JSONDecodeError, OSError, AttributeError) as exc:
                raise WeightsError(f"{cfg}: not valid JSON ({exc})") from None
            if fmt == EXPORT_FORMAT:
                return "osdhuman-export"
            if fmt == "osdhuman-openvino":  # models/openvino_export.py
                raise WeightsError(f"{p}: an OpenVINO export (inference only: `osdhuman restore --weights {p}`); "
                                   f"train and export read the PyTorch weights it was exported from")
            if fmt == "osdhuman-weights":
                return "osdhuman"
        if (p / "osdhuman_weights.safetensors").is_file():
            return "osdhuman"
        if (p / "osediff.pkl").is_file():
            return "osediff"
        if (p / LORA_FILE).is_file() or (p / "pytorch_lora_weights.bin").is_file():
            if any((p / n).is_file() for n in (OSDFACE_EMBED_FILE, OSDFACE_CODEBOOK_FILE)):
                return "osdface"
            return "group-release" if _embedder_file(p) else "diffusers-lora"
        found = sorted(x.name for x in p.iterdir())[:12]
        raise WeightsError(f"{p}: no weights recognised (expected osdhuman_config.json, {LORA_FILE} or "
                           f"osediff.pkl); found: {', '.join(found) or 'an empty folder'}")
    if p.is_file():
        if p.suffix not in _TENSOR_EXT:
            raise WeightsError(f"{p}: not a weights file (expected one of {', '.join(_TENSOR_EXT)})")
        return "file"
    raise WeightsError(f"{p}: no such file or folder")


def _embedder_file(folder: Path) -> Path | None:
    for name in EMBEDDER_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_weights(path: str | Path) -> ForeignWeights:
    """Read every tensor of the weights at ``path`` into a ForeignWeights (not for ``osdhuman``
    folders, which OSDHuman.load_weights reads). Unknown tensors raise WeightsError with names."""
    p = Path(path).expanduser()
    kind = classify(p)
    if kind == "osdhuman":
        raise WeightsError(f"{p}: an osdhuman weights folder: load it with load_osdhuman")
    if kind == "osdhuman-export":
        return _read_export(p)
    if kind == "osediff":
        return _read_osediff(p / "osediff.pkl")
    if kind in ("group-release", "diffusers-lora", "osdface"):
        lora = _lora_file_in(p)
        fw = _read_lora_file(lora, kind)
        fw.path, fw.files = p, [str(lora)]
        if kind == "osdface":
            _read_osdface(p, fw)
        emb = _embedder_file(p)
        if kind == "group-release" and emb is not None:
            _read_embedder(emb, fw)
        return fw
    data, meta = load_tensor_file(p)  # a single file
    if "state_dict_unet" in data:
        return _read_osediff(p, data)
    return _read_lora_file(p, "diffusers-lora", (data, meta))


def _lora_file_in(folder: Path) -> Path:
    for name in (LORA_FILE, "pytorch_lora_weights.bin"):
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{folder}: no {LORA_FILE}")


# ------------------------------------------------------------------------------ LoRA state dicts
def _metadata(meta: dict[str, str], where: Path) -> dict:
    raw = meta.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise WeightsError(f"{where}: lora_adapter_metadata is not valid JSON") from None


def _split_part(key: str) -> tuple[str, str]:
    """'unet.x' -> ('unet', 'x'); no prefix: the VAE encoder by its module names, else the UNet."""
    for prefix in ("unet.", "vae."):
        if key.startswith(prefix):
            return prefix[:-1], key[len(prefix):]
    if key.startswith(("text_encoder.", "te.", "lora_te")):
        return "text_encoder", key
    if key.startswith(("encoder.", "quant_conv.")):
        return "vae", key
    return "unet", key


def _parse_lora_dict(sd: dict, where: Path, fw: ForeignWeights, extra_ok=("conv_in.",)) -> None:
    """Fill fw.unet / fw.vae / fw.conv_in from a flat state dict (any key style)."""
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    sd = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    if any(".lora.down." in k or "_lora.down." in k or ".processor." in k for k in sd):
        sd = convert_unet_state_dict_to_peft(sd)  # legacy diffusers names -> peft
    unmatched, adapters = [], {}
    for key, v in sd.items():
        part_name, k = _split_part(key)
        m = _LORA_KEY.match(k)
        a = _ALPHA_KEY.match(k)
        if part_name == "text_encoder":
            unmatched.append(f"{key} (text-encoder LoRA: OSDHuman has no text encoder)")
        elif m:
            part = fw.unet if part_name == "unet" else fw.vae
            mod, adapter = m["mod"], m["adapter"]
            if mod in adapters.get(part_name, {}) and adapters[part_name][mod] != adapter:
                unmatched.append(f"{key} (module {mod} has LoRA under two adapters: "
                                 f"{adapters[part_name][mod]!r} and {adapter!r})")
                continue
            adapters.setdefault(part_name, {})[mod] = adapter
            target = part.A if m["ab"] == "lora_A" else (part.B if m["p"] == "weight" else part.B_bias)
            target[mod] = v
        elif a and v.numel() == 1:
            (fw.unet if part_name == "unet" else fw.vae).alpha[a["mod"]] = float(v)
        elif part_name == "unet" and k.startswith(extra_ok) and k.endswith((".weight", ".bias")):
            fw.conv_in[k.rsplit(".", 1)[-1]] = v  # conv_in.weight | conv_in.base_layer.weight
        else:
            unmatched.append(key)
    for part_name, part in (("unet", fw.unet), ("vae", fw.vae)):
        lonely = sorted(set(part.A) ^ set(part.B))
        unmatched += [f"{part_name}.{mod} (lora_A without lora_B or the reverse)" for mod in lonely]
    if unmatched:
        raise WeightsError(f"{where}: {len(unmatched)} tensor(s) not understood: {'; '.join(unmatched[:5])}"
                           + (f"; ... {len(unmatched) - 5} more" if len(unmatched) > 5 else ""))


def _read_lora_file(path: Path, kind: str, loaded: tuple[dict, dict] | None = None) -> ForeignWeights:
    data, meta = loaded or load_tensor_file(path)
    if not data:
        raise WeightsError(f"{path}: holds no tensors")
    fw = ForeignWeights(kind=kind, path=path)
    _parse_lora_dict(data, path, fw)
    if not len(fw.unet) and not len(fw.vae):
        raise WeightsError(f"{path}: no LoRA tensors (lora_A / lora_B or lora.down / lora.up) found; "
                           f"it holds: {_listing(data)}")
    md = _metadata(meta, path)
    for part_name, part in (("unet", fw.unet), ("vae", fw.vae)):
        sub = {k[len(part_name) + 1:]: v for k, v in md.items() if k.startswith(part_name + ".")} or (
            md if part_name == "unet" else {})
        if "lora_alpha" in sub:
            fw.default_alpha[part_name] = float(sub["lora_alpha"])
        for pat, val in (sub.get("alpha_pattern") or {}).items():
            part.alpha.setdefault(pat.strip("^$"), float(val))
    for key in ("timestep", "osdhuman_timestep"):
        if key in meta:
            fw.recorded["timestep"] = int(meta[key])
    return fw


# ------------------------------------------------------------------------------ embedders
def _family_defaults(fw: ForeignWeights, family: str) -> None:
    f = FAMILIES[family]
    fw.family = fw.kind = family
    fw.recorded.update({"timestep": f.timestep, "guidance_scale": f.guidance_scale, "latent_mode": f.latent,
                        "color_fix": f.color_fix})


def _read_osdface(folder: Path, fw: ForeignWeights) -> None:
    for name in (OSDFACE_EMBED_FILE, OSDFACE_CODEBOOK_FILE):
        if not (folder / name).is_file():
            raise WeightsError(f"{folder / name}: not found: an OSDFace folder needs {OSDFACE_EMBED_FILE} and "
                               f"{OSDFACE_CODEBOOK_FILE} (the VQ-VAE encoder + codebook) beside {LORA_FILE}")
    fw.prompt_encoder = load_osdface_encoder(folder / OSDFACE_CODEBOOK_FILE, folder / OSDFACE_EMBED_FILE)
    fw.ignored = list(fw.prompt_encoder.ignored)
    fw.files += [str(folder / OSDFACE_EMBED_FILE), str(folder / OSDFACE_CODEBOOK_FILE)]
    _family_defaults(fw, "osdface")


def _read_embedder(path: Path, fw: ForeignWeights) -> None:
    """HAODiff's encoder file, or the house style holding an HFIE head; else WeightsError."""
    data = load_tensor_file(path)[0]
    fw.files.append(str(path))
    if "swinir_kwargs" in data or "performer_kwargs" in data:
        fw.prompt_encoder = load_haodiff_encoder(path, data)
        fw.ignored = list(fw.prompt_encoder.ignored)
        _family_defaults(fw, "haodiff")
        return
    sd = data.get("model_state_dict") if isinstance(data.get("model_state_dict"), dict) else data
    kwargs = {k: v for k, v in data.items() if str(k).endswith("_kwargs")}
    fw.hfie_encoder = {k[len("encoder."):]: v for k, v in sd.items()
                       if str(k).startswith("encoder.") and torch.is_tensor(v)}  # RAM's Swin-L, when shipped
    fw.head = map_head({k: v for k, v in sd.items() if not str(k).startswith("encoder.")}, where=path, top=list(data))
    fw.recorded.update({k: v for kw in kwargs.values() if isinstance(kw, dict) for k, v in kw.items()
                        if k in ("timestep", "prompt_source")})
    fw.family = "osdhuman"


def map_head(sd: dict, where: Path, top: list | None = None) -> dict[str, torch.Tensor]:
    """An HFIE head state dict (our names, ``HEAD_KEY_TABLE``), every tensor accounted for;
    a (1, L, D) query is taken as (L, D). Anything else: WeightsError with the file's top-level
    keys and the first tensors that match nothing."""
    tensors = {str(k): v for k, v in sd.items() if torch.is_tensor(v)}
    unknown = [k for k in tensors if k not in HEAD_KEY_TABLE]
    if unknown or not tensors:
        keys = ", ".join(map(str, (top if top is not None else list(sd))[:8]))
        raise WeightsError(f"{where}: embedder not understood (neither HAODiff's SwinIR + Performer encoder nor an "
                           f"HFIE head); top-level keys: {keys or 'none'}; first unmatched tensors: "
                           f"{', '.join(unknown[:6]) or 'no tensors'}" + (f" ... ({len(unknown)})" if len(unknown) > 6 else ""))
    q = tensors.get("query")
    if q is not None and q.ndim == 3 and q.shape[0] == 1:
        tensors["query"] = q.reshape(q.shape[-2:])
    return tensors


# ------------------------------------------------------------------------------ our export
def _read_export(folder: Path) -> ForeignWeights:
    cfg = json.loads((folder / "osdhuman_config.json").read_text())
    fw = _read_lora_file(_lora_file_in(folder), "osdhuman-export")
    fw.path, fw.family = folder, "osdhuman"
    fw.files = [str(folder / "osdhuman_config.json"), str(_lora_file_in(folder))] + [
        str(folder / name) for name in cfg.get("files", {}).values() if name != LORA_FILE]
    fw.recorded.update(cfg)
    files = cfg.get("files", {})
    vae_name = files.get("vae_encoder_lora")
    if vae_name:
        data, meta = load_tensor_file(folder / vae_name)
        _parse_lora_dict(data, folder / vae_name, fw)
        md = _metadata(meta, folder / vae_name)
        if "vae.lora_alpha" in md:
            fw.default_alpha["vae"] = float(md["vae.lora_alpha"])
    for key, target in (("hfie_head", fw.head), ("prompt", fw.prompt)):
        if files.get(key):
            target.update(load_tensor_file(folder / files[key])[0])
    if files.get("conv_in"):  # exact trained conv_in + its own LoRA replace the rank in*k*k form
        data = load_tensor_file(folder / files["conv_in"])[0]
        fw.conv_in = {k.split(".")[-1]: v for k, v in data.items() if k in ("conv_in.weight", "conv_in.bias")}
        for d in (fw.unet.A, fw.unet.B, fw.unet.alpha):
            d.pop("conv_in", None)
        if "conv_in.lora_A.weight" in data:
            fw.unet.A["conv_in"], fw.unet.B["conv_in"] = data["conv_in.lora_A.weight"], data["conv_in.lora_B.weight"]
    return fw


# ------------------------------------------------------------------------------ OSEDiff
def _read_osediff(path: Path, data: dict | None = None) -> ForeignWeights:
    data = data if data is not None else load_tensor_file(path)[0]
    missing = [k for k in ("state_dict_unet", "state_dict_vae") if k not in data]
    if missing:
        raise WeightsError(f"{path}: an OSEDiff checkpoint needs {', '.join(missing)}; it holds: {_listing(data)}")
    fw = ForeignWeights(kind="osediff", path=path, family="osediff", files=[str(path)])
    _parse_lora_dict({f"unet.{k}": v for k, v in data["state_dict_unet"].items()}, path, fw)
    _parse_lora_dict({f"vae.{k}": v for k, v in data["state_dict_vae"].items()}, path, fw)
    ranks = {"unet": data.get("rank_unet"), "vae": data.get("rank_vae")}
    for part_name, part in (("unet", fw.unet), ("vae", fw.vae)):
        found = set(part.ranks().values())
        r = ranks[part_name]
        if r is not None and found and found != {int(r)}:
            raise WeightsError(f"{path}: rank_{part_name}={r} but its LoRA tensors have rank {sorted(found)}")
        fw.default_alpha[part_name] = 8.0  # peft's old default, which OSEDiff keeps (docs/reference.md §generator, §weights)
    listed = set()
    for key in ("unet_lora_encoder_modules", "unet_lora_decoder_modules", "unet_lora_others_modules"):
        listed |= set(data.get(key) or [])
    if listed and set(fw.unet.B) - listed:
        extra = sorted(set(fw.unet.B) - listed)[:4]
        raise WeightsError(f"{path}: LoRA tensors for modules not in its module lists: {', '.join(extra)}")
    fw.recorded["timestep"] = 999
    return fw


def most_common(values: dict[str, float]) -> float | None:
    return Counter(values.values()).most_common(1)[0][0] if values else None
