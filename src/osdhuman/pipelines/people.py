"""Person-aware restoration of whole photos (``osdhuman restore --people``).

OSDHuman is trained on HQ-ACF crops: a square whose side is a person box's longer edge,
resized to 512. For each person in a photo we cut that square (times a context margin,
shifted inside the photo), resize it to ``crop_size``, restore all crops batched across
people and photos, and paste each restored person back at its size with a feathered mask
(``blend.py``) over the whole-photo tiled restoration (the background), nearest-to-centre
person on top as HQ-ACF ranks them. Person boxes come from the caller (a detector or a box
file): this package may not import ``curation``; the shared crop geometry is the leaf
``osdhuman.boxes``. Resampling is OpenCV's (Lanczos up, area down, as HQ-ACF crops).

What is pasted is the restorer's *change* resampled to the crop's size, so a restorer that
changes nothing returns the photo bit for bit. For a person larger than ``crop_size`` the
photo's detail finer than the crop's resolution is kept as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from osdhuman.boxes import centre_distance, expand_box, square_crop_box
from osdhuman.config import check_fields, rule
from osdhuman.pipelines.blend import Layer, composite, feather_mask

__all__ = ["PeopleConfig", "PeoplePlan", "PeopleResult", "PersonCrop", "Restorer", "paste_people",
           "plan_people", "restore_people"]

Restorer = Callable[[list[np.ndarray]], list[np.ndarray]]  # uint8 (H,W,3) images -> same sizes


@dataclass
class PeopleConfig:
    """How people are cropped, restored and pasted back."""

    crop_size: int = rule(512, ge=64, multiple_of=8)  # the model's training size (HQ-ACF)
    context_margin: float = rule(1.0, ge=0)  # 1.0 = HQ-ACF's square of the box's longer edge
    context_margin_style: Literal["scale", "pixels"] = "scale"  # margin multiplies the box, or adds pixels per side
    min_person_side: int = rule(64, ge=0)  # px (input photo): people whose box's longer edge is shorter are left to the background
    feather: float = rule(0.125, ge=0, le=0.5)  # feather width as a fraction of the crop side
    people_only: bool = False  # no background pass: outside the people the photo is kept as it is

    def __post_init__(self) -> None:
        check_fields(self)
        if self.context_margin_style == "scale" and self.context_margin < 1.0:
            raise ValueError(f"context_margin (scale) must be >= 1.0, got {self.context_margin}")
        if self.context_margin_style == "pixels" and self.context_margin < 0:
            raise ValueError(f"context_margin (pixels) must be >= 0, got {self.context_margin}")


@dataclass
class PersonCrop:
    box: tuple[float, float, float, float]  # the person box (x0, y0, x1, y1), photo pixels
    crop: tuple[int, int, int]  # the square (x0, y0, side) inside the photo
    rank: int  # 0 = nearest to the photo centre (pasted on top)


@dataclass
class PeoplePlan:
    image_hw: tuple[int, int]
    people: list[PersonCrop]  # bottom to top: farthest from the centre first
    small: list[tuple[float, float, float, float]]  # boxes left to the background pass


@dataclass
class PeopleResult:
    image: np.ndarray  # (H, W, 3) uint8
    plan: PeoplePlan
    seconds: dict[str, float] = field(default_factory=dict)  # crops, background, people, blend
    crops_before: list[np.ndarray] = field(default_factory=list)  # (crop_size,)*2 inputs, top-most last
    crops_after: list[np.ndarray] = field(default_factory=list)


# ---- 1. plan: boxes -> squares ------------------------------------------------------------
def plan_people(boxes: np.ndarray, image_w: int, image_h: int, cfg: PeopleConfig) -> PeoplePlan:
    """Person boxes (N, 4) -> squares in paste order, and the boxes too small to crop."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, image_w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, image_h)
    long_side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    rank = np.argsort(np.argsort(centre_distance(b, image_w, image_h), kind="stable"), kind="stable")
    people, small = [], []
    for i in range(len(b)):
        box = tuple(float(v) for v in b[i])
        if long_side[i] < cfg.min_person_side:
            small.append(box)
            continue
        grown = expand_box(box, cfg.context_margin, cfg.context_margin_style)
        crop = square_crop_box(grown, image_w, image_h, oversize="fit")
        people.append(PersonCrop(box, crop, int(rank[i])))
    people.sort(key=lambda p: -p.rank)  # farthest first, nearest last (on top)
    return PeoplePlan((image_h, image_w), people, small)


# ---- 2. crops in, crops out ---------------------------------------------------------------
def _resize(a: np.ndarray, side: int) -> np.ndarray:
    if a.shape[0] == side:
        return np.ascontiguousarray(a)
    interp = cv2.INTER_LANCZOS4 if side > a.shape[0] else cv2.INTER_AREA
    return cv2.resize(a, (side, side), interpolation=interp)


def crop_inputs(image: np.ndarray, plan: PeoplePlan, size: int) -> list[np.ndarray]:
    """The model inputs: each square resized to ``size`` (uint8 (size, size, 3)), paste order."""
    return [_resize(image[y:y + s, x:x + s], size) for x, y, s in (p.crop for p in plan.people)]


# ---- 3. paste back ------------------------------------------------------------------------
def paste_people(image: np.ndarray, background: np.ndarray | None, plan: PeoplePlan,
                 inputs: Sequence[np.ndarray], restored: Sequence[np.ndarray], cfg: PeopleConfig) -> np.ndarray:
    """Blend restored crops over the background (None: the photo itself) -> uint8 (H, W, 3)."""
    h, w = image.shape[:2]
    src = image.astype(np.float32)
    base = np.zeros_like(src) if background is None else background.astype(np.float32) - src  # (H,W,3)
    layers = []
    for person, before, after in zip(plan.people, inputs, restored):
        side = person.crop[2]
        change = after.astype(np.float32) - before.astype(np.float32)  # (size, size, 3)
        layers.append(Layer(person.crop, feather_mask(person.crop, w, h, cfg.feather), _resize(change, side)))
    out = src + composite(base, layers)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---- the whole step, batched across photos ------------------------------------------------
def _chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), max(1, n))]


def restore_people(images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], restore: Restorer,
                   cfg: PeopleConfig | None = None, batch_size: int = 1, keep_crops: bool = False) -> list[PeopleResult]:
    """Restore whole photos person-aware. ``boxes[i]`` (N_i, 4) are photo i's people; all
    crops of all photos are restored in batches of ``batch_size``; the background pass (unless
    ``people_only``) restores each photo whole. A photo without croppable people gets the
    background pass only (whole-image restoration)."""
    cfg = cfg or PeopleConfig()
    results = []
    t = time.perf_counter()
    plans = [plan_people(b, im.shape[1], im.shape[0], cfg) for im, b in zip(images, boxes)]
    inputs = [crop_inputs(im, p, cfg.crop_size) for im, p in zip(images, plans)]
    t_crops = (time.perf_counter() - t) / max(1, len(images))
    flat = [c for cs in inputs for c in cs]
    t = time.perf_counter()
    out_flat = [r for chunk in _chunks(flat, batch_size) for r in restore(chunk)]
    t_people = time.perf_counter() - t
    k = 0
    for im, plan, ins in zip(images, plans, inputs):
        outs, k = out_flat[k:k + len(ins)], k + len(ins)
        t = time.perf_counter()
        bg = None if (cfg.people_only and plan.people) else restore([im])[0]
        t_bg = time.perf_counter() - t
        t = time.perf_counter()
        img = paste_people(im, bg, plan, ins, outs, cfg) if plan.people else bg
        secs = {"crops": t_crops, "people": t_people * len(ins) / max(1, len(flat)),
                "background": t_bg, "blend": time.perf_counter() - t}
        results.append(PeopleResult(img, plan, secs,
                                    list(ins) if keep_crops else [], list(outs) if keep_crops else []))
    return results
