"""Shared grayscale planes: one ImageBatch per chunk of crops feeds NIQE, BRISQUE and PIQE,
with the numbers each metric gives on its own."""

from __future__ import annotations

import numpy as np
import pytest

from osdhuman.iqa import ImageBatch, batch, get_metric
from osdhuman.iqa.crops import score_crops


def _crops(photos, tools):
    a = photos["astronaut"][:192, :192]
    return np.stack([a, tools.degrade(a, 0, 30), tools.degrade(photos["coffee"][:192, :192], 1.5, 80)])  # (3, 192, 192, 3)


def test_planes_are_pyiqas_luma_bit_for_bit_and_skimages_gray(photos, tools):
    crops = _crops(photos, tools)
    p = ImageBatch.of(crops)
    assert p.yiq().dtype == np.float32 and p.gray().dtype == np.float64 and p.yiq().shape == (3, 192, 192)
    assert p.rgb().dtype == np.float32 and np.array_equal(p.u8(), crops)
    x = tools.to_tensor(*crops)  # torch (N, 3, H, W) float32, u8 / 255
    q = ImageBatch.of(x)  # the per-pixel float path gives the 8-bit table path's values
    assert np.array_equal(p.yiq(), q.yiq()) and np.array_equal(p.gray(), q.gray())
    assert np.array_equal(p.rgb(), q.rgb()) and np.array_equal(q.u8(), crops)
    color_util = pytest.importorskip("pyiqa.utils.color_util")
    assert np.array_equal(p.yiq(), color_util.to_y_channel(x, 1, "yiq")[:, 0].numpy())  # NIQE and PIQE start here
    skcolor = pytest.importorskip("skimage.color")
    # scikit-image reads u8 / 255 in float64; the metrics' input is u8 / 255 in float32
    np.testing.assert_allclose(p.gray()[1], skcolor.rgb2gray(crops[1]), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        ImageBatch.of(crops[0])
    with pytest.raises(ValueError, match="uint8 or float"):
        ImageBatch.of(crops.astype(np.int32))


def test_score_crops_computes_planes_once_and_matches_each_metric_alone(photos, tools, monkeypatch):
    crops = _crops(photos, tools)
    ms = [get_metric(n, backend="offline") for n in ("niqe", "brisque", "piqe", "laplacian_var")]
    calls = []
    real = batch._planes_u8
    monkeypatch.setattr(batch, "_planes_u8", lambda u, *a: calls.append(len(u)) or real(u, *a))
    cols = score_crops(ms, crops, batch_size=2)
    assert calls == [2, 1]  # once per chunk, for all three plane readers
    for m, col in zip(ms, cols):
        alone = m(tools.to_tensor(*crops))  # from the float tensor, each metric on its own
        assert col.shape == (3,) and col.dtype == np.float64 and np.isfinite(col).all()
        np.testing.assert_allclose(col, alone, rtol=0, atol=1e-9, err_msg=m.record.name)


def test_score_crops_turns_a_failing_metric_into_nan_and_rejects_float_input(photos, tools):
    crops = _crops(photos, tools)
    good = get_metric("piqe", backend="offline")

    class Broken:
        record = good.record

        def __call__(self, b):
            raise RuntimeError("boom")

    with pytest.warns(UserWarning, match="boom"):
        bad, ok = score_crops([Broken(), good], crops)
    assert np.isnan(bad).all() and np.isfinite(ok).all()
    with pytest.raises(ValueError, match="uint8"):
        score_crops([good], crops.astype(np.float32))


def test_float_images_keep_their_own_planes_whatever_was_read_first(photos, tools):
    """A float batch rounded to 8 bits for the Laplacian still gives NIQE / BRISQUE / PIQE the
    planes of its float values, in whichever order the metrics read it."""
    x = (_crops(photos, tools)[:2].astype(np.float32) + 0.3) / 256  # values between the 8-bit levels
    a = ImageBatch.of(x)
    a.u8()  # the Laplacian's 8-bit copy first
    b = ImageBatch.of(x)
    assert np.array_equal(a.yiq(), b.yiq()) and np.array_equal(a.gray(), b.gray())
    assert not np.array_equal(b.yiq(), ImageBatch.of(b.u8()).yiq())
