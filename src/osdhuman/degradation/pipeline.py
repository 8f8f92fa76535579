"""The Real-ESRGAN second-order degradation (paper 4.2), batched, with per-image parameters.

Steps for every image (Real-ESRGAN, Wang et al. 2021, Fig. 2; docs/reference.md §degradation):
  1. blur 1 (HQ size) -> resize 1 -> noise 1 -> JPEG 1
  2. blur 2 (p 0.8)   -> resize 2 (towards HQ / 4) -> noise 2
  3. final, in random order: (resize to HQ / 4 + sinc) then JPEG, or JPEG then (resize + sinc)
  4. resize back to the HQ size (random mode), clip and quantise to 8 bit.
Every parameter is drawn per image from the image's own seed, so an image's LQ is the same
whatever batch it travels in; on a CPU it is bit-identical run to run (each image is computed
on one thread, so also whatever the number of cores or workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import torch

from osdhuman.degradation.blur import blur_one, blur_ragged
from osdhuman.degradation.config import DegradationConfig
from osdhuman.degradation.jpeg import jpeg_differentiable, jpeg_one, jpeg_real
from osdhuman.degradation.kernels import build_kernels
from osdhuman.degradation.noise import add_noise, noise_one
from osdhuman.degradation.params import (
    ImageParams,
    KernelParams,
    ResizeParams,
    sample_params,
)
from osdhuman.degradation.resize import resize_one, resize_ragged

__all__ = ["Degrader", "make_pairs"]


class Degrader:
    """Callable degradation: ``lq = Degrader(cfg)(hq, seeds)``.

    No parameters, no state besides the config. ``device``: where ``__call__`` works (default:
    the input's device). ``batched``: process the whole batch at once as a ragged canvas
    (default on CUDA) or image by image with native single-image ops (default on CPU, where a
    batch brings no speed and the canvas padding costs work; there the blur and resize take
    the exact OpenCV / sparse routes of blur.py and resize.py). Each mode gives an image the
    same LQ whatever its batch; the two modes agree to float rounding.

    Image by image on a CPU, each image is computed with one intra-op thread and ``workers``
    images run side by side (default: torch's thread count): many mid-sized ops parallelise
    badly inside an op, and one thread per image makes the result independent of the
    machine's core count. torch's and OpenCV's global thread counts are set to 1 during the
    call and restored (the CPU blur and resize take OpenCV routes, see blur.py / resize.py).
    """

    def __init__(self, cfg: DegradationConfig | None = None, device: str | torch.device | None = None,
                 batched: bool | None = None, workers: int | None = None):
        self.cfg = cfg if cfg is not None else DegradationConfig()
        self.device = torch.device(device) if device is not None else None
        self.batched = batched
        self.workers = workers

    def sample(self, seeds: Sequence[int], hq_size: tuple[int, int]) -> list[ImageParams]:
        """The parameters each seed draws for an HQ image of size (H, W)."""
        return [sample_params(self.cfg, int(s), hq_size) for s in seeds]

    def __call__(self, hq: torch.Tensor, seeds: Sequence[int] | torch.Tensor, return_params: bool = False):
        """Degrade a batch.

        hq: (B, 3, H, W) float RGB in [0, 1]. seeds: B ints (list or LongTensor), one per image.
        Returns lq (B, 3, H, W) float32 in [0, 1] on 8-bit levels (k / 255), at the HQ size
        (or (B, 3, H // scale, W // scale) when ``cfg.back_to_hq_size`` is False), and with
        ``return_params`` also the list of per-image :class:`ImageParams`.
        """
        if hq.ndim != 4 or hq.shape[1] != 3:
            raise ValueError(f"hq must be (B, 3, H, W), got {tuple(hq.shape)}")
        seeds = [int(s) for s in (seeds.tolist() if torch.is_tensor(seeds) else seeds)]
        if len(seeds) != hq.shape[0]:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {hq.shape[0]} images")
        dev = self.device if self.device is not None else hq.device
        H, W = int(hq.shape[2]), int(hq.shape[3])
        params = self.sample(seeds, (H, W))
        with torch.no_grad():
            lq = self.apply(hq.to(dev, torch.float32), params)
        return (lq, params) if return_params else lq

    def apply(self, hq: torch.Tensor, params: Sequence[ImageParams]) -> torch.Tensor:
        """Degrade hq (B, 3, H, W) in [0, 1] with given per-image parameters (differentiable
        when ``cfg.jpeg_codec == "differentiable"`` and called outside ``no_grad``)."""
        batched = self.batched if self.batched is not None else hq.device.type != "cpu"
        if batched:
            return self._apply_batch(hq, params)
        B = hq.shape[0]
        if hq.device.type != "cpu":
            return torch.cat([self._apply_one(hq[b:b + 1], params[b]) for b in range(B)])
        workers = min(self.workers or torch.get_num_threads(), B)
        prev, prev_cv = torch.get_num_threads(), cv2.getNumThreads()
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        try:
            if workers <= 1:
                outs = [self._apply_one(hq[b:b + 1], params[b]) for b in range(B)]
            else:
                with ThreadPoolExecutor(workers) as pool:
                    outs = list(pool.map(lambda b: self._apply_one(hq[b:b + 1], params[b]), range(B)))
        finally:
            torch.set_num_threads(prev)
            cv2.setNumThreads(prev_cv)
        return torch.cat(outs)

    def _apply_one(self, x: torch.Tensor, p: ImageParams) -> torch.Tensor:
        """One image x (1, 3, H, W): each step exactly as Real-ESRGAN runs it on a batch of one."""
        cfg = self.cfg
        jpeg = jpeg_one if cfg.jpeg_codec == "real" else (lambda im, q: jpeg_differentiable(im, [im.shape[-2:]], [q]))
        x = x.clamp(0, 1)
        for sp in (p.stage1, p.stage2):
            x = self._blur_one(x, sp.blur)
            x = _interpolate(x, sp.resize)
            x = noise_one(x, sp.noise)
            x = jpeg(x, sp.jpeg_quality)
        if p.final_order == "jpeg_first":
            x = jpeg(x, p.final_jpeg_quality)
        x = _interpolate(x, p.final_resize)
        x = self._blur_one(x, p.final_sinc)
        if p.final_order == "resize_first":
            x = jpeg(x, p.final_jpeg_quality)
        if p.back_resize is not None:
            x = _interpolate(x, p.back_resize)
        return _quantise(x)

    def _blur_one(self, x: torch.Tensor, k: KernelParams | None) -> torch.Tensor:
        if k is None:
            return x
        kern = build_kernels([k], self.cfg.kernel_max_size, dtype=torch.float64)[0]  # (M, M)
        return blur_one(x, kern, fft=self.cfg.fft_blur, size_multiple=self.cfg.fft_size_multiple or 4)

    def _apply_batch(self, hq: torch.Tensor, params: Sequence[ImageParams]) -> torch.Tensor:
        """The whole batch at once on a ragged canvas (per-image sizes, kernels and modes)."""
        cfg = self.cfg
        B, _, H, W = hq.shape
        x = hq.clamp(0, 1)
        sizes = [(H, W)] * B
        jpeg = jpeg_real if cfg.jpeg_codec == "real" else jpeg_differentiable
        for stage in ("stage1", "stage2"):
            sp = [getattr(p, stage) for p in params]
            x = self._blur(x, sizes, [s.blur for s in sp])
            x, sizes = self._resize(x, sizes, [s.resize for s in sp])
            x = add_noise(x, sizes, [s.noise for s in sp])
            x = jpeg(x, sizes, [s.jpeg_quality for s in sp])
        # final: JPEG-first images are compressed at their stage-2 size, then all are resized
        # to HQ / scale and sinc-filtered, then the resize-first images are compressed
        x = jpeg(x, sizes, [p.final_jpeg_quality if p.final_order == "jpeg_first" else None for p in params])
        x, sizes = self._resize(x, sizes, [p.final_resize for p in params])
        x = self._blur(x, sizes, [p.final_sinc for p in params])
        x = jpeg(x, sizes, [p.final_jpeg_quality if p.final_order == "resize_first" else None for p in params])
        if cfg.back_to_hq_size:
            x, sizes = self._resize(x, sizes, [p.back_resize for p in params])
        return _quantise(x)  # (B, 3, H, W)

    def _blur(self, x: torch.Tensor, sizes, kernels: Sequence[KernelParams | None]) -> torch.Tensor:
        index = [b for b, k in enumerate(kernels) if k is not None]
        if not index:
            return x
        k = build_kernels([kernels[b] for b in index], self.cfg.kernel_max_size)  # (N, M, M)
        return blur_ragged(x, sizes, k, index, fft=self.cfg.fft_blur, size_multiple=self.cfg.fft_size_multiple or 32)

    @staticmethod
    def _resize(x: torch.Tensor, sizes, rp: Sequence[ResizeParams]):
        out_sizes = [tuple(r.size) for r in rp]
        if all(o == s for o, s in zip(out_sizes, sizes)) and all(
                r.mode == "area" or r.use_scale_factor is False or r.scale == 1.0 for r in rp):
            return x, list(sizes)  # every image keeps its size with an identity resampling
        scales = [r.scale if r.use_scale_factor else None for r in rp]
        return resize_ragged(x, sizes, out_sizes, [r.mode for r in rp], scales), out_sizes


def _interpolate(x: torch.Tensor, r: ResizeParams) -> torch.Tensor:
    """Real-ESRGAN's call: F.interpolate(scale_factor=s) in stage 1, F.interpolate(size=...) else
    (by :func:`resize_one`, which takes faster equivalent routes on a CPU).

    x (1, C, h, w) -> (1, C, *r.size)."""
    if tuple(r.size) == tuple(x.shape[-2:]) and (r.mode == "area" or not r.use_scale_factor or r.scale == 1.0):
        return x
    return resize_one(x, tuple(r.size), r.mode, r.scale if r.use_scale_factor else None)


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to 8-bit levels (straight-through when x needs a gradient)."""
    if x.requires_grad:
        x = x.clamp(0, 1)
        return x + ((x * 255).round() / 255 - x).detach()
    return x.clamp(0, 1).mul_(255.0).round_().div_(255.0)  # same ops as below, one buffer


def make_pairs(hq_m11: torch.Tensor, seeds: Sequence[int] | torch.Tensor, degrader: Degrader) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs: hq (B, 3, H, W) in [-1, 1] -> (lq, hq), both (B, 3, H, W) in [-1, 1].

    The LQ is synthesised on hq's device (no gradient) from each image's own seed.
    """
    lq01 = degrader((hq_m11.detach().float() + 1) / 2, seeds)  # (B, 3, H, W) in [0, 1]
    lq = (lq01 * 2 - 1).to(hq_m11.dtype)
    return lq, hq_m11
