"""Blur kernels: normalisation, shape, symmetry, the closed forms, and the sampler's table."""

import math
import random

import numpy as np
import pytest
import torch
from scipy import special, stats

from osdhuman.degradation import (
    DegradationConfig,
    KernelConfig,
    KernelParams,
    build_kernels,
)
from osdhuman.degradation.params import sample_kernel

KINDS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]


def _draw(n, cfg=None, seed=0):
    rng = random.Random(seed)
    cfg = cfg or KernelConfig()
    return [sample_kernel(rng, cfg) for _ in range(n)]


def test_kernels_sum_to_one_shape_support_and_point_symmetry():
    params = _draw(400)
    k = build_kernels(params, 21)
    assert k.shape == (400, 21, 21) and k.dtype == np.float32
    k = torch.from_numpy(k)
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(400), atol=1e-5, rtol=0)
    not_sinc = torch.tensor([p.kind != "sinc" for p in params])
    assert (k[not_sinc] >= 0).all()  # only the sinc has negative lobes
    assert (k[~not_sinc] < 0).any()
    for kp, ker in zip(params, k):
        half = kp.size // 2
        outside = ker.clone()
        outside[10 - half:11 + half, 10 - half:11 + half] = 0
        assert outside.abs().max() == 0, f"{kp} has weight outside its {kp.size}x{kp.size} support"
        # every kind is symmetric under a 180 degree rotation (correlation == convolution)
        torch.testing.assert_close(ker, ker.flip(0).flip(1), atol=1e-7, rtol=0)
        if kp.kind in ("iso", "generalized_iso", "plateau_iso", "sinc"):
            torch.testing.assert_close(ker, ker.T, atol=1e-7, rtol=0)
            torch.testing.assert_close(ker, ker.flip(1), atol=1e-7, rtol=0)


def test_gaussian_kernels_match_closed_form():
    sx, sy, th = 2.3, 0.7, 0.6
    k = build_kernels([KernelParams("aniso", 21, sx, sy, th),
                       KernelParams("iso", 9, 1.3, 1.3, 0.0)], 21).astype(np.float64)
    ax = np.arange(-10, 11)
    xx, yy = np.meshgrid(ax, ax)  # x = column offset, y = row offset
    # rotate the coordinates into the kernel's principal axes
    u = np.cos(th) * xx + np.sin(th) * yy
    v = -np.sin(th) * xx + np.cos(th) * yy
    ref = np.exp(-0.5 * (u**2 / sx**2 + v**2 / sy**2))
    np.testing.assert_allclose(k[0], ref / ref.sum(), atol=1e-7)
    ref2 = np.exp(-(xx**2 + yy**2) / (2 * 1.3**2)) * ((abs(xx) <= 4) & (abs(yy) <= 4))
    np.testing.assert_allclose(k[1], ref2 / ref2.sum(), atol=1e-7)


def test_generalized_plateau_and_sinc_match_closed_form():
    ax = np.arange(-10, 11)
    xx, yy = np.meshgrid(ax, ax)
    q = (xx**2 + yy**2) / 1.5**2
    k = build_kernels([KernelParams("generalized_iso", 21, 1.5, 1.5, 0.0, beta=2.5),
                       KernelParams("plateau_iso", 21, 1.5, 1.5, 0.0, beta=1.7),
                       KernelParams("sinc", 15, omega=1.2)], 21).astype(np.float64)
    g = np.exp(-0.5 * q**2.5)
    np.testing.assert_allclose(k[0], g / g.sum(), atol=1e-7)
    p = 1 / (q**1.7 + 1)
    np.testing.assert_allclose(k[1], p / p.sum(), atol=1e-7)
    r = np.sqrt(xx**2 + yy**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = 1.2 * special.j1(1.2 * r) / (2 * np.pi * r)
    s[10, 10] = 1.2**2 / (4 * np.pi)
    s = s * ((abs(xx) <= 7) & (abs(yy) <= 7))
    np.testing.assert_allclose(k[2], s / s.sum(), atol=1e-7)


def test_kind_frequencies_match_the_table():
    cfg = KernelConfig()
    draws = _draw(20000, cfg, seed=3)
    mixed = [d.kind for d in draws if d.kind != "sinc"]
    observed = np.array([mixed.count(k) for k in KINDS])
    expected = np.array(cfg.kind_probs) / sum(cfg.kind_probs) * len(mixed)
    assert stats.chisquare(observed, expected).pvalue > 1e-3, (observed, expected)
    n_sinc = len(draws) - len(mixed)
    assert stats.binomtest(n_sinc, len(draws), cfg.sinc_prob).pvalue > 1e-3
    sizes = [d.size for d in draws]
    assert stats.chisquare([sizes.count(s) for s in cfg.sizes]).pvalue > 1e-3


def test_a_skewed_table_is_followed():
    cfg = KernelConfig(kind_probs=[0, 0, 0, 0, 1, 0], sinc_prob=0)
    assert {d.kind for d in _draw(300, cfg)} == {"plateau_iso"}


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_parameter_ranges(stage):
    kc = getattr(DegradationConfig(), stage).kernel
    draws = _draw(5000, kc, seed=11)
    for d in draws:
        if d.kind == "sinc":
            lo, hi = kc.sinc_omega_small if d.size < 13 else kc.sinc_omega_large
            assert lo <= d.omega <= hi
            continue
        assert kc.sigma[0] <= d.sigma_x <= kc.sigma[1] and kc.sigma[0] <= d.sigma_y <= kc.sigma[1]
        assert -math.pi <= d.rotation <= math.pi
        if d.kind.endswith("_iso") or d.kind == "iso":
            assert d.sigma_x == d.sigma_y and d.rotation == 0
        if d.kind.startswith("generalized"):
            assert 0.5 <= d.beta <= 4
        if d.kind.startswith("plateau"):
            assert 1 <= d.beta <= 2
    sig = [d.sigma_x for d in draws if d.kind != "sinc"]
    assert min(sig) < kc.sigma[0] + 0.05 and max(sig) > kc.sigma[1] - 0.05  # the whole range is used
    small = [d.omega for d in draws if d.kind == "sinc" and d.size >= 13]
    assert min(small) < math.pi / 3  # large kernels reach below pi / 3
