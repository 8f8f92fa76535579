"""The batched building blocks against PyTorch's own single-image operations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osdhuman.degradation import KernelParams, build_kernels
from osdhuman.degradation.blur import blur_ragged, fft_length
from osdhuman.degradation.cpu_blur import blur_image
from osdhuman.degradation.cpu_jpeg import jpeg_image
from osdhuman.degradation.cpu_noise import noise_image
from osdhuman.degradation.noise import (
    add_noise,
    poisson_cdf_table,
    sample_poisson_levels,
)
from osdhuman.degradation.params import NoiseParams
from osdhuman.degradation.resize import resize_ragged


def noise_one(x: torch.Tensor, p: NoiseParams) -> torch.Tensor:
    """The CPU path's noise (cpu_noise.py) on x (1, 3, h, w)."""
    return torch.from_numpy(noise_image(x[0].numpy(), p))[None]


def _canvas(images):
    B = len(images)
    hc = max(i.shape[-2] for i in images)
    wc = max(i.shape[-1] for i in images)
    x = torch.zeros(B, 3, hc, wc)
    for b, im in enumerate(images):
        x[b, :, : im.shape[-2], : im.shape[-1]] = im
    return x, [tuple(i.shape[-2:]) for i in images]


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
def test_ragged_resize_matches_interpolate(mode):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 40, 52, generator=g), torch.rand(3, 33, 33, generator=g), torch.rand(3, 64, 20, generator=g)]
    x, sizes = _canvas(images)
    # scale-factor semantics (stage 1) for two images, a fixed size for the third
    scales = [0.37, 1.43, None]
    outs = [(int(40 * 0.37), int(52 * 0.37)), (int(33 * 1.43), int(33 * 1.43)), (16, 29)]
    y = resize_ragged(x, sizes, outs, [mode] * 3, scales)
    assert y.shape == (3, 3, max(o[0] for o in outs), max(o[1] for o in outs))
    for b, (im, s, o) in enumerate(zip(images, scales, outs)):
        if s is not None and mode != "area":
            ref = F.interpolate(im[None], scale_factor=s, mode=mode)[0]
        else:
            ref = F.interpolate(im[None], size=o, mode=mode)[0]
        torch.testing.assert_close(y[b, :, : o[0], : o[1]], ref, atol=2e-5, rtol=0)
        assert (y[b, :, o[0]:] == 0).all() and (y[b, :, :, o[1]:] == 0).all()


def test_fft_blur_matches_direct_correlation():
    g = torch.Generator().manual_seed(1)
    k = torch.from_numpy(build_kernels([KernelParams("aniso", 21, 2.5, 0.8, 0.7), KernelParams("sinc", 13, omega=1.0),
                                        KernelParams("plateau_iso", 7, 1.0, 1.0, 0.0, beta=1.5)], 21))
    images = [torch.rand(3, 48, 60, generator=g), torch.rand(3, 30, 30, generator=g), torch.rand(3, 7, 9, generator=g)]
    x, sizes = _canvas(images)
    y = blur_ragged(x, sizes, k, [0, 1, 2], fft=True)
    yd = blur_ragged(x, sizes, k, [0, 1, 2], fft=False)
    for b, im in enumerate(images):
        h, w = sizes[b]
        if h > 10 and w > 10:  # torch's reflect padding needs pad < size
            p = F.pad(im[None], (10, 10, 10, 10), mode="reflect")
            ref = F.conv2d(p, k[b].expand(3, 1, 21, 21), groups=3)[0]
            torch.testing.assert_close(y[b, :, :h, :w], ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(torch.from_numpy(blur_image(im.numpy(), k[b].double().numpy())), ref,
                                       atol=1e-5, rtol=0)
        torch.testing.assert_close(y[b, :, :h, :w], yd[b, :, :h, :w], atol=1e-5, rtol=0)
    # the smallest image is mirrored several times over: still a weighted mean of its pixels
    assert images[2].min() <= y[2, :, :7, :9].min() and y[2, :, :7, :9].max() <= images[2].max()


def test_fft_length_is_smooth_and_large_enough():
    for n in [1, 31, 148, 532, 787]:
        for m in (1, 32):
            L = fft_length(n, m)
            assert L >= n and L % m == 0
            r = L
            for p in (2, 3, 5):
                while r % p == 0:
                    r //= p
            assert r == 1


def test_poisson_inversion_is_exact():
    g = torch.Generator().manual_seed(2)
    k = torch.randint(0, 256, (3000,), generator=g)
    e = torch.randint(0, 9, (3000,), generator=g)
    u = torch.rand(3000, generator=g, dtype=torch.float64)
    n = sample_poisson_levels(k, e, u)
    table = poisson_cdf_table("cpu")
    ref = torch.tensor([int(torch.searchsorted(table[r], uu, right=True)) for r, uu in zip((e * 256 + k).tolist(), u.tolist())])
    assert torch.equal(n, ref)
    lam = 200 * 2**5 / 255
    s = sample_poisson_levels(torch.full((100000,), 200), torch.full((100000,), 5), torch.rand(100000, dtype=torch.float64, generator=g)).double()
    assert abs(s.mean() - lam) < 0.05 and abs(s.var() / lam - 1) < 0.03


def test_pure_noise_stage_recovers_its_level():
    x = torch.full((2, 3, 96, 96), 0.5)
    sizes = [(96, 96), (80, 64)]
    x[1, :, 80:] = 0
    x[1, :, :, 64:] = 0
    pg = [NoiseParams("gaussian", 12.0, False, 7), NoiseParams("gaussian", 20.0, True, 8)]
    y = add_noise(x, sizes, pg)
    std0 = ((y[0] - 0.5) * 255).std().item()
    std1 = ((y[1, :, :80, :64] - 0.5) * 255).std().item()
    assert abs(std0 - 12) < 0.6 and abs(std1 - 20) < 1.0
    assert torch.equal(y[1, 0, :80, :64], y[1, 2, :80, :64])  # gray: one draw for all channels
    assert (y[1, :, 80:] == 0).all()  # the canvas padding stays empty
    # Poisson on a flat image: one level, v = 1, noise = scale (P(q) - q), std = scale sqrt(q)
    q = 128 / 255
    x = torch.full((1, 3, 128, 128), q)
    yp = add_noise(x, [(128, 128)], [NoiseParams("poisson", 0.1, False, 9)])
    assert abs((yp - q).std().item() / (0.1 * q**0.5) - 1) < 0.05
    one = noise_one(x, NoiseParams("poisson", 0.1, False, 9))
    assert abs((one - q).std().item() / (0.1 * q**0.5) - 1) < 0.05
    assert torch.equal(one, yp)  # the single-image function is the same computation
    for p in (NoiseParams("poisson", 2.0, True, 5), NoiseParams("gaussian", 9.0, False, 5)):
        im = torch.rand(1, 3, 50, 40, generator=torch.Generator().manual_seed(1))
        assert torch.equal(noise_one(im, p), add_noise(im, [(50, 40)], [p]))


def test_noise_draws_do_not_depend_on_the_canvas():
    g = torch.Generator().manual_seed(4)
    im = torch.rand(1, 3, 40, 40, generator=g)
    p = NoiseParams("poisson", 1.0, False, 99)
    alone = add_noise(im, [(40, 40)], [p])
    big = torch.zeros(2, 3, 70, 90)
    big[1, :, :40, :40] = im[0]
    other = NoiseParams("gaussian", 5.0, False, 3)
    inside = add_noise(big, [(70, 90), (40, 40)], [other, p])
    assert torch.equal(alone[0], inside[1, :, :40, :40])


def test_differentiable_jpeg_approximates_the_codec():
    from osdhuman.degradation.jpeg import jpeg_differentiable, jpeg_real

    g = torch.Generator().manual_seed(6)
    low = torch.rand(2, 3, 6, 6, generator=g)
    x = F.interpolate(low, size=(64, 80), mode="bicubic").clamp(0, 1)
    x[1, :, 40:] = 0  # a ragged canvas: image 1 is 40 x 80
    sizes = [(64, 80), (40, 80)]
    psnr = lambda a, b: float(10 * torch.log10(1 / ((a - b) ** 2).mean()))
    for q in (30, 90):
        real = jpeg_real(x, sizes, [q, q])
        approx = jpeg_differentiable(x, sizes, [q, q])
        assert psnr(real[0], approx[0]) > 30 and psnr(real[1, :, :40], approx[1, :, :40]) > 30
        assert (approx[1, :, 40:] == 0).all()
    lo = jpeg_differentiable(x, sizes, [30, 30])
    hi = jpeg_differentiable(x, sizes, [95, 95])
    assert psnr(hi, x) > psnr(lo, x) + 3  # quality matters


def test_cpu_jpeg_is_the_same_libjpeg_turbo_as_torchvision():
    """jpeg_real on CPU goes through Pillow (no torchvision import); torchvision's CPU codec is the
    same libjpeg-turbo, so the decoded pixels must be identical at every quality."""
    from torchvision.io import decode_jpeg, encode_jpeg

    from osdhuman.degradation.jpeg import jpeg_real

    g = torch.Generator().manual_seed(3)
    low = torch.rand(2, 3, 9, 11, generator=g)
    x = F.interpolate(low, size=(72, 88), mode="bicubic").clamp(0, 1)
    x[1, :, 50:] = 0
    sizes = [(72, 88), (50, 88)]
    for q in (30, 57, 95):
        ours = jpeg_real(x, sizes, [q, q])
        for b, (h, w) in enumerate(sizes):
            u8 = (x[b, :, :h, :w].clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
            tv = decode_jpeg(encode_jpeg(u8, quality=q)).float() / 255
            assert torch.equal(ours[b, :, :h, :w], tv)
        one = jpeg_image(x[0].numpy(), q)  # the CPU path's codec call
        assert torch.equal(torch.from_numpy(one), ours[0])


def test_poisson_guide_table_equals_its_searchsorted_definition():
    """The histogram construction of the guide table equals searchsorted(CDF, j / J, right=True)."""
    from osdhuman.degradation.poisson import J, K, guide_from_cdf

    cdf = poisson_cdf_table("cpu")  # (R, K)
    q = (torch.arange(J + 1, dtype=torch.float64) / J).expand(cdf.shape[0], -1).contiguous()
    g = torch.searchsorted(cdf, q, right=True).clamp(max=K - 1)
    want = (2 * g[:, :-1] + (g[:, 1:] != g[:, :-1]).long()).to(torch.int16)
    assert torch.equal(torch.from_numpy(guide_from_cdf(cdf.numpy())), want)


def test_poisson_guide_blocks_are_built_only_for_the_exponents_drawn(monkeypatch):
    """The guide table is filled one exponent block at a time; draws from a partly built
    table equal the exact inversion, and a block is built once."""
    from osdhuman.degradation import noise, poisson

    monkeypatch.setattr(noise, "_TABLES", {k: v for k, v in noise._TABLES.items() if not k.startswith("guide:")})
    monkeypatch.setattr(noise, "_GUIDE_BLOCKS", {})
    monkeypatch.setattr(poisson, "_GUIDE", np.zeros_like(poisson._GUIDE))
    monkeypatch.setattr(poisson, "_BUILT", set())
    built = []
    real = poisson.guide_from_cdf
    monkeypatch.setattr(poisson, "guide_from_cdf", lambda cdf: built.append(cdf.shape) or real(cdf))
    g = torch.Generator().manual_seed(3)
    k = torch.randint(0, 256, (5000,), generator=g)
    u = torch.rand(5000, generator=g, dtype=torch.float64)
    table = poisson_cdf_table("cpu")
    for exps in ([8], [8], [3, 8], None):
        vals = exps if exps else [0, 5]
        e = torch.tensor(vals).repeat(5000 // len(vals))
        n = sample_poisson_levels(k, e, u, exps)
        ref = torch.tensor([int(torch.searchsorted(table[r], uu, right=True))
                            for r, uu in zip((e * 256 + k).tolist(), u.tolist())])
        assert torch.equal(n, ref)
    assert built == [(256, poisson.K)] * 4  # blocks 8, 3, then 0 and 5 (found by torch.unique)
    assert noise._GUIDE_BLOCKS["guide:cpu"] == {0, 3, 5, 8} == poisson.built_blocks()
