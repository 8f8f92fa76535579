"""``export_openvino``: an OSDHuman model as OpenVINO IR, for fast restoration on a CPU.

    OUT/vae_encoder.xml|.bin   (B,3,H,W) in [-1,1] -> z mean, z std (B,4,H/8,W/8), times 0.18215;
                               the VAE-encoder LoRA merged
    OUT/unet_step.xml|.bin     z_L (B,4,h,w), prompt (B,77,D) -> z_hat (B,4,h,w): Eq. 2 at the
                               recorded timestep, UNet LoRA and trained conv_in merged
    OUT/vae_decoder.xml|.bin   z_hat (B,4,h,w) -> image (B,3,8h,8w) in [-1,1]
    OUT/prompt_encoder.xml|.bin  HFIE (Swin-L + head): the preprocessed (B,3,S,S) image -> prompt
                               (B,77,D); text / null prompts are one constant instead:
    OUT/prompt_embeds.npy      (1,77,D) float32
    OUT/vae_{encoder,decoder}_stats.xml|.bin   the VAE part -> every GroupNorm's per-sample,
                               per-group mean and variance, (B, 2 * sum of groups): recorded
                               once on a downscaled copy of a photo too large for one tile
    OUT/vae_{encoder,decoder}_shared.xml|.bin  the VAE part normalising with given statistics
                               (its tiles then agree, as PyTorch's GroupNormStats makes them)
    OUT/osdhuman_config.json   format, osdhuman version, precision, shapes, timestep, scaling,
                               prompt kind, files

Why our own: none of the one-step restorers ships anything but PyTorch, and
optimum-intel's exporters know the Stable Diffusion pipelines, not a one-step generator with
a fused LoRA and an image prompt. We trace the three model parts and the prompt one by one
(``openvino.convert_model``) and free each before the next, so conversion needs about one
part's memory at a time.

Shapes: every input keeps a dynamic batch and a dynamic height / width in the IR; the runtime
(``osdhuman.pipelines.openvino_backend``) compiles a static copy per input shape it meets
(512 tiles and person crops: one shape), which is what static shapes would cost, without a
second export for other sizes.

Precision: ``fp32`` keeps float32 weights and asks for float32 compute; ``bf16`` stores the
weights as float16 (half the disk) and computes in bfloat16 where the CPU has AVX-512 BF16
or AMX; ``int8w`` compresses the weights of every MatMul / convolution to 8 bits (nncf,
asymmetric per channel) and computes as bf16 does. The PSNR each gives against the PyTorch
fp32 restore is in README.md ("Restore on a CPU").
"""

from __future__ import annotations

import gc
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from osdhuman import __version__
from osdhuman.config import to_dict
from osdhuman.models.errors import WeightsError
from osdhuman.models.hfie import HFIE
from osdhuman.models.osdhuman import OSDHuman
from osdhuman.models.prompt import FixedPrompt
from osdhuman.outputs import atomic_path, atomic_write_bytes, atomic_write_text, move_into_place

# openvino and nncf (the optional osdhuman[openvino] extra) are imported inside the functions that need them.

__all__ = ["OV_FORMAT", "OV_FORMAT_VERSION", "OV_PARTS", "OV_PRECISIONS", "OpenVINOMissing",
           "cpu_supports_bf16", "default_precision", "export_openvino", "import_openvino", "is_openvino_export", "read_openvino_config"]

OV_FORMAT = "osdhuman-openvino"
OV_FORMAT_VERSION = 1
OV_CONFIG = "osdhuman_config.json"
OV_PRECISIONS = ("fp32", "bf16", "int8w")
OV_PARTS = ("vae_encoder", "unet_step", "vae_decoder")
PROMPT_IR, PROMPT_CONST = "prompt_encoder", "prompt_embeds.npy"
EXTRA = "pip install 'osdhuman[openvino]'"


class OpenVINOMissing(WeightsError):
    """The optional OpenVINO runtime (or nncf, for int8w) is not installed."""


def import_openvino(nncf: bool = False):
    """The ``openvino`` module (and ``nncf``); OpenVINOMissing naming the extra when absent."""
    try:
        import openvino as ov
    except ImportError:
        raise OpenVINOMissing(f"the OpenVINO backend needs the optional extra: {EXTRA}") from None
    if nncf:
        try:
            import nncf as _nncf  # noqa: F401 - only to see that the extra is installed
        except ImportError:
            raise OpenVINOMissing(f"--precision int8w needs nncf, part of the optional extra: {EXTRA}") from None
    return ov


def cpu_supports_bf16(core=None) -> bool:
    """Does OpenVINO's CPU plugin compute in bfloat16 natively here (AVX-512 BF16 or AMX)?"""
    core = core or import_openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_precision() -> str:
    """The fastest precision measured to keep the 40 dB bar (README "Restore on a CPU") against
    torch fp32 with the default colour fix: fp32. bf16 (5.6x faster here) reached 40.9 dB without
    a colour fix and 42.1 dB with the wavelet one, but 33.1 dB with adain (the default), which
    rescales the flat output of random weights ~3x; so bf16 is offered, not defaulted, until it
    is measured on trained weights (int8w gains nothing over bf16 and costs dB)."""
    return "fp32"


def is_openvino_export(path: str | Path) -> bool:
    """True when ``path`` is a folder written by ``export_openvino`` (any version)."""
    cfg = Path(path).expanduser() / OV_CONFIG
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == OV_FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def read_openvino_config(folder: str | Path) -> dict:
    """The export's config, checked: format version and every file it names present
    (WeightsError naming the folder and the problem otherwise)."""
    folder = Path(folder).expanduser()
    path = folder / OV_CONFIG
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable OpenVINO export config ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != OV_FORMAT:
        raise WeightsError(f"{path}: not an osdhuman OpenVINO export (format {cfg.get('format')!r})")
    if cfg.get("version") != OV_FORMAT_VERSION:
        raise WeightsError(f"{folder}: OpenVINO export of format version {cfg.get('version')!r} (written by osdhuman "
                           f"{cfg.get('osdhuman_version', '?')}); this osdhuman reads version {OV_FORMAT_VERSION}: "
                           f"export the weights again with `osdhuman export WEIGHTS -o OUT --format openvino`")
    if cfg.get("precision") not in OV_PRECISIONS:
        raise WeightsError(f"{path}: unknown precision {cfg.get('precision')!r} (expected one of {OV_PRECISIONS})")
    for name in cfg.get("files", {}).values():
        if not (folder / name).is_file():
            raise WeightsError(f"{folder / name}: missing from the OpenVINO export; export the weights again")
    return cfg


# ---------------------------------------------------------------------------------------
class _Encoder(nn.Module):
    """(B,3,H,W) in [-1,1] -> posterior mean and std of z_L, both times the scaling factor."""

    def __init__(self, model: OSDHuman):
        super().__init__()
        self.vae, self.scale = model.vae, model.scaling_factor

    def forward(self, lq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(lq).latent_dist
        return dist.mean * self.scale, dist.std * self.scale  # (B,4,h,w) each


class _UNetStep(nn.Module):
    """Eq. 2 at the model's timestep: z_L (B,4,h,w), prompt (B,77,D) -> z_hat (B,4,h,w)."""

    def __init__(self, model: OSDHuman):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return self.model.predict_x0(z, prompt)


class _Decoder(nn.Module):
    def __init__(self, model: OSDHuman):
        super().__init__()
        self.model = model

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z_hat)  # (B,3,8h,8w) in [-1,1]


class _NormStats(nn.Module):
    """``inner`` with every GroupNorm of ``root`` tapped. ``record``: returns the statistics of
    each GroupNorm call in order, (B, 2G) each ([mean, var]), concatenated; ``apply``: takes
    them (the same layout) instead of its input's."""

    def __init__(self, inner: nn.Module, root: nn.Module, mode: str):
        super().__init__()
        self.inner, self.mode = inner, mode
        self.norms = [m for m in root.modules() if isinstance(m, nn.GroupNorm)]

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None):
        found, at = [], [0]

        def make(gn: nn.GroupNorm):
            def forward(inp: torch.Tensor) -> torch.Tensor:
                b, g = inp.shape[0], gn.num_groups
                grouped = inp.reshape(b, g, -1)  # (B, G, C/G*H*W)
                if self.mode == "record":
                    mean, var = grouped.mean(-1, keepdim=True), grouped.var(-1, unbiased=False, keepdim=True)
                    found.append(torch.cat([mean, var], 1).flatten(1))  # (B, 2G)
                else:
                    o = at[0]
                    mean, var = stats[:, o:o + g, None], stats[:, o + g:o + 2 * g, None]
                    at[0] = o + 2 * g
                y = ((grouped - mean) / torch.sqrt(var + gn.eps)).reshape(inp.shape)
                if gn.affine:
                    shape = (1, -1) + (1,) * (inp.ndim - 2)
                    y = y * gn.weight.reshape(shape) + gn.bias.reshape(shape)
                return y
            return forward

        for gn in self.norms:
            gn.forward = make(gn)
        try:
            out = self.inner(x)
        finally:
            for gn in self.norms:
                gn.__dict__.pop("forward", None)
        return torch.cat(found, 1) if self.mode == "record" else out


class _Prompt(nn.Module):
    """HFIE after its preprocessing (resize + ImageNet normalisation stay in PyTorch)."""

    def __init__(self, hfie: nn.Module):
        super().__init__()
        self.hfie = hfie

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.hfie.head(self.hfie.encoder(image))  # (B,3,S,S) -> (B,77,D)


def _prompt_kind(model: OSDHuman) -> str:
    pe = model.prompt_extractor
    if isinstance(pe, HFIE):
        return "hfie"
    if isinstance(pe, FixedPrompt):
        return "constant"
    raise WeightsError(f"the OpenVINO export supports HFIE and fixed text / null prompts, not "
                       f"{type(pe).__name__} ({model.config.prompt_source}): restore these weights with --backend torch")


def _save_part(ov, module: nn.Module, example: tuple, names: list[str], shapes: list[list[int]],
               path: Path, precision: str) -> None:
    """Trace ``module`` on ``example``, keep dynamic dims as given in ``shapes`` (-1), compress
    as ``precision`` asks, write ``path`` (.xml + .bin) through temporary names."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on Python-side shape checks
        om = ov.convert_model(module, example_input=example, input=[(n, s) for n, s in zip(names, shapes)])
    if precision == "int8w":
        import nncf

        om = nncf.compress_weights(om, mode=nncf.CompressWeightsMode.INT8_ASYM)
    # the .bin lands first, then the .xml: a folder with an .xml has its .bin
    with atomic_path(path) as tmp_xml, atomic_path(path.with_suffix(".bin")) as tmp_bin:
        staged = tmp_xml.with_name(tmp_xml.name + ".xml")  # save_model writes NAME.xml + NAME.bin
        try:
            ov.save_model(om, str(staged), compress_to_fp16=precision == "bf16")
            move_into_place(staged, tmp_xml)
            move_into_place(staged.with_suffix(".bin"), tmp_bin)
        finally:
            for f in (staged, staged.with_suffix(".bin")):
                f.unlink(missing_ok=True)
    del om
    gc.collect()


def export_openvino(model: OSDHuman, out: str | Path, *, precision: str = "bf16", tile: int = 512,
                    log=None) -> Path:
    """Write ``model`` as OpenVINO IR into ``out`` (see the module docstring); returns ``out``.
    The model's LoRA is fused in place first (it is left inference-only). ``tile``: the pixel
    size of the example input traced (the shape the runtime meets most)."""

    if precision not in OV_PRECISIONS:
        raise ValueError(f"precision must be one of {OV_PRECISIONS}, got {precision!r}")
    ov = import_openvino(nncf=precision == "int8w")
    kind = _prompt_kind(model)
    log = log or (lambda _m: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    if not model.merged:
        model.merge_generator_lora()
    c, d = model.config, model.cross_attention_dim
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, tile, tile, generator=g) * 2 - 1
    z = torch.randn(1, 4, tile // 8, tile // 8, generator=g)
    p = torch.randn(1, 77, d, generator=g)
    files = {}
    parts = [("vae_encoder", _Encoder(model), (x,), ["lq"], [[-1, 3, -1, -1]]),
             ("unet_step", _UNetStep(model), (z, p), ["z", "prompt"], [[-1, 4, -1, -1], [-1, 77, d]]),
             ("vae_decoder", _Decoder(model), (z,), ["z_hat"], [[-1, 4, -1, -1]])]
    for name, inner, root, example, dims in (("vae_encoder", _Encoder(model), model.vae.encoder, x, [-1, 3, -1, -1]),
                                             ("vae_decoder", _Decoder(model), model.vae.decoder, z, [-1, 4, -1, -1])):
        with torch.no_grad():
            stats = _NormStats(inner, root, "record")(example)  # (1, 2 * sum G)
        parts += [(f"{name}_stats", _NormStats(inner, root, "record"), (example,), ["x"], [dims]),
                  (f"{name}_shared", _NormStats(inner, root, "apply"), (example, stats), ["x", "stats"],
                   [dims, [-1, stats.shape[1]]])]
    if kind == "hfie":
        s = model.prompt_extractor.encoder.img_size
        parts.append((PROMPT_IR, _Prompt(model.prompt_extractor), (torch.randn(1, 3, s, s, generator=g),),
                      ["image"], [[-1, 3, s, s]]))
    for name, module, example, names, shapes in parts:
        log(f"converting {name} ({precision})")
        _save_part(ov, module, example, names, shapes, out / f"{name}.xml", precision)
        files[name] = f"{name}.xml"
        files[name + "_bin"] = f"{name}.bin"
    prompt: dict = {"kind": kind}
    if kind == "hfie":
        pe = model.prompt_extractor
        prompt |= {"image_size": pe.encoder.img_size, "mean": list(map(float, pe.mean.flatten())),
                   "std": list(map(float, pe.std.flatten())), "source": pe.source}
    else:
        emb = model.prompt_extractor.embeds.detach().float().cpu().numpy()  # (1,77,D)
        buf = io.BytesIO()
        np.save(buf, emb)
        atomic_write_bytes(out / PROMPT_CONST, buf.getvalue())
        files["prompt_embeds"] = PROMPT_CONST
    cfg = {"format": OV_FORMAT, "version": OV_FORMAT_VERSION, "osdhuman_version": __version__,
           "openvino_version": ov.get_version(), "precision": precision,
           "shapes": {"traced_tile": tile, "dynamic": ["batch", "height", "width"], "multiple": 8,
                      "latent_channels": 4, "prompt": [77, d]},
           "timestep": c.timestep, "scaling_factor": model.scaling_factor,
           "latent_mode": c.latent_mode_infer, "prompt": prompt, "base_model": c.base_model,
           "untrained": bool(model.untrained), "weights_source": model.weights_source,
           "files": files, "config": to_dict(c)}
    atomic_write_text(out / OV_CONFIG, json.dumps(cfg, indent=2, sort_keys=True))  # last
    return out
