"""HQ-ACF stage functions on crafted inputs with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from osdhuman.curation import stages
from osdhuman.curation.config import BoxConfig, CropConfig


def _texture(h=240, w=320, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_laplacian_variance_matches_float64_and_drops_with_blur():
    img = cv2.GaussianBlur(_texture(), (0, 0), 1.0)
    g = stages.gray(img)
    ref = cv2.Laplacian(g, cv2.CV_64F).var()
    assert stages.laplacian_variance(g) == pytest.approx(ref, rel=1e-9)
    blurred = stages.gray(cv2.GaussianBlur(img, (0, 0), 3.0))
    assert stages.laplacian_variance(blurred) < 0.2 * stages.laplacian_variance(g)
    assert stages.laplacian_variance(np.full((50, 50), 128, np.uint8)) == 0.0


def test_box_rejections_size_density_and_crowds():
    cfg = BoxConfig(min_long_side=100, min_short_side=30, max_people=6, dense_iou=0.3, max_overlapping=1)
    boxes = np.array([
        [0, 0, 50, 120],      # long 120, short 50: kept
        [200, 0, 280, 90],    # long 90 < 100: too small
        [300, 0, 320, 150],   # short 20 < 30: too small
        [400, 0, 500, 150],   # overlaps the next two -> 2 neighbours > 1: dense
        [410, 0, 510, 150],
        [405, 5, 505, 155],
    ], dtype=float)
    r = stages.box_rejections(boxes, cfg)
    assert r[:3] == [None, "box_too_small", "box_too_small"]
    assert r[3:] == ["dense_box"] * 3
    assert stages.box_rejections(np.tile(boxes[:1], (7, 1)), cfg) == ["too_many_people"] * 7
    assert stages.box_rejections(np.zeros((0, 4)), cfg) == []


def test_square_crop_centred_inside():
    # box 40 wide, 100 tall, centred at (150, 120) in a 320x240 image: side 100 centred on it
    assert stages.square_crop_box([130, 70, 170, 170], 320, 240) == (100, 70, 100)


def test_square_crop_at_border_is_shifted_inside():
    # box touching the left and top border: the square is shifted right/down, not shrunk
    assert stages.square_crop_box([0, 0, 30, 100], 320, 240) == (0, 0, 100)
    # box at the bottom-right corner
    assert stages.square_crop_box([300, 200, 320, 240], 320, 240) == (280, 200, 40)
    x0, y0, s = stages.square_crop_box([290, 10, 320, 130], 320, 240)
    assert (x0, y0, s) == (200, 10, 120) and x0 + s <= 320


def test_square_crop_larger_than_image_rejected_or_padded():
    box = [10, 0, 300, 100]  # long side 290 > image height 240
    assert stages.square_crop_box(box, 320, 240, oversize="reject") is None
    x0, y0, s = stages.square_crop_box(box, 320, 240, oversize="pad")
    assert s == 290 and x0 == 10 and y0 == (50 - 145)  # centred on the box vertically
    img = _texture()
    crop = stages.extract_crop(img, (x0, y0, s), pad_value=7)
    assert crop.shape == (290, 290, 3)
    assert (crop[: -y0] == 7).all()  # rows above the image are padding
    np.testing.assert_array_equal(crop[-y0:], img[: s + y0, 10:300])  # the crop ends at y = 195


def test_extract_crop_inside_is_a_view():
    img = _texture()
    crop = stages.extract_crop(img, (10, 20, 50))
    assert np.shares_memory(crop, img)
    np.testing.assert_array_equal(crop, img[20:70, 10:60])


def test_nms_keeps_the_crop_nearest_the_image_centre():
    w, h = 400, 300
    near = (150, 100, 100)      # centre (200, 150) = image centre
    far = (170, 110, 100)       # overlaps `near` heavily, centre further away
    apart = (0, 0, 60)          # does not overlap
    assert stages.nms_centre([far, near, apart], w, h, iou_threshold=0.3) == [False, True, True]
    # with a permissive threshold both overlapping crops stay
    assert stages.nms_centre([far, near, apart], w, h, iou_threshold=0.9) == [True, True, True]
    assert stages.nms_centre([], w, h, 0.5) == []
    # priority by the person boxes' centres when given: the box centred in the image wins even
    # though its crop was shifted away from the centre
    centres = np.array([[200, 150], [330, 60], [30, 30]])
    assert stages.nms_centre([far, near, apart], w, h, 0.3, centres) == [True, False, True]


def test_resize_square_interpolation_by_direction():
    cfg = CropConfig(size=64)
    small = _texture(32, 32)
    up = stages.resize_square(small, cfg)
    assert up.shape == (64, 64, 3) and up.dtype == np.uint8
    np.testing.assert_array_equal(up, cv2.resize(small, (64, 64), interpolation=cv2.INTER_LANCZOS4))
    big = _texture(128, 128)
    np.testing.assert_array_equal(stages.resize_square(big, cfg), cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA))
    same = _texture(64, 64)
    np.testing.assert_array_equal(stages.resize_square(same, cfg), same)


def test_box_iou_and_people_in_crop():
    iou = stages.box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])
    boxes = np.array([[0, 0, 10, 10], [90, 90, 110, 110], [200, 200, 210, 210]], float)
    assert stages.people_in_crop(boxes, (0, 0, 101)) == 2
