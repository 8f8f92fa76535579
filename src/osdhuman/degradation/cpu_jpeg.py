"""Real JPEG compression of one image on a CPU: libjpeg-turbo through Pillow (4:2:0 chroma,
islow DCT, integer quality), the codec Real-ESRGAN's degradation calls.

Why Pillow: torchvision's CPU encoder is the same libjpeg-turbo (bytes and decoded pixels
identical, checked in tests/degradation/test_ops.py), but importing it imports torch and
``torch._dynamo`` (~2.5 s), more than a whole 48-image ``osdhuman degrade`` run spends
degrading. jpeg.py's real codec for CPU tensors calls :func:`encode` / :func:`decode` too.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["decode", "encode", "jpeg_image"]


def encode(u8: np.ndarray, quality: int) -> bytes:
    """(h, w, 3) uint8 -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(u8)).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """JPEG bytes -> (h, w, 3) uint8."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def jpeg_image(x: np.ndarray, quality: int | None) -> np.ndarray:
    """x (3, h, w) float32 planes -> encoded and decoded at ``quality`` (None = unchanged),
    float32 planes on 8-bit levels. x is clipped to [0, 1] and rounded to 8 bit first."""
    if quality is None:
        return x
    u8 = np.round(np.clip(x, 0, 1) * np.float32(255.0)).astype(np.uint8)
    return decode(encode(u8.transpose(1, 2, 0), quality)).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
