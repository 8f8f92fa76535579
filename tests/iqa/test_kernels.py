"""The compiled CPU kernels (numba) against direct numpy expressions of the same definitions."""

from __future__ import annotations

import numpy as np

from osdhuman.iqa import moments
from osdhuman.iqa.filters import _resize_matrix, imresize_matlab, pad


def _sums(x: np.ndarray) -> np.ndarray:
    """(..., M) -> (..., 6), the definition of moments' sums written out."""
    xx = x * x
    neg, pos = x < 0, x > 0
    return np.stack([(xx * neg).sum(-1), neg.sum(-1), (xx * pos).sum(-1), pos.sum(-1), (x == 0).sum(-1),
                     np.abs(x).sum(-1)], axis=-1).astype(np.float64)


def test_moment_sums_equal_their_definition_with_zeros_and_circular_neighbours():
    rng = np.random.default_rng(0)
    blocks = rng.standard_normal((6, 16, 12))
    blocks[0] = 0.0  # a flat block: every product is 0
    blocks[1, :, :4] = 0.0
    image = rng.standard_normal((3, 21, 17))
    circ = [blocks] + [blocks * np.roll(blocks, s, axis=(1, 2)) for s in ((0, 1), (1, 0), (1, 1), (1, -1))]
    inside = [image, image[:, :, :-1] * image[:, :, 1:], image[:, :-1, :] * image[:, 1:, :],
              image[:, :-1, :-1] * image[:, 1:, 1:], image[:, 1:, :-1] * image[:, :-1, 1:]]
    want_blocks = np.stack([_sums(p.reshape(len(p), -1)) for p in circ], axis=1)  # (6, 5, 6)
    want_image = np.stack([_sums(p.reshape(len(p), -1)) for p in inside], axis=1)  # (3, 5, 6)
    got_blocks = moments.block_pair_sums(blocks)
    np.testing.assert_allclose(got_blocks, want_blocks, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moments.image_pair_sums(image), want_image, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moments.row_sums(image.reshape(3, -1)), _sums(image.reshape(3, -1)), rtol=1e-12)
    assert got_blocks[0, :, 4].tolist() == [16 * 12] * 5  # all zeros counted as zeros
    # tiles read in place equal the blocks cut out one by one (row-major order)
    tiles = image[:, :16, :16].reshape(3, 2, 8, 2, 8).transpose(0, 1, 3, 2, 4).reshape(-1, 8, 8)
    np.testing.assert_allclose(moments.tiled_pair_sums(image, 8), moments.block_pair_sums(tiles), rtol=1e-12)


def test_padding_equals_numpy_pad_and_banded_resize_equals_the_dense_matrices():
    rng = np.random.default_rng(1)
    x = rng.random((2, 9, 7))
    for mode, npmode in (("replicate", "edge"), ("zeros", "constant")):
        for lo, hi in ((3, 3), (1, 2)):
            want = np.pad(x, ((0, 0), (lo, hi), (lo, hi)), mode=npmode)
            assert np.array_equal(pad(x, lo, hi, mode), want), (mode, lo, hi)
    img = rng.random((2, 37, 50)) * 255  # odd sizes: mirrored border taps
    fast = imresize_matlab(img, 0.5)
    dense = _resize_matrix(37, 19, 0.5) @ img @ _resize_matrix(50, 25, 0.5).T  # the matrix product
    assert fast.shape == dense.shape == (2, 19, 25)
    np.testing.assert_allclose(fast, dense, rtol=0, atol=1e-10)
