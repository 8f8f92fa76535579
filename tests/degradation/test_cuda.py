"""The ragged-batch path on a GPU (skipped without CUDA): nvJPEG, CUDA generators, invariance."""

import pytest
import torch

from osdhuman.degradation import Degrader

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cuda_batch_is_reproducible_and_batch_invariant():
    g = torch.Generator().manual_seed(0)
    hq = torch.nn.functional.interpolate(torch.rand(8, 3, 16, 16, generator=g), size=(128, 128), mode="bicubic")
    hq = hq.clamp(0, 1).cuda()
    deg = Degrader()
    seeds = list(range(8))
    lq, params = deg(hq, seeds, return_params=True)
    assert lq.is_cuda and lq.shape == hq.shape and 0 <= lq.min() and lq.max() <= 1
    assert torch.equal(lq * 255, (lq * 255).round())
    assert torch.equal(lq, deg(hq, seeds))
    assert torch.equal(lq[3:6], deg(hq[3:6], seeds[3:6]))
    # same draws as the CPU path: the deterministic parameters agree
    assert [p.to_dict() for p in params] == [p.to_dict() for p in Degrader().sample(seeds, (128, 128))]
    psnr = 10 * torch.log10(1 / ((lq - hq) ** 2).mean(dim=(1, 2, 3)))
    assert (psnr > 10).all() and (psnr < 40).all()


def test_cuda_image_by_image_mode_runs_the_host_cpu_path():
    # batched=False on CUDA: one image at a time through the numpy CPU path on the host (the
    # same LQ as for the CPU tensors), the result back on the input's device
    g = torch.Generator().manual_seed(1)
    hq = torch.nn.functional.interpolate(torch.rand(3, 3, 16, 16, generator=g), size=(96, 96), mode="bicubic")
    hq = hq.clamp(0, 1).cuda()
    seeds = [5, 6, 7]
    lq = Degrader(batched=False)(hq, seeds)
    assert lq.is_cuda and lq.shape == hq.shape and torch.equal(lq * 255, (lq * 255).round())
    assert torch.equal(lq, Degrader(batched=False)(hq, seeds))
    assert torch.equal(lq.cpu(), Degrader()(hq.cpu(), seeds))
    ref = Degrader(batched=True)(hq.cpu(), seeds)  # same draws (the CPU generator), float rounding apart
    assert ((lq.cpu() - ref).abs() * 255).mean() < 1.0
