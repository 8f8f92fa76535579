"""The CPU path's routes for one image (numpy / OpenCV blur and resize, cpu_blur.py and
cpu_resize.py) against exact float64 references computed with torch."""

import math
import random

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osdhuman.degradation import KernelConfig, KernelParams, build_kernels
from osdhuman.degradation.cpu_blur import blur_image
from osdhuman.degradation.cpu_resize import resize_image
from osdhuman.degradation.kernels import NEGLIGIBLE, crop_kernel, separable_factors
from osdhuman.degradation.params import sample_kernel


def blur_one(x: torch.Tensor, k) -> torch.Tensor:
    """cpu_blur.blur_image on x (1, C, h, w) with kernel k (M, M) float64 (tensor or array)."""
    k = k.numpy() if torch.is_tensor(k) else k
    return torch.from_numpy(blur_image(x[0].numpy(), k))[None]


def resize_one(x: torch.Tensor, size, mode, scale=None) -> torch.Tensor:
    """cpu_resize.resize_image on x (1, C, h, w)."""
    return torch.from_numpy(resize_image(x[0].numpy(), size, mode, scale))[None]


def _direct64(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Real-ESRGAN's filter2D in float64: reflect padding by half the kernel, correlation."""
    M = k.shape[-1]
    p = F.pad(x.double(), (M // 2,) * 4, mode="reflect")
    return F.conv2d(p, k.double().expand(x.shape[1], 1, M, M), groups=x.shape[1])


def _route(k64: np.ndarray) -> str:
    c = crop_kernel(k64)
    return "separable" if separable_factors(c) is not None else "direct" if c.size < 130 else "fft"


def test_kernel_analysis_finds_support_and_separability():
    k = build_kernels([KernelParams("iso", 21, 2.0, 2.0, 0.0), KernelParams("aniso", 7, 2.0, 0.7, 0.6),
                       KernelParams("iso", 21, 0.3, 0.3, 0.0), KernelParams("plateau_iso", 21, 1.5, 1.5, 0.0, beta=1.2)],
                      21, dtype=np.float64)
    assert crop_kernel(k[0]).shape == (21, 21)  # wide Gaussian: no ring is negligible
    assert separable_factors(k[0]) is not None  # isotropic Gaussian = outer(g, g)
    rows, cols = separable_factors(k[0])
    np.testing.assert_allclose(np.outer(rows, cols), k[0], atol=1e-15)
    c1 = crop_kernel(k[1])
    assert c1.shape == (7, 7) and separable_factors(c1) is None  # rotated anisotropic: not separable
    assert np.count_nonzero(k[1]) == np.count_nonzero(c1)  # only exact zeros were cut
    c2 = crop_kernel(k[2])  # sigma 0.3: everything beyond 2 pixels is below 1e-8 in total
    assert c2.shape[0] <= 5 and np.abs(k[2]).sum() - np.abs(c2).sum() <= NEGLIGIBLE
    assert separable_factors(k[3]) is None  # plateau: not separable, heavy tails
    assert crop_kernel(k[3]).shape == (21, 21)


def test_cpu_blur_routes_match_direct_correlation():
    rng = random.Random(0)
    g = torch.Generator().manual_seed(0)
    cfg = KernelConfig()
    seen = set()
    for i in range(60):
        kp = sample_kernel(rng, cfg) if i >= 3 else [KernelParams("iso", 21, 2.0, 2.0, 0.0),
                                                      KernelParams("aniso", 9, 1.5, 0.6, 0.3),
                                                      KernelParams("plateau_aniso", 21, 2.0, 1.0, 1.0, beta=1.5)][i]
        k = build_kernels([kp], 21, dtype=np.float64)[0]
        h, w = rng.randint(25, 70), rng.randint(25, 70)
        x = torch.rand(1, 3, h, w, generator=g)
        y = blur_one(x, k)
        assert y.dtype == torch.float32 and y.shape == x.shape
        torch.testing.assert_close(y.double(), _direct64(x, torch.from_numpy(k)), atol=2e-6, rtol=0)
        assert torch.equal(y, blur_one(x, k))  # deterministic
        seen.add(_route(k))
    assert seen == {"separable", "direct", "fft"}


def test_cpu_blur_route_of_a_small_image_mirrors_like_the_general_path():
    g = torch.Generator().manual_seed(2)
    k = torch.from_numpy(build_kernels([KernelParams("plateau_iso", 7, 1.0, 1.0, 0.0, beta=1.5)], 21, dtype=np.float64)[0])
    x = torch.rand(1, 3, 7, 9, generator=g)  # smaller than the 21x21 canvas' padding
    y = blur_one(x, k)
    torch.testing.assert_close(y.double(), _direct64(x, k[7:14, 7:14]), atol=2e-6, rtol=0)
    # smaller than the kernel's own padding: mirrored several times over, as torch's ragged path
    from osdhuman.degradation.blur import blur_ragged

    tiny = torch.rand(1, 3, 2, 3, generator=g)
    torch.testing.assert_close(blur_one(tiny, k), blur_ragged(tiny, [(2, 3)], k[None].float(), [0]), atol=2e-6, rtol=0)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_cpu_resize_to_a_size_matches_interpolate(mode):
    rng = random.Random(1)
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        h, w = rng.randint(5, 120), rng.randint(5, 120)
        r = rng.choice([rng.uniform(0.1, 2.0), rng.uniform(0.97, 1.03), 4.0, 0.25])
        oh, ow = max(1, round(h * r)), max(1, round(w * r * rng.uniform(0.9, 1.1)))
        x = torch.rand(1, 3, h, w, generator=g)
        y = resize_one(x, (oh, ow), mode)
        ref = F.interpolate(x.double(), size=(oh, ow), mode=mode)  # float64 positions, as OpenCV
        assert y.shape == ref.shape and y.dtype == torch.float32
        torch.testing.assert_close(y.double(), ref, atol=2e-6, rtol=0)
        # PyTorch's own float32 result differs only by its float32 source positions
        torch.testing.assert_close(y, F.interpolate(x, size=(oh, ow), mode=mode), atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_cpu_resize_by_scale_factor_matches_interpolate(mode):
    rng = random.Random(4)
    g = torch.Generator().manual_seed(4)
    for i in range(60):
        h, w = rng.randint(5, 120), rng.randint(5, 120)
        s = [rng.uniform(0.15, 1.5), rng.uniform(0.97, 1.03), 1 + 0.5 / h][i % 3]  # near 1: sizes may not change
        size = (math.floor(h * s), math.floor(w * s))
        if min(size) < 1:
            continue
        x = torch.rand(1, 3, h, w, generator=g)
        y = resize_one(x, size, mode, s)
        ref = F.interpolate(x.double(), scale_factor=s, mode=mode)  # sampling step 1 / s
        assert y.shape == ref.shape
        # float32 weights (OpenCV) or positions (PyTorch) against float64: a shifted or
        # skipped sampling grid would differ by ~0.1-1
        torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=0)


def test_cpu_resize_area_keeps_pytorch_semantics():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 37, 50, generator=g)
    for size in ((74, 150), (111, 50), (37, 100)):  # integer upsampling = replication
        assert torch.equal(resize_one(x, size, "area"), F.interpolate(x, size=size, mode="area"))
    rng = random.Random(3)
    for _ in range(30):  # PyTorch's (overlapping) adaptive pooling windows, down and up
        h, w = rng.randint(3, 90), rng.randint(3, 90)
        size = (rng.randint(1, 130), rng.randint(1, 130))
        x = torch.rand(1, 3, h, w, generator=g)
        y = resize_one(x, size, "area")
        assert y.dtype == torch.float32
        torch.testing.assert_close(y.double(), F.interpolate(x.double(), size=size, mode="area"), atol=1e-6, rtol=0)


def test_opencv_threads_restored_after_a_call():
    from osdhuman.degradation import Degrader

    prev = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        Degrader()(torch.rand(2, 3, 32, 32), [0, 1])
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(prev)
