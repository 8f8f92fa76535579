"""Shared grayscale planes: one pass per crop feeds NIQE, BRISQUE and PIQE, with the numbers
each metric gives on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osdhuman.iqa import get_metric, moments, planes
from osdhuman.iqa.crops import score_crops


def _crops(photos, tools):
    a = photos["astronaut"][:192, :192]
    return np.stack([a, tools.degrade(a, 0, 30), tools.degrade(photos["coffee"][:192, :192], 1.5, 80)])  # (3, 192, 192, 3)


def test_planes_are_pyiqas_luma_bit_for_bit_and_skimages_gray(photos, tools):
    crops = _crops(photos, tools)
    x = tools.to_tensor(*crops)
    p = planes.planes_from_uint8(crops)
    assert p.yiq.dtype == np.float32 and p.gray.dtype == np.float64 and p.yiq.shape == (3, 192, 192)
    q = planes.planes_from_tensor(x)
    assert np.array_equal(p.yiq, q.yiq) and np.array_equal(p.gray, q.gray)
    color_util = pytest.importorskip("pyiqa.utils.color_util")
    assert np.array_equal(p.yiq, color_util.to_y_channel(x, 1, "yiq")[:, 0].numpy())  # NIQE and PIQE start here
    skcolor = pytest.importorskip("skimage.color")
    # scikit-image reads u8 / 255 in float64; the metrics' input is u8 / 255 in float32
    np.testing.assert_allclose(p.gray[1], skcolor.rgb2gray(crops[1]), rtol=0, atol=1e-7)
    moments.ENABLED = False  # the torch fallback gives the same planes
    try:
        r = planes.planes_from_uint8(crops)
    finally:
        moments.ENABLED = True
    assert np.array_equal(r.yiq, p.yiq)
    np.testing.assert_allclose(r.gray, p.gray, rtol=0, atol=1e-15)


def test_score_crops_computes_planes_once_and_matches_each_metric_alone(photos, tools, monkeypatch):
    import osdhuman.iqa.crops as crops_mod

    crops = _crops(photos, tools)
    ms = [get_metric(n, backend="offline") for n in ("niqe", "brisque", "piqe", "laplacian_var")]
    assert [m.reads_planes for m in ms] == [True, True, True, False]
    calls = []
    real = crops_mod.planes_from_uint8
    monkeypatch.setattr(crops_mod, "planes_from_uint8", lambda c: calls.append(len(c)) or real(c))
    cols = score_crops(ms, crops, batch_size=2)
    assert calls == [2, 1]  # once per chunk, for all three plane readers
    x = tools.to_tensor(*crops)
    for m, col in zip(ms, cols):
        alone = m(x).numpy()
        assert col.shape == (3,) and np.isfinite(col).all()
        np.testing.assert_allclose(col, alone, rtol=0, atol=1e-9, err_msg=m.record.name)


def test_score_crops_turns_a_failing_metric_into_nan_and_rejects_float_input(photos, tools):
    crops = _crops(photos, tools)
    good = get_metric("piqe", backend="offline")

    class Broken:
        record = good.record
        reads_planes = True

        def score_planes(self, p):
            raise RuntimeError("boom")

    with pytest.warns(UserWarning, match="boom"):
        bad, ok = score_crops([Broken(), good], crops)
    assert np.isnan(bad).all() and np.isfinite(ok).all()
    with pytest.raises(ValueError, match="uint8"):
        score_crops([good], crops.astype(np.float32))
    assert torch.is_tensor(good.score_planes(planes.planes_from_uint8(crops[:1])))
