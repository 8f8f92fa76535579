"""The metric table: one row per metric, the single source every other part reads.

A row (:class:`MetricSpec`) says what the metric is (full- or no-reference, direction, how
the paper prints it) and which backends can compute it: our offline implementation
(``offline``: a factory returning a pure numpy function of
:class:`~osdhuman.iqa.batch.ImageBatch` es, run on the CPU) and/or pyiqa (``pyiqa``: its metric name,
settings and the weight files it needs). ``get_metric`` resolves a row to a runnable metric
whose :class:`MetricRecord` says which backend and settings produced the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from osdhuman.iqa.weights import WeightFile

__all__ = ["BACKENDS", "METRICS", "PRESETS", "MetricRecord", "MetricSpec"]

BACKENDS = ("auto", "offline", "pyiqa")


@dataclass(frozen=True)
class MetricRecord:
    """What produced a column of scores: saved beside every result."""

    name: str
    reference: Literal["nr", "fr"]
    lower_better: bool
    backend: str  # "offline" | "pyiqa"
    settings: dict = field(default_factory=dict, hash=False)
    device: str = "cpu"  # where it ran: offline metrics always on the CPU


@dataclass(frozen=True)
class MetricSpec:
    """One row of the metric table."""

    name: str
    label: str  # column header as the paper prints it
    reference: Literal["nr", "fr"]
    lower_better: bool
    decimals: int  # digits after the point in the paper's tables
    kind: Literal["image", "set"] = "image"  # "set": one number per folder pair (FID)
    offline: Callable[..., Callable] | None = None  # factory(**settings) -> fn(images[, reference])
    offline_settings: dict = field(default_factory=dict, hash=False)
    pyiqa: str | None = None  # pyiqa metric name
    pyiqa_settings: dict = field(default_factory=dict, hash=False)
    pyiqa_files: tuple[WeightFile, ...] = ()
    # pyiqa constructor argument that takes the local path of pyiqa_files[0], so pyiqa loads
    # exactly the file we found (None: pyiqa finds it in its cache itself)
    pyiqa_path_arg: str | None = None
    prefer: tuple[str, ...] = ("pyiqa", "offline")  # order tried by backend="auto"
    note: str = ""


# ---- offline factories (imports deferred so `import osdhuman.iqa` stays light; no torch) ----


def _laplacian_var(**_):
    from osdhuman.iqa.sharpness import laplacian_var

    return laplacian_var


def _psnr_y(eps: float = 1e-8):
    from osdhuman.iqa.fidelity import psnr_y

    return partial(psnr_y, eps=eps)


def _ssim_y(window_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
    from osdhuman.iqa.fidelity import ssim_y

    return partial(ssim_y, window_size=window_size, sigma=sigma, k1=k1, k2=k2)


def _niqe(params_file: str = "bundled", window: str = "pyiqa", block_size: int = 96, luma: str = "yiq"):
    from osdhuman.iqa.niqe import load_pristine_params, niqe, niqe_window

    if luma not in ("yiq", "bt601"):
        raise ValueError(f"NIQE luma must be 'yiq' or 'bt601', got {luma!r}")
    p = load_pristine_params(None if params_file == "bundled" else params_file)
    return partial(niqe, mu=p["mu"], cov=p["cov"], window=niqe_window(window, p), block_size=block_size, luma=luma)


def _brisque(model: str = "brisque-package"):
    from osdhuman.iqa.brisque import brisque_fn

    return brisque_fn(model)


def _piqe(block_size: int = 16, activity_threshold: float = 0.1, impaired_threshold: float = 0.1, segment: int = 6):
    from osdhuman.iqa.piqe import piqe

    return partial(piqe, block_size=block_size, activity_threshold=activity_threshold,
                   impaired_threshold=impaired_threshold, segment=segment)


_PQ = "pyiqa"
_CK = "checkpoints"

METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("psnr_y", "PSNR", "fr", False, 2, offline=_psnr_y, offline_settings={"eps": 1e-8},
                   pyiqa="psnr", pyiqa_settings={"test_y_channel": True, "color_space": "ycbcr"},
                   prefer=("offline", "pyiqa"), note="Y of YCbCr (BT.601), unrounded, no border crop"),
        MetricSpec("ssim_y", "SSIM", "fr", False, 4, offline=_ssim_y,
                   offline_settings={"window_size": 11, "sigma": 1.5, "k1": 0.01, "k2": 0.03},
                   pyiqa="ssim", pyiqa_settings={"test_y_channel": True, "color_space": "ycbcr"},
                   prefer=("offline", "pyiqa"), note="Y rounded to 8-bit levels, valid region, cs clamped at 0"),
        MetricSpec("lpips", "LPIPS", "fr", True, 4, pyiqa="lpips",
                   pyiqa_files=(WeightFile("LPIPS_v0.1_alex-df73285e.pth", _PQ),
                                WeightFile("alexnet-owt-7be5be79.pth", _CK)),
                   pyiqa_path_arg="pretrained_model_path"),
        MetricSpec("dists", "DISTS", "fr", True, 4, pyiqa="dists",
                   pyiqa_files=(WeightFile("DISTS_weights-f5e65c96.pth", _PQ),
                                WeightFile("vgg16-397923af.pth", _CK)),
                   pyiqa_path_arg="pretrained_model_path"),
        MetricSpec("fid", "FID", "fr", True, 4, kind="set", pyiqa="fid", pyiqa_settings={"mode": "clean"},
                   pyiqa_files=(WeightFile("pt_inception-2015-12-05-6726825d.pth", _PQ),),
                   note="between the restored and the HQ folders, clean-fid resize (PIL bicubic to 299)"),
        MetricSpec("clipiqa", "CLIPQA", "nr", False, 4, pyiqa="clipiqa",
                   pyiqa_files=(WeightFile("RN50.pt", "clip"),)),
        MetricSpec("maniqa", "MANIQA", "nr", False, 4, pyiqa="maniqa-pipal",
                   pyiqa_files=(WeightFile("MANIQA_PIPAL-ae6d356b.pth", _PQ),
                                WeightFile("model.safetensors", "hf:timm/vit_base_patch8_224.augreg2_in21k_ft_in1k")),
                   note="PIPAL weights, as the paper"),
        MetricSpec("musiq", "MUSIQ", "nr", False, 4, pyiqa="musiq",
                   pyiqa_files=(WeightFile("musiq_koniq_ckpt-e95806b9.pth", _PQ),),
                   pyiqa_path_arg="pretrained_model_path", note="KonIQ-10k weights"),
        MetricSpec("niqe", "NIQE", "nr", True, 4, offline=_niqe,
                   offline_settings={"params_file": "bundled", "window": "pyiqa", "block_size": 96, "luma": "yiq"},
                   pyiqa="niqe", pyiqa_files=(WeightFile("niqe_modelparameters.mat", _PQ),),
                   pyiqa_path_arg="pretrained_model_path",
                   note="official pristine parameters"),
        MetricSpec("brisque", "BRISQUE", "nr", True, 4, offline=_brisque,
                   offline_settings={"model": "brisque-package"},
                   pyiqa="brisque", pyiqa_files=(WeightFile("brisque_svm_weights.pth", _PQ),),
                   note="offline: SVR of the `brisque` package (different training from pyiqa's LIVE model)"),
        MetricSpec("piqe", "PIQE", "nr", True, 4, offline=_piqe,
                   offline_settings={"block_size": 16, "activity_threshold": 0.1, "impaired_threshold": 0.1,
                                     "segment": 6},
                   pyiqa="piqe", prefer=("offline", "pyiqa")),
        MetricSpec("laplacian_var", "LapVar", "nr", False, 2, offline=_laplacian_var,
                   offline_settings={"gray": "opencv-rgb2gray", "kernel": "3x3 Laplacian", "border": "reflect101"}),
    )
}

# Metric sets of the paper (docs/reference.md §evaluation; paper 4.1, Tables 1-2).
PRESETS: dict[str, tuple[str, ...]] = {
    "paper-val": ("dists", "lpips", "psnr_y", "ssim_y", "fid", "clipiqa", "maniqa", "musiq", "niqe"),
    "paper-test": ("clipiqa", "maniqa", "musiq", "niqe"),
    "paper-dataset": ("brisque", "niqe", "clipiqa", "maniqa", "musiq"),
    "offline": ("psnr_y", "ssim_y", "niqe", "brisque", "piqe"),
}
