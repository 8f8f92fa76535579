"""The compiled CPU kernels (numba) of NIQE / BRISQUE give the torch path's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osdhuman.iqa import get_metric, moments


@pytest.fixture
def torch_path(monkeypatch):
    def run(fn):
        monkeypatch.setattr(moments, "ENABLED", False)
        try:
            return fn()
        finally:
            monkeypatch.setattr(moments, "ENABLED", True)
    return run


def test_moment_sums_equal_torch_with_zeros_and_circular_neighbours():
    g = torch.Generator().manual_seed(0)
    blocks = torch.randn(6, 16, 12, generator=g, dtype=torch.float64)
    blocks[0] = 0.0  # a flat block: every product is 0
    blocks[1, :, :4] = 0.0
    image = torch.randn(3, 21, 17, generator=g, dtype=torch.float64)
    got = moments.block_pair_sums(blocks), moments.image_pair_sums(image), moments.row_sums(image.flatten(1))
    moments.ENABLED = False
    try:
        want = moments.block_pair_sums(blocks), moments.image_pair_sums(image), moments.row_sums(image.flatten(1))
    finally:
        moments.ENABLED = True
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert got[0][0, :, 4].tolist() == [16 * 12] * 5  # all zeros counted as zeros


def test_niqe_and_brisque_scores_equal_the_torch_path(photos, tools, torch_path):
    x = tools.to_tensor(photos["astronaut"], tools.degrade(photos["coffee"][:384, :384], 0, 30))
    for name in ("niqe", "brisque"):
        m = get_metric(name, backend="offline")
        fast = m(x)
        slow = torch_path(lambda m=m: m(x))
        assert torch.allclose(fast, slow, rtol=0, atol=1e-9), (name, fast, slow)
        assert np.isfinite(fast.numpy()).all()


def test_numpy_padding_and_banded_resize_equal_torch(torch_path):
    import torch.nn.functional as F

    from osdhuman.iqa.filters import _pad_np, imresize_matlab

    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 9, 7, generator=g, dtype=torch.float64)
    for mode, tmode in (("replicate", "replicate"), ("zeros", "constant")):
        for lo, hi in ((3, 3), (1, 2)):
            want = F.pad(x[:, None], (lo, hi, lo, hi), mode=tmode)[:, 0].numpy()
            assert np.array_equal(_pad_np(x.numpy(), lo, hi, mode), want), (mode, lo, hi)
    img = torch.rand(2, 1, 37, 50, generator=g, dtype=torch.float64) * 255  # odd sizes: mirrored border taps
    fast = imresize_matlab(img, 0.5)
    slow = torch_path(lambda: imresize_matlab(img, 0.5))  # the dense matrix product
    assert fast.shape == slow.shape == (2, 1, 19, 25)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-10)
