"""The OpenVINO backend: an ``export_openvino`` folder run by OpenVINO's CPU runtime behind
the same calls as the PyTorch modules (``TorchBackend`` in pipeline_restoration.py), so the
tiling, blending, colour fix, person mode and file handling are the ones the PyTorch path
runs.

    pipe = OpenVINOPipeline.from_export("model_openvino/")      # a RestorationPipeline
    restored = pipe(PIL.Image.open("person.jpg")).images[0]

Shapes: the IR keeps dynamic batch / height / width; each new input shape gets its own
static compiled copy (static shapes run faster on the CPU than dynamic ones), made once per
process and kept in OpenVINO's model cache (``cache_dir``: EXPORT/.ov_cache when the export
folder is writable, else ~/.cache/osdhuman/openvino), so a second process loads instead of
compiling. ``compile_seconds`` says what compiling cost this process.

Precision: what the export was written for; bf16 / int8w compute in bfloat16 only on a CPU
that has AVX-512 BF16 or AMX; elsewhere they compute in float32 and say so once.

Tiles: above one VAE tile, ``shared_norm`` records the VAE's GroupNorm statistics on a
downscaled copy of the whole input (the ``*_stats`` IR, dynamic shapes: compiled once) and
runs the tiles through the ``*_shared`` IR with them, as the PyTorch path does.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from osdhuman.config import from_dict
from osdhuman.models.config import OSDHumanConfig
from osdhuman.models.hfie import hfie_input
from osdhuman.models.openvino_export import (
    OV_CONFIG,
    PROMPT_IR,
    cpu_supports_bf16,
    import_openvino,
    read_openvino_config,
)
from osdhuman.pipelines.pipeline_restoration import PipelineConfig, RestorationPipeline

__all__ = ["OpenVINOBackend", "OpenVINOPipeline", "default_cache_dir"]


def default_cache_dir(folder: Path) -> Path:
    """EXPORT/.ov_cache when the export folder is writable, else the user's cache folder."""
    if os.access(folder, os.W_OK):
        return folder / ".ov_cache"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "osdhuman" / "openvino" / folder.resolve().as_posix().strip("/").replace("/", "_")


class _Part:
    """One IR, compiled once per input shape; ``register_forward_hook`` as on a torch module
    (the progress bar counts UNet passes through it)."""

    def __init__(self, backend: OpenVINOBackend, xml: Path, static: bool = True):
        self.backend, self.xml, self.static = backend, xml, static
        self.compiled: dict[tuple, object] = {}
        self._hooks: list = []

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        key = tuple(a.shape for a in arrays) if self.static else ()
        req = self.compiled.get(key)
        if req is None:
            req = self.compiled[key] = self.backend.compile(self.xml, [a.shape for a in arrays] if self.static else None)
        req.infer([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
        outs = [np.array(req.get_output_tensor(i).data, copy=True) for i in range(len(req.model_outputs))]
        for hook in list(self._hooks):
            hook(self, arrays, outs)
        return outs

    def register_forward_hook(self, hook):
        self._hooks.append(hook)
        hooks = self._hooks

        class Handle:
            def remove(self) -> None:
                if hook in hooks:
                    hooks.remove(hook)
        return Handle()


class OpenVINOBackend:
    """encode / unet / decode / prompt on torch tensors, run by OpenVINO from an export folder."""

    name = "openvino"

    def __init__(self, folder: str | Path, cache_dir: str | Path | None = None, log=None):
        self.ov = import_openvino()
        self.folder = Path(folder).expanduser()
        self.export = read_openvino_config(self.folder)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.core = self.ov.Core()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(self.folder)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(self.cache_dir)})
        except OSError:
            self.cache_dir = None  # no cache: every process compiles
        self.precision = self.export["precision"]  # what the export was written for
        self.compute = "f32"
        if self.precision in ("bf16", "int8w"):
            if cpu_supports_bf16(self.core):
                self.compute = "bf16"
            else:
                self.log(f"osdhuman restore: this CPU has no AVX-512 BF16 / AMX; the {self.precision} export "
                         f"runs in float32 instead")
        self.compile_seconds = 0.0
        f = self.export["files"]
        self.enc, self.step, self.dec = (_Part(self, self.folder / f[k]) for k in ("vae_encoder", "unet_step", "vae_decoder"))
        pk = self.export["prompt"]
        self.prompt_kind = pk["kind"]
        if self.prompt_kind == "hfie":
            # its own fixed S x S input; a static batch loses precision in Swin (0.03 on the tiny preset)
            self.prompt_ir = _Part(self, self.folder / f[PROMPT_IR], static=False)
            self._mean = torch.tensor(pk["mean"], dtype=torch.float32).view(1, 3, 1, 1)
            self._std = torch.tensor(pk["std"], dtype=torch.float32).view(1, 3, 1, 1)
        else:
            self.embeds = torch.from_numpy(np.load(self.folder / f["prompt_embeds"], allow_pickle=False)).float()
        self.sample_latent = self.export.get("latent_mode") == "sample"
        # VAE part -> (statistics recorder, part with given statistics); _stats: those in use
        # (an export without them, written before they were added, normalises each tile on its own)
        self.norms = {p: (_Part(self, self.folder / f[f"vae_{p}_stats"], static=False),
                          _Part(self, self.folder / f[f"vae_{p}_shared"]))
                      for p in ("encoder", "decoder") if f"vae_{p}_shared" in f}
        self._stats: dict[str, np.ndarray | None] = {"encoder": None, "decoder": None}

    @property
    def progress_target(self) -> _Part:
        return self.step

    @property
    def precision_name(self) -> str:
        """The export's precision and, when it differs, what the CPU computes in."""
        return self.precision if self.compute == "bf16" or self.precision == "fp32" else f"{self.precision} (computed in fp32)"

    def compile(self, xml: Path, shapes: list[tuple] | None):
        """A compiled copy of ``xml`` (an infer request), static for ``shapes`` unless None."""
        t = time.perf_counter()
        model = self.core.read_model(str(xml))
        if shapes is not None:
            model.reshape({i: self.ov.PartialShape(list(s)) for i, s in enumerate(shapes)})
        hint = {"INFERENCE_PRECISION_HINT": self.compute, "PERFORMANCE_HINT": "LATENCY"}
        req = self.core.compile_model(model, "CPU", hint).create_infer_request()
        self.compile_seconds += time.perf_counter() - t
        return req

    # ---------------------------------------------------------------- the calls the pipeline makes
    def shared_norm(self, part: str, fn, small: torch.Tensor):
        """``fn`` run with the VAE ``part``'s GroupNorm statistics of ``small`` (a downscaled
        copy of the whole input): every tile is normalised alike."""
        if part not in self.norms:
            return fn
        stats = self.norms[part][0](small.float().numpy())[0]  # (B, 2 * sum G)

        def run(t: torch.Tensor) -> torch.Tensor:
            self._stats[part] = stats
            try:
                return fn(t)
            finally:
                self._stats[part] = None
        return run

    def _vae(self, part: str, plain: _Part, x: np.ndarray) -> list[np.ndarray]:
        stats = self._stats[part]
        return plain(x) if stats is None else self.norms[part][1](x, stats)

    def prompt(self, lq: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B,77,D): HFIE's preprocessing in PyTorch, the network in OpenVINO."""
        if self.prompt_kind != "hfie":
            return self.embeds.expand(lq.shape[0], -1, -1)
        x = hfie_input(lq, self.export["prompt"]["image_size"], self._mean, self._std)  # (B,3,S,S)
        return torch.from_numpy(self.prompt_ir(x.numpy())[0])

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> z_L (B,4,H/8,W/8), times the scaling factor (mode or a seeded sample)."""
        mean, std = (torch.from_numpy(a) for a in self._vae("encoder", self.enc, x.float().numpy()))
        if not self.sample_latent:
            return mean
        return mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)

    def unet(self, z: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Eq. 2: z_L (B,4,h,w), prompt (B,77,D) -> z_hat (B,4,h,w)."""
        return torch.from_numpy(self.step(z.float().numpy(), prompt.float().numpy())[0])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z_hat (B,4,h,w) -> (B,3,8h,8w) in [-1,1]."""
        return torch.from_numpy(self._vae("decoder", self.dec, z.float().numpy())[0])


class OpenVINOPipeline(RestorationPipeline):
    """A RestorationPipeline whose model parts are an OpenVINO export (always on the CPU)."""

    def __init__(self, backend: OpenVINOBackend, config: PipelineConfig | None = None):
        self.config = replace(config or PipelineConfig(), device="cpu", precision="fp32")
        self.backend = backend
        self.model = None  # no PyTorch model: the parts are IR
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self._model_config = from_dict(OSDHumanConfig, backend.export.get("config", {}), where=str(backend.folder / OV_CONFIG))
        self.weights_summary = (f"OpenVINO export {backend.folder} ({backend.precision_name}, written by osdhuman "
                                f"{backend.export.get('osdhuman_version', '?')})")

    @classmethod
    def from_export(cls, folder: str | Path, cache_dir: str | Path | None = None, log=None,
                    **pipeline_kwargs) -> OpenVINOPipeline:
        """``pipeline_kwargs``: PipelineConfig fields (tile_size, tile_overlap, color_fix, ...)."""
        known = set(PipelineConfig.__dataclass_fields__) - {"device", "precision"}
        kw = {k: v for k, v in pipeline_kwargs.items() if k in known and v is not None}
        return cls(OpenVINOBackend(folder, cache_dir=cache_dir, log=log), PipelineConfig(**kw))

    @property
    def untrained(self) -> bool:
        return bool(self.backend.export.get("untrained"))

    @property
    def model_config(self) -> OSDHumanConfig:
        return self._model_config

    @property
    def components(self) -> dict:
        return {"vae_encoder": self.backend.enc, "unet_step": self.backend.step, "vae_decoder": self.backend.dec}

    def to(self, device: str | None = None, precision: str | None = None) -> OpenVINOPipeline:
        if device not in (None, "cpu", "auto"):
            raise ValueError(f"the OpenVINO backend runs on the CPU only, not {device!r}")
        return self

    def save_pretrained(self, directory):
        raise ValueError("an OpenVINO export is inference-only: save the PyTorch weights it was exported from")
