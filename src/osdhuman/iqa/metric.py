"""``get_metric``: resolve a row of the metric table to something that scores images.

    m = get_metric("niqe")                 # pyiqa if installed with its weights, else offline
    scores = m(images)                     # (N,) float64 numpy
    scores = get_metric("ssim_y")(x, ref)  # full-reference metrics take the reference second
    m.record                               # MetricRecord(name, reference, lower_better, backend, settings, device)

``images``: numpy (N, H, W, 3) uint8 or float RGB in [0, 1] (what image files decode to), torch
(N, 3, H, W) float in [0, 1], or an :class:`~osdhuman.iqa.batch.ImageBatch` (several metrics of
one batch then share its grayscale planes). The offline backend is numpy / numba / OpenCV on the
CPU and never imports torch: asked for another device it still runs on the CPU, and its record
says ``device='cpu'``. pyiqa (the backend for network metrics, and the one that runs on a GPU)
imports torch when it is resolved.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable

import numpy as np

from osdhuman.iqa.batch import ImageBatch
from osdhuman.iqa.records import BACKENDS, METRICS, MetricRecord, MetricSpec
from osdhuman.iqa.weights import MetricUnavailable, WeightFile, weight_problems

# torch and pyiqa are imported inside the pyiqa backend only: offline metrics never load them.

__all__ = ["Metric", "SetMetric", "get_metric", "missing_files", "pyiqa_installed"]


def pyiqa_installed() -> bool:
    return importlib.util.find_spec("pyiqa") is not None


def missing_files(files: tuple[WeightFile, ...]) -> list[WeightFile]:
    return [f for f in files if f.find() is None]


class Metric:
    """A resolved image metric: ``m(images)`` (NR) or ``m(images, reference)`` (FR) -> (N,)
    float64 numpy array. ``fn`` takes :class:`ImageBatch` es; ``device`` is where it runs."""

    def __init__(self, record: MetricRecord, fn: Callable, device: str = "cpu"):
        self.record = record
        self.device = device
        self._fn = fn

    def __repr__(self) -> str:
        r = self.record
        return f"Metric({r.name!r}, backend={r.backend!r}, device={self.device!r})"

    def __call__(self, images, reference=None) -> np.ndarray:
        name = self.record.name
        x = ImageBatch.of(images, f"{name}: images")
        if self.record.reference == "fr":
            if reference is None:
                raise ValueError(f"{name} is full-reference: call m(images, reference)")
            r = ImageBatch.of(reference, f"{name}: reference")
            if r.shape != x.shape:
                raise ValueError(f"{name}: images {x.shape} and reference {r.shape} differ in shape (N, H, W)")
            out = self._fn(x, r)
        else:
            out = self._fn(x)
        return np.asarray(out, dtype=np.float64).reshape(-1)


class SetMetric:
    """A metric of two image sets (FID): ``features(images) -> (N, D)`` float64 per batch, then
    ``distance(feats_a, feats_b) -> float``."""

    def __init__(self, record: MetricRecord, features: Callable, distance: Callable, device: str = "cpu"):
        self.record = record
        self.device = device
        self._features = features
        self._distance = distance

    def features(self, images) -> np.ndarray:
        return np.asarray(self._features(ImageBatch.of(images, f"{self.record.name}: images")), dtype=np.float64)

    def distance(self, feats_a, feats_b) -> float:
        return float(self._distance(feats_a, feats_b))


def _pyiqa_reason(spec: MetricSpec) -> str | None:
    """None when the pyiqa backend of ``spec`` can run offline, else why not."""
    if spec.pyiqa is None:
        return "no pyiqa implementation"
    if not pyiqa_installed():
        return "pyiqa is not installed (pip install 'osdhuman[iqa]'; non-commercial licence)"
    problems = weight_problems(spec.pyiqa_files)  # missing, or not the published file (sha256)
    if problems:
        return "pyiqa " + "; ".join(problems)
    return None


@contextlib.contextmanager
def _safe_pyiqa_loading(spec: MetricSpec):
    """While pyiqa builds a metric: (1) its downloader only resolves to the files we found on
    disk (matched by file name) and never downloads; (2) its checkpoint loading (pyiqa passes
    ``weights_only=False``) is forced to ``torch.load(weights_only=True)``, so third-party
    checkpoints never run pickled code. Either failure is MetricUnavailable."""
    import pyiqa.archs.arch_util as au
    import pyiqa.utils.download_util as du
    import torch

    found = {f.filename: f.find() for f in spec.pyiqa_files}
    orig_load, orig_url = au.load_pretrained_network, du.load_file_from_url

    def local_file(url, model_dir=None, progress=True, file_name=None):
        name = file_name or os.path.basename(url.split("?")[0])
        path = found.get(name)
        if path is None:
            raise MetricUnavailable(spec.name, f"pyiqa asked for {name}, which is not on disk; osdhuman never downloads")
        return str(path)

    def safe_load(net, model_path, strict=True, weight_keys=None):
        if model_path.startswith(("http://", "https://")):
            model_path = local_file(model_path)
        state = torch_load_tensors_only(model_path, map_location="cpu")
        if weight_keys is not None:
            state = state[weight_keys]
        net.load_state_dict(au.clean_state_dict(state), strict=strict)

    orig_torch_load = torch.load

    def torch_load_tensors_only(*args, **kwargs):  # some pyiqa archs call torch.load directly
        kwargs["weights_only"] = True
        try:
            return orig_torch_load(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever refuses the file becomes the metric's one line
            raise MetricUnavailable(spec.name, f"{args[0] if args else ''} does not load with "
                                               f"torch.load(weights_only=True): {exc}") from None

    swaps = [(torch, "load", orig_torch_load, torch_load_tensors_only)]
    def clip_download(url, root=None, *args, **kwargs):  # OpenAI CLIP's own downloader (RN50.pt, ...)
        return local_file(url)

    def no_download(url, *args, **kwargs):  # torch.hub / torchvision fetchers: never
        raise MetricUnavailable(spec.name, f"pyiqa asked to download {url}; osdhuman never downloads")

    _import_downloaders()
    import torch.hub as torch_hub

    for k, m in list(sys.modules.items()):
        if not k.startswith("pyiqa"):
            continue
        if getattr(m, "load_pretrained_network", None) is orig_load:
            swaps.append((m, "load_pretrained_network", orig_load, safe_load))
        if getattr(m, "load_file_from_url", None) is orig_url:
            swaps.append((m, "load_file_from_url", orig_url, local_file))
        if k.endswith(("clip_model", "afineclip_model")) and callable(getattr(m, "_download", None)):
            swaps.append((m, "_download", m._download, clip_download))
        for attr in ("load_state_dict_from_url", "download_url_to_file", "load_url"):
            if callable(getattr(m, attr, None)):
                swaps.append((m, attr, getattr(m, attr), no_download))
    for attr in ("load_state_dict_from_url", "download_url_to_file"):
        swaps.append((torch_hub, attr, getattr(torch_hub, attr), no_download))
    for m, attr, _, new in swaps:
        setattr(m, attr, new)
    try:
        yield
    finally:
        for m, attr, old, _ in swaps:
            setattr(m, attr, old)


def _import_downloaders() -> None:
    """Import pyiqa's modules that hold downloaders, so that their names can be swapped."""
    for name in ("pyiqa.archs.clip_model", "pyiqa.archs.afineclip_model"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - absent in this pyiqa version
            pass


def _torch_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pyiqa_metric(spec: MetricSpec, device: str) -> Metric | SetMetric:
    import pyiqa
    import torch

    dev = _torch_device(device)
    settings = dict(spec.pyiqa_settings)
    record = MetricRecord(spec.name, spec.reference, spec.lower_better, "pyiqa",
                          {"pyiqa_metric": spec.pyiqa, "pyiqa_version": getattr(pyiqa, "__version__", "?"),
                           **settings}, device=str(dev))
    if spec.kind == "set":
        from osdhuman.iqa.fid import clean_resize, frechet_distance, pyiqa_inception

        with _safe_pyiqa_loading(spec):
            net = pyiqa_inception(dev)

        @torch.inference_mode()
        def feats(b: ImageBatch) -> np.ndarray:
            x = torch.from_numpy(clean_resize(b.rgb()))  # (N, 3, 299, 299) on the 0-255 scale
            f = net(((x - 128.0) / 128.0).to(dev), False, False)[0].flatten(1)  # (N, 2048)
            return f.to("cpu", torch.float64).numpy()

        return SetMetric(record, feats, frechet_distance, str(dev))
    create_kwargs = {k: v for k, v in settings.items() if k != "mode"}
    if spec.pyiqa_path_arg and spec.pyiqa_files:
        path = str(spec.pyiqa_files[0].find())
        create_kwargs[spec.pyiqa_path_arg] = path
        record.settings["weights"] = path
    with _safe_pyiqa_loading(spec):
        model = pyiqa.create_metric(spec.pyiqa, device=dev, as_loss=False, **create_kwargs)

    @torch.inference_mode()
    def fn(x: ImageBatch, ref: ImageBatch | None = None) -> np.ndarray:
        out = model(x.tensor(dev)) if ref is None else model(x.tensor(dev), ref.tensor(dev))
        return out.detach().reshape(-1).to("cpu", torch.float64).numpy()

    return Metric(record, fn, str(dev))


def get_metric(name: str, backend: str = "auto", device="cpu", **settings) -> Metric | SetMetric:
    """The metric ``name`` of :data:`METRICS` on ``backend``: "offline" (ours, no download,
    always on the CPU), "pyiqa" (needs pyiqa and its weight files present locally; runs on
    ``device``: "auto" = cuda when present) or "auto" (the row's ``prefer`` order; pyiqa is used
    only when its files are already on disk). ``settings`` override the offline implementation's
    settings. Raises :class:`MetricUnavailable` naming the missing package or the exact file
    and folder."""
    key = name.lower()
    if key not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    spec = METRICS[key]
    device = str(device)  # a torch.device too
    order = spec.prefer if backend == "auto" else (backend,)
    reasons = []
    for b in order:
        if b == "pyiqa":
            if settings and backend == "auto":
                continue  # settings are the offline implementation's: auto takes the offline one
            if settings:
                raise ValueError(f"{key}: settings {sorted(settings)} apply to the offline backend only")
            why = _pyiqa_reason(spec)
            if why is None:
                return _pyiqa_metric(spec, device)
            reasons.append(why)
        elif b == "offline":
            if spec.offline is None:
                if backend == "offline" or spec.pyiqa is None:
                    reasons.append("no offline implementation (pyiqa only)")
                continue
            unknown = set(settings) - set(spec.offline_settings)
            if unknown:
                raise ValueError(f"{key}: unknown settings {sorted(unknown)}; known: {sorted(spec.offline_settings)}")
            resolved = {**spec.offline_settings, **settings}
            try:
                fn = spec.offline(**resolved)
            except MetricUnavailable as exc:  # e.g. the package holding its model is missing
                reasons.append(exc.reason)
                continue
            record = MetricRecord(spec.name, spec.reference, spec.lower_better, "offline", resolved, device="cpu")
            return Metric(record, fn, "cpu")  # numpy / numba on the CPU, whatever device was asked
    raise MetricUnavailable(key, "; ".join(reasons))
