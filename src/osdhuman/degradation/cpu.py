"""The Real-ESRGAN second-order degradation of one image on a CPU, in numpy / OpenCV / Pillow.

``osdhuman degrade`` on a CPU runs this without importing torch (importing torch is about
half of a 48-image run), and ``Degrader`` calls it for CPU tensors, so training on a CPU and
``degrade`` give the same LQ for a seed. The steps and parameters are pipeline.py's
(docs/reference.md §degradation): blur 1 -> resize 1 -> noise 1 -> JPEG 1, blur 2 ->
resize 2 -> noise 2 (-> JPEG 2), the final resize + sinc and JPEG in the drawn order, the
resize back, 8-bit quantisation. Each image is computed on one thread (OpenCV's own
threads are set to 1 during a call) and ``workers`` images run side by side, so the result is
bit-identical run to run whatever the number of cores or workers. It agrees with the batched
torch path to float rounding (tests/degradation/test_cpu_path.py states the tolerance).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import cv2
import numpy as np

from osdhuman.degradation.config import DegradationConfig
from osdhuman.degradation.cpu_blur import blur_image
from osdhuman.degradation.cpu_jpeg import jpeg_image
from osdhuman.degradation.cpu_noise import noise_image
from osdhuman.degradation.cpu_resize import resize_image
from osdhuman.degradation.kernels import build_kernels
from osdhuman.degradation.params import ImageParams, KernelParams, ResizeParams

__all__ = ["default_workers", "degrade_image", "degrade_images", "degrade_planes", "run_parallel"]

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (macOS, Windows)
        return os.cpu_count() or 1


def degrade_image(hq: np.ndarray, p: ImageParams, cfg: DegradationConfig) -> np.ndarray:
    """hq (H, W, 3): uint8, or float in [0, 1] -> LQ (h, w, 3) uint8 (h, w = the HQ size, or
    HQ / scale without ``cfg.back_to_hq_size``), with the drawn parameters ``p``."""
    planes = np.ascontiguousarray(hq.transpose(2, 0, 1))  # (3, H, W): the ops work plane by plane
    x = planes.astype(np.float32) / np.float32(255.0) if hq.dtype == np.uint8 else planes
    return np.ascontiguousarray(degrade_planes(x, p, cfg).transpose(1, 2, 0))


def degrade_planes(hq: np.ndarray, p: ImageParams, cfg: DegradationConfig) -> np.ndarray:
    """hq (3, H, W) float in [0, 1] -> LQ (3, h, w) uint8 (:func:`degrade_image` on planes)."""
    if cfg.jpeg_codec != "real":
        raise ValueError("the CPU path compresses with the real JPEG codec; the differentiable one needs torch")
    x = np.clip(np.ascontiguousarray(hq, dtype=np.float32), 0, 1)
    multiple = cfg.fft_size_multiple or 4
    for sp in (p.stage1, p.stage2):
        x = _blur(x, sp.blur, cfg, multiple)
        x = _resize(x, sp.resize)
        x = noise_image(x, sp.noise)
        x = jpeg_image(x, sp.jpeg_quality)
    if p.final_order == "jpeg_first":
        x = jpeg_image(x, p.final_jpeg_quality)
    x = _resize(x, p.final_resize)
    x = _blur(x, p.final_sinc, cfg, multiple)
    if p.final_order == "resize_first":
        x = jpeg_image(x, p.final_jpeg_quality)
    if p.back_resize is not None:
        x = _resize(x, p.back_resize)
    return np.round(np.clip(x, 0, 1) * np.float32(255.0)).astype(np.uint8)


def degrade_images(images: Sequence[np.ndarray], params: Sequence[ImageParams], cfg: DegradationConfig,
                   workers: int | None = None) -> list[np.ndarray]:
    """:func:`degrade_image` for each image, ``workers`` at a time (default: the CPU count)."""
    return run_parallel(lambda ip: degrade_image(ip[0], ip[1], cfg), list(zip(images, params)), workers)


def run_parallel(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """[fn(item) for item in items] on ``workers`` threads (default: the CPU count), with
    OpenCV's own thread count set to 1 during the call (restored after)."""
    workers = min(workers or default_workers(), len(items))
    prev = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if workers <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(workers, thread_name_prefix="osdhuman-degrade") as pool:
            return list(pool.map(fn, items))
    finally:
        cv2.setNumThreads(prev)


def _blur(x: np.ndarray, k: KernelParams | None, cfg: DegradationConfig, multiple: int) -> np.ndarray:
    if k is None:
        return x
    return blur_image(x, build_kernels([k], cfg.kernel_max_size, dtype=np.float64)[0], multiple)


def _resize(x: np.ndarray, r: ResizeParams) -> np.ndarray:
    """Real-ESRGAN's call: F.interpolate(scale_factor=s) in stage 1, F.interpolate(size=...) else."""
    if tuple(r.size) == x.shape[1:] and (r.mode == "area" or not r.use_scale_factor or r.scale == 1.0):
        return x  # an identity resampling
    return resize_image(x, tuple(r.size), r.mode, r.scale if r.use_scale_factor else None)
