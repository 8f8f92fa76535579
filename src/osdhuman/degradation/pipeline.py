"""The Real-ESRGAN second-order degradation (paper 4.2), batched, with per-image parameters.

Steps for every image (Real-ESRGAN, Wang et al. 2021, Fig. 2; docs/reference.md §degradation):
  1. blur 1 (HQ size) -> resize 1 -> noise 1 -> JPEG 1
  2. blur 2 (p 0.8)   -> resize 2 (towards HQ / 4) -> noise 2
  3. final, in random order: (resize to HQ / 4 + sinc) then JPEG, or JPEG then (resize + sinc)
  4. resize back to the HQ size (random mode), clip and quantise to 8 bit.
Every parameter is drawn per image from the image's own seed, so an image's LQ is the same
whatever batch it travels in.

Two implementations of these steps: the batched torch path here (a ragged canvas, on CUDA, and
wherever a gradient is needed: the differentiable JPEG), and the image-by-image CPU path in
cpu.py (numpy / OpenCV / Pillow, no torch), which ``Degrader`` calls for CPU tensors, so
training on a CPU and ``osdhuman degrade`` give the same LQ; on a CPU the two agree to float
rounding (tests/degradation/test_cpu_path.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from osdhuman.degradation.blur import blur_ragged
from osdhuman.degradation.config import DegradationConfig
from osdhuman.degradation.cpu import degrade_planes, run_parallel
from osdhuman.degradation.jpeg import jpeg_differentiable, jpeg_real
from osdhuman.degradation.kernels import build_kernels
from osdhuman.degradation.noise import add_noise
from osdhuman.degradation.params import (
    ImageParams,
    KernelParams,
    ResizeParams,
    sample_params,
)
from osdhuman.degradation.resize import resize_ragged

__all__ = ["Degrader", "make_pairs"]


class Degrader:
    """Callable degradation: ``lq = Degrader(cfg)(hq, seeds)``.

    No parameters, no state besides the config. ``device``: where ``__call__`` works (default:
    the input's device). ``batched``: process the whole batch at once as a torch ragged canvas
    (default on CUDA, and whenever the JPEG is the differentiable one or the input needs a
    gradient) or image by image on the host through cpu.py's numpy path (default for CPU
    tensors with the real JPEG: a batch brings no speed there and the canvas padding costs
    work). Each mode gives an image the same LQ whatever its batch; the two modes agree to
    float rounding.

    Image by image, each image is computed on one thread and ``workers`` images run side by
    side (default: the CPU count); OpenCV's global thread count is 1 during the call and
    restored, so the result does not depend on the machine's core count.
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
        needs_torch = self.cfg.jpeg_codec != "real" or hq.requires_grad
        batched = self.batched if self.batched is not None else (hq.device.type != "cpu" or needs_torch)
        if batched:
            return self._apply_batch(hq, params)
        if needs_torch:
            raise ValueError("image by image runs the numpy CPU path: no gradient, real JPEG only")
        planes = hq.detach().to("cpu", torch.float32).numpy()  # (B, 3, H, W)
        lq8 = run_parallel(lambda b: degrade_planes(planes[b], params[b], self.cfg), range(len(params)), self.workers)
        lq = torch.from_numpy(np.stack(lq8)).to(torch.float32).div_(255.0)  # (B, 3, h, w) on 8-bit levels
        return lq.to(hq.device)

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
        k = torch.from_numpy(build_kernels([kernels[b] for b in index], self.cfg.kernel_max_size))  # (N, M, M)
        return blur_ragged(x, sizes, k, index, fft=self.cfg.fft_blur, size_multiple=self.cfg.fft_size_multiple or 32)

    @staticmethod
    def _resize(x: torch.Tensor, sizes, rp: Sequence[ResizeParams]):
        out_sizes = [tuple(r.size) for r in rp]
        if all(o == s for o, s in zip(out_sizes, sizes)) and all(
                r.mode == "area" or r.use_scale_factor is False or r.scale == 1.0 for r in rp):
            return x, list(sizes)  # every image keeps its size with an identity resampling
        scales = [r.scale if r.use_scale_factor else None for r in rp]
        return resize_ragged(x, sizes, out_sizes, [r.mode for r in rp], scales), out_sizes


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
