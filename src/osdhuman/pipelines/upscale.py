"""``--upscale S``: resize the input by S (bicubic, as OSEDiff does for super-resolution)
before restoring, so the output is S times the input; ``--max-side`` refuses outputs whose
longer side would exceed it (memory guard). OpenCV's bicubic, on uint8."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["UpscaleError", "check_upscale", "upscale_image", "upscaled_size"]

MAX_UPSCALE = 4.0


class UpscaleError(ValueError):
    """The upscaled image would exceed ``max_side`` (nothing is restored or written)."""


def upscaled_size(w: int, h: int, scale: float) -> tuple[int, int]:
    """(w, h) of the output: each side times ``scale``, rounded."""
    return max(1, round(w * scale)), max(1, round(h * scale))


def check_upscale(w: int, h: int, scale: float, max_side: int | None) -> tuple[int, int]:
    """The output size, or UpscaleError naming both sizes and the limit."""
    if not 1.0 <= scale <= MAX_UPSCALE:
        raise ValueError(f"upscale must be in [1, {MAX_UPSCALE:g}], got {scale:g}")
    ow, oh = upscaled_size(w, h, scale)
    if max_side is not None and max(ow, oh) > max_side:
        raise UpscaleError(f"{w}x{h} upscaled x{scale:g} is {ow}x{oh}, above --max-side {max_side} "
                           f"(lower --upscale or raise --max-side)")
    return ow, oh


def upscale_image(rgb: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, 3) uint8 -> (round(S*H), round(S*W), 3) uint8, bicubic; S = 1 returns it as is."""
    if scale == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    ow, oh = upscaled_size(w, h, scale)
    return cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_CUBIC)
