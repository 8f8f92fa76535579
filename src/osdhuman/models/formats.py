"""Reading weights in the formats found in the wild (FACTS 9), detected from the files.

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
* ``group-release``    the authors' group layout (HAODiff, OSDFace): a folder with
                       ``pytorch_lora_weights.safetensors`` and an embedder file whose keys
                       are mapped onto the HFIE head by ``HEAD_KEY_TABLE``;
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

__all__ = [
    "EMBEDDER_FILES",
    "EXPORT_FORMAT",
    "HEAD_KEY_TABLE",
    "LORA_FILE",
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
_TENSOR_EXT = (".safetensors", ".pth", ".pt", ".bin", ".pkl", ".ckpt")
_LORA_KEY = re.compile(r"^(?P<mod>.+?)\.(?P<ab>lora_A|lora_B)(?:\.(?P<adapter>[^.]+))?\.(?P<p>weight|bias)$")
_ALPHA_KEY = re.compile(r"^(?P<mod>.+)\.alpha$")

# HFIE head: our parameter name -> names other releases use (after stripping a module prefix).
# nn.MultiheadAttention keeps q/k/v apart (q_proj_weight ...) when kdim != embed_dim, as ours
# does (kdim 512, embed 1024); packed in_proj_weight is split when the shapes allow it.
HEAD_KEY_TABLE: dict[str, tuple[str, ...]] = {
    "query": ("query", "queries", "learnable_query", "learned_query", "query_embed", "query_embeds",
              "query_tokens", "prompt_query", "learnable_queries", "q"),
    "attn.q_proj_weight": ("attn.q_proj_weight", "q_proj.weight"),
    "attn.k_proj_weight": ("attn.k_proj_weight", "k_proj.weight"),
    "attn.v_proj_weight": ("attn.v_proj_weight", "v_proj.weight"),
    "attn.in_proj_bias": ("attn.in_proj_bias",),
    "attn.out_proj.weight": ("attn.out_proj.weight", "out_proj.weight"),
    "attn.out_proj.bias": ("attn.out_proj.bias", "out_proj.bias"),
    "norm.weight": ("norm.weight", "ln.weight", "layer_norm.weight", "norm_out.weight", "post_norm.weight"),
    "norm.bias": ("norm.bias", "ln.bias", "layer_norm.bias", "norm_out.bias", "post_norm.bias"),
}
_HEAD_PREFIXES = ("module.", "model.", "hfie.", "head.", "embedder.", "img_encoder.", "prompt_extractor.")
_ATTN_ALIASES = ("cross_attn.", "mha.", "attention.", "multihead_attn.", "attn.")


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


# ------------------------------------------------------------------------------ files
def load_tensor_file(path: Path) -> tuple[dict, dict[str, str]]:
    """(dict, safetensors metadata) from a safetensors file or a torch pickle (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it names {found.group(1)})" if found else ""
        raise WeightsError(f"{path}: refused: a pickle that needs code to load{what}; osdhuman never "
                           "executes pickled code. Save its tensors as a plain dict or safetensors.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj, {}


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
    if kind in ("group-release", "diffusers-lora"):
        fw = _read_lora_file(_lora_file_in(p), kind)
        emb = _embedder_file(p)
        if emb is not None:
            fw.head = map_head(load_tensor_file(emb)[0], where=emb)
        fw.path = p
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


# ------------------------------------------------------------------------------ HFIE head
def map_head(sd: dict, where: Path) -> dict[str, torch.Tensor]:
    """An embedder file's tensors -> our HFIE head names (``HEAD_KEY_TABLE``), every tensor
    accounted for; packed ``in_proj_weight`` split into q / k / v when it is square per part."""
    sd = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    norm: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for p in _HEAD_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        for alias in _ATTN_ALIASES:
            if k.startswith(alias):
                k = "attn." + k[len(alias):]
                break
        norm[k] = v
    if "attn.in_proj_weight" in norm:
        w = norm.pop("attn.in_proj_weight")
        if w.ndim != 2 or w.shape[0] % 3:
            raise WeightsError(f"{where}: in_proj_weight of shape {tuple(w.shape)} is not 3 stacked projections")
        norm["attn.q_proj_weight"], norm["attn.k_proj_weight"], norm["attn.v_proj_weight"] = w.chunk(3)
    if "attn.in_proj_bias" not in norm and all(f"attn.{c}_proj.bias" in norm for c in "qkv"):
        norm["attn.in_proj_bias"] = torch.cat([norm.pop(f"attn.{c}_proj.bias") for c in "qkv"])
    out, unknown = {}, []
    for k, v in norm.items():
        ours = next((o for o, names in HEAD_KEY_TABLE.items() if k in names or k == o), None)
        if ours is None:
            unknown.append(k)
            continue
        out[ours] = v.reshape(v.shape[-2:]) if ours == "query" and v.ndim == 3 and v.shape[0] == 1 else v
    if unknown:
        raise WeightsError(f"{where}: {len(unknown)} embedder tensor(s) match no HFIE head parameter "
                           f"(query, MultiheadAttention, LayerNorm): {', '.join(unknown[:6])}"
                           + (f" ... ({len(unknown)})" if len(unknown) > 6 else ""))
    return out


# ------------------------------------------------------------------------------ our export
def _read_export(folder: Path) -> ForeignWeights:
    cfg = json.loads((folder / "osdhuman_config.json").read_text())
    fw = _read_lora_file(_lora_file_in(folder), "osdhuman-export")
    fw.path = folder
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
    fw = ForeignWeights(kind="osediff", path=path)
    _parse_lora_dict({f"unet.{k}": v for k, v in data["state_dict_unet"].items()}, path, fw)
    _parse_lora_dict({f"vae.{k}": v for k, v in data["state_dict_vae"].items()}, path, fw)
    ranks = {"unet": data.get("rank_unet"), "vae": data.get("rank_vae")}
    for part_name, part in (("unet", fw.unet), ("vae", fw.vae)):
        found = set(part.ranks().values())
        r = ranks[part_name]
        if r is not None and found and found != {int(r)}:
            raise WeightsError(f"{path}: rank_{part_name}={r} but its LoRA tensors have rank {sorted(found)}")
        fw.default_alpha[part_name] = 8.0  # peft's old default, which OSEDiff keeps (FACTS 1, 9)
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
