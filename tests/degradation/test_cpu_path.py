"""The torch-free CPU path (cpu.py): the noise stream equals torch's CPU generator, the LQ agrees
with the batched torch path, and it is deterministic whatever the worker count."""

import numpy as np
import pytest
import torch

from osdhuman.degradation import DegradationConfig, Degrader, rng, sample_params
from osdhuman.degradation.cpu import degrade_image, degrade_images
from osdhuman.degradation.poisson import cdf_table, sample_levels

X86_SIMD = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
SEEDS = [0, 1, 12345, 2**32 + 7, 2**40 + 3, 2**63 - 1]  # the generator keeps the low 32 bits


@pytest.mark.parametrize("n", [1, 2, 7, 15, 16, 17, 31, 32, 100, 4099, 3 * 97 * 131])
def test_uniform_draws_equal_torch_rand(n):
    for seed in SEEDS:
        want = torch.rand(n, generator=torch.Generator().manual_seed(seed)).numpy()
        assert np.array_equal(rng.uniform(seed, n), want)


@pytest.mark.skipif(not X86_SIMD, reason="torch's normals use its x86 SIMD polynomials only there")
@pytest.mark.parametrize("n", [1, 2, 7, 15, 16, 17, 31, 32, 100, 4099, 3 * 97 * 131, 3 * 512 * 512])
def test_normal_draws_equal_torch_randn_bit_for_bit(n):
    # n < 16: torch's scalar float64 Box-Muller; n >= 16: blocks of 16, a ragged tail redone
    for seed in SEEDS:
        want = torch.randn(n, generator=torch.Generator().manual_seed(seed)).numpy()
        assert np.array_equal(rng.normal(seed, n), want)


def test_normal_draws_are_standard_normal():
    z = rng.normal(3, 200_000).astype(np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs((np.abs(z) < 1).mean() - 0.6827) < 0.005


def test_poisson_inversion_equals_searchsorted():
    g = np.random.default_rng(0)
    k = g.integers(0, 256, (4000,)).astype(np.uint8)
    u = g.random(4000, dtype=np.float32)
    table = cdf_table()
    for e in (0, 5, 8):
        want = [np.searchsorted(table[e * 256 + int(kk)], uu, side="right") for kk, uu in zip(k, u.astype(np.float64))]
        assert np.array_equal(sample_levels(k, e, u), np.minimum(want, table.shape[1] - 1))


def _photo(h, w, seed):
    """A smooth picture with edges (HWC uint8)."""
    g = np.random.default_rng(seed)
    low = g.random((6, 6, 3))
    yy, xx = np.meshgrid(np.linspace(0, 5, h), np.linspace(0, 5, w), indexing="ij")
    i0, j0 = np.floor(yy).astype(int), np.floor(xx).astype(int)
    i1, j1 = np.minimum(i0 + 1, 5), np.minimum(j0 + 1, 5)
    fy, fx = (yy - i0)[..., None], (xx - j0)[..., None]
    img = (low[i0, j0] * (1 - fy) * (1 - fx) + low[i1, j0] * fy * (1 - fx)
           + low[i0, j1] * (1 - fy) * fx + low[i1, j1] * fy * fx)
    edges = (((np.arange(w)[None, :] // 8 + np.arange(h)[:, None] // 12) % 2) * 0.25)[..., None]
    return np.clip((0.7 * img + edges) * 255, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("size", [(96, 96), (77, 131), (33, 29), (9, 13)])
def test_cpu_path_agrees_with_the_batched_torch_path(size):
    """Same parameters, same draws; only float rounding differs (FFT vs OpenCV routes, float32
    resampling positions). A level that rounds the other way before a JPEG step moves a few
    coefficients of its 8x8 block, and a level of the HQ / 4 LQ covers 16 pixels after the
    resize back, so rare pixels differ by several levels: per image at most 20% of the pixels
    differ and by 0.5 level on average, over all at most 5% (measured on 64 LQs of photo crops,
    mostly 512 x 512: 36% identical, a median 0.0016% of pixels differing, the worst 5.4%,
    mean at most 0.14 level)."""
    h, w = size
    hq = np.stack([_photo(h, w, s) for s in range(6)])
    seeds = [101, 202, 303, 404, 505, 606]
    x = torch.from_numpy(hq).permute(0, 3, 1, 2).float() / 255.0
    cpu = Degrader(batched=False)(x, seeds)
    torch_path = Degrader(batched=True)(x, seeds)
    assert cpu.shape == torch_path.shape == (6, 3, h, w)
    diff = ((cpu - torch_path).abs() * 255).round()
    for b in range(6):
        assert (diff[b] == 0).float().mean() > 0.8, (b, (diff[b] == 0).float().mean())
        assert diff[b].mean() < 0.5, (b, diff[b].mean())
    assert (diff == 0).float().mean() > 0.95
    # the CPU path is what Degrader runs for CPU tensors, and what `osdhuman degrade` writes
    cfg = DegradationConfig()
    for b in range(6):
        lq8 = degrade_image(hq[b], sample_params(cfg, seeds[b], (h, w)), cfg)
        assert np.array_equal(lq8, (cpu[b] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())


def test_cpu_path_is_deterministic_whatever_the_workers():
    cfg = DegradationConfig()
    images = [_photo(64 + 8 * i, 80 - 4 * i, i) for i in range(5)]
    params = [sample_params(cfg, 40 + i, im.shape[:2]) for i, im in enumerate(images)]
    one = degrade_images(images, params, cfg, workers=1)
    three = degrade_images(images, params, cfg, workers=3)
    again = degrade_images(images, params, cfg)
    for a, b, c in zip(one, three, again):
        assert a.dtype == np.uint8 and a.shape == b.shape
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert not np.array_equal(one[0], degrade_images(images[:1], [sample_params(cfg, 999, (64, 80))], cfg)[0])


def test_cpu_path_refuses_the_differentiable_codec():
    cfg = DegradationConfig(jpeg_codec="differentiable")
    im = _photo(32, 32, 0)
    with pytest.raises(ValueError, match="differentiable"):
        degrade_image(im, sample_params(cfg, 1, (32, 32)), cfg)
