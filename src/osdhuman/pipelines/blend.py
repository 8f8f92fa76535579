"""Feathered paste-back of restored person crops (numpy; our own, a few lines of arithmetic).

A person layer is a square crop ``(x0, y0, side)`` of the photo, a feather mask over it and
a *delta*: what the restorer changed, resampled to the crop's size. Layers are painted in
order (nearest-to-centre person last, so on top) over the background delta:

    acc = background - input            (zeros with --people-only)
    acc[crop] = (1 - m) * acc[crop] + m * delta          for each layer, bottom to top
    output = round(input + acc)

Painting is linear, so the implied weights of the background and of every layer are
non-negative and sum to one at every pixel (``blend_weights`` computes them with the same
code), and a restorer that changes nothing gives back the input bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Layer", "blend_weights", "composite", "feather_mask", "feather_profile"]


@dataclass
class Layer:
    crop: tuple[int, int, int]  # (x0, y0, side), inside the image
    mask: np.ndarray  # (side, side) float32 in [0, 1]
    delta: np.ndarray  # (side, side, C) float32: restored - input on this crop


def feather_profile(n: int, width: int, rise: bool, fall: bool) -> np.ndarray:
    """(n,) weights: a smoothstep ramp over ``width`` pixels at each feathered end, 1 inside."""
    p = np.ones(n, dtype=np.float64)
    width = min(width, n // 2)
    if width < 1:
        return p
    t = (np.arange(width) + 0.5) / width
    ramp = t * t * (3 - 2 * t)  # smoothstep: 0 -> 1 with zero slope at both ends
    if rise:
        p[:width] = np.minimum(p[:width], ramp)
    if fall:
        p[n - width:] = np.minimum(p[n - width:], ramp[::-1])
    return p


def feather_mask(crop: tuple[int, int, int], image_w: int, image_h: int, feather: float) -> np.ndarray:
    """(side, side) float32 mask: feathered over ``feather * side`` pixels on each edge that
    lies inside the photo; an edge on the photo's border is not feathered (nothing to blend
    with there)."""
    x0, y0, side = crop
    width = max(1, round(feather * side)) if feather > 0 else 0
    px = feather_profile(side, width, rise=x0 > 0, fall=x0 + side < image_w)
    py = feather_profile(side, width, rise=y0 > 0, fall=y0 + side < image_h)
    return (py[:, None] * px[None, :]).astype(np.float32)


def composite(base_delta: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    """Paint ``layers`` (bottom to top) over ``base_delta`` (H, W, C) float32; returns a new array."""
    acc = np.array(base_delta, dtype=np.float32, copy=True)
    for layer in layers:
        x0, y0, s = layer.crop
        region = acc[y0:y0 + s, x0:x0 + s]  # (s, s, C) view
        m = layer.mask[..., None]
        region += m * (layer.delta - region)  # (1 - m) * region + m * delta, in place
    return acc


def blend_weights(image_hw: tuple[int, int], crops: Sequence[tuple[int, int, int]],
                  masks: Sequence[np.ndarray]) -> np.ndarray:
    """(1 + N, H, W) weights of the background and of each layer, by running ``composite``
    on one-hot inputs (the weights the real blend uses, not a re-derivation)."""
    h, w = image_hw
    n = len(crops)
    base = np.zeros((h, w, n + 1), dtype=np.float32)
    base[..., 0] = 1.0
    layers = []
    for i, (crop, mask) in enumerate(zip(crops, masks)):
        onehot = np.zeros((crop[2], crop[2], n + 1), dtype=np.float32)
        onehot[..., i + 1] = 1.0
        layers.append(Layer(crop, mask, onehot))
    return np.moveaxis(composite(base, layers), -1, 0)
