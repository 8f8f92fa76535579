"""The whole degradation: shapes, ranges, reproducibility across batches, plausible damage."""

import json

import pytest
import torch

from osdhuman.degradation import DegradationConfig, Degrader, ImageParams, make_pairs


def _images(n, size=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    edges = ((xx // 8 + yy // 12) % 2).float() * 0.25
    return (0.7 * x + edges).clamp(0, 1)


def _psnr(a, b):
    return (10 * torch.log10(1 / ((a - b) ** 2).mean(dim=(1, 2, 3)))).tolist()


@pytest.fixture(scope="module")
def batch():
    hq = _images(6)
    lq, params = Degrader()(hq, list(range(100, 106)), return_params=True)
    return hq, lq, params


def test_shape_dtype_range_and_8bit_levels(batch):
    hq, lq, params = batch
    assert lq.shape == hq.shape and lq.dtype == torch.float32
    assert lq.min() >= 0 and lq.max() <= 1
    assert torch.equal(lq * 255, (lq * 255).round())
    assert len(params) == 6 and all(isinstance(p, ImageParams) for p in params)
    rec = json.loads(json.dumps(params[0].to_dict()))
    assert rec["seed"] == 100 and rec["stage1"]["noise"]["type"] in ("gaussian", "poisson")


def test_clean_image_gets_measurably_worse(batch):
    hq, lq, _ = batch
    psnr = _psnr(lq, hq)
    assert all(10 < p < 38 for p in psnr), psnr  # degraded, but still the same picture
    assert 16 < sum(psnr) / len(psnr) < 32, psnr
    # the degradation removes detail: high-frequency energy drops
    hf = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean().item()
    assert hf(lq) < hf(hq)


@pytest.mark.parametrize("batched", [False, True])
def test_same_seed_same_lq_whatever_the_batch(batch, batched):
    hq, _, _ = batch
    seeds = list(range(100, 106))
    deg = Degrader(batched=batched)
    full = deg(hq, seeds)
    assert torch.equal(full, deg(hq, seeds))  # bit-identical run to run
    assert torch.equal(full[2:5], deg(hq[2:5], seeds[2:5]))
    assert torch.equal(full[4:5], deg(hq[4:5], seeds[4:5]))
    swapped = deg(hq[[5, 0]], [seeds[5], seeds[0]])
    assert torch.equal(swapped[0], full[5]) and torch.equal(swapped[1], full[0])
    other = deg(hq[:1], [999])
    assert not torch.equal(other[0], full[0])


def test_batched_and_image_by_image_modes_agree():
    hq = _images(4, seed=3)  # same draws in both modes; only float rounding differs
    a = Degrader(batched=False)(hq, [1, 2, 3, 4])
    b = Degrader(batched=True)(hq, [1, 2, 3, 4])
    diff = (a - b).abs() * 255
    assert diff.mean() < 0.3 and (diff == 0).float().mean() > 0.9, (diff.mean(), (diff == 0).float().mean())


def test_disabled_stages_and_no_back_resize():
    cfg = DegradationConfig(back_to_hq_size=False)
    lq = Degrader(cfg)(_images(2), [0, 1])
    assert lq.shape == (2, 3, 24, 24)
    # everything off but the final resize and an 8-bit JPEG at quality 100: close to a plain resize
    cfg = DegradationConfig()
    cfg.stage1.blur_prob = cfg.stage2.blur_prob = 0.0
    cfg.stage1.resize.probs = cfg.stage2.resize.probs = (0.0, 0.0, 1.0)
    cfg.stage1.noise.gaussian_sigma = cfg.stage2.noise.gaussian_sigma = (0.0, 0.0)
    cfg.stage1.noise.gaussian_prob = cfg.stage2.noise.gaussian_prob = 1.0
    cfg.stage1.jpeg_quality = cfg.final.jpeg_quality = (100, 100)
    cfg.final.sinc_prob = 0.0
    cfg.stage2.resize.down = (1.0, 1.0)
    hq = _images(2, size=96)
    lq, params = Degrader(cfg)(hq, [5, 6], return_params=True)
    assert all(p.stage1.blur is None and p.final_sinc is None for p in params)
    assert min(_psnr(lq, hq)) > 22


def test_make_pairs_in_minus_one_one():
    hq01 = _images(3)
    hq = hq01 * 2 - 1
    lq, hq_out = make_pairs(hq, torch.tensor([7, 8, 9]), Degrader())
    assert lq.shape == hq.shape and hq_out is hq
    assert lq.min() >= -1 and lq.max() <= 1
    assert torch.equal(lq, Degrader()(hq01, [7, 8, 9]) * 2 - 1)


def test_differentiable_jpeg_mode_keeps_gradients():
    cfg = DegradationConfig(jpeg_codec="differentiable")
    deg = Degrader(cfg)
    hq = _images(2).requires_grad_(True)
    params = deg.sample([1, 2], (96, 96))
    lq = deg.apply(hq, params)
    lq.mean().backward()
    assert hq.grad is not None and hq.grad.abs().sum() > 0
    lq2 = Degrader(cfg)(hq.detach(), [1, 2])
    assert lq2.shape == hq.shape and 0 <= lq2.min() and lq2.max() <= 1


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="seeds"):
        Degrader()(_images(2), [1])
    with pytest.raises(ValueError, match="B, 3, H, W"):
        Degrader()(torch.rand(3, 32, 32), [1])


def test_result_does_not_depend_on_threads_or_workers():
    hq = _images(4, seed=5)
    seeds = [11, 12, 13, 14]
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = Degrader(workers=2)(hq, seeds)
        torch.set_num_threads(1)
        b = Degrader()(hq, seeds)
        assert torch.get_num_threads() == 1  # restored after the call
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(a, b)
