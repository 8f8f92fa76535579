"""Our Lanczos4 upscaling is OpenCV's INTER_LANCZOS4, pixel for pixel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from osdhuman.curation import lanczos
from osdhuman.curation.config import CropConfig
from osdhuman.curation.stages import resize_square


def _photo(side: int, seed: int = 0) -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    img = (skdata.astronaut(), skdata.coffee())[seed % 2]
    return np.ascontiguousarray(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("side", [1, 3, 8, 97, 260, 333, 400, 471, 511])
def test_equals_opencv_on_photos(side):
    for seed in (0, 1):
        a = _photo(side, seed)
        want = cv2.resize(a, (512, 512), interpolation=cv2.INTER_LANCZOS4)
        got = lanczos.lanczos4_upscale(a, 512)
        assert got.shape == want.shape and got.dtype == np.uint8
        assert np.array_equal(got, want), (side, int((got != want).sum()))


def test_equals_opencv_on_saturating_noise_and_other_channel_counts():
    rng = np.random.default_rng(0)
    for shape, size in (((37, 37, 3), 64), ((50, 50, 1), 128), ((20, 20, 4), 77)):
        a = rng.choice(np.array([0, 255], np.uint8), size=shape)  # ringing overshoots: saturation
        want = cv2.resize(a, (size, size), interpolation=cv2.INTER_LANCZOS4).reshape(size, size, -1)
        assert np.array_equal(lanczos.lanczos4_upscale(a, size), want), shape
    with pytest.raises(ValueError, match="uint8"):
        lanczos.lanczos4_upscale(np.zeros((4, 4, 3), np.float32), 8)


def test_resize_square_uses_it_only_for_lanczos_upscaling():
    a = _photo(300)
    up = resize_square(a, CropConfig())
    assert np.array_equal(up, cv2.resize(a, (512, 512), interpolation=cv2.INTER_LANCZOS4))
    cubic = resize_square(a, CropConfig(upscale="cubic"))
    assert np.array_equal(cubic, cv2.resize(a, (512, 512), interpolation=cv2.INTER_CUBIC))
    big = _photo(700)
    assert np.array_equal(resize_square(big, CropConfig()), cv2.resize(big, (512, 512), interpolation=cv2.INTER_AREA))
