"""IQA scoring wrapper: metric records, failures become NaN, graceful fallback, clear errors."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from osdhuman.cli import main
from osdhuman.curation.config import IQAConfig
from osdhuman.curation.scoring import ScoringUnavailable, _IQAMetric, load_metrics


class _FakeMetric:
    """Mean brightness; raises on batches containing an all-black image."""

    record = SimpleNamespace(name="bright", reference="nr", lower_better=False, backend="fake", settings={"k": 1})

    def __init__(self):
        self.calls = []

    def __call__(self, batch) -> np.ndarray:  # an osdhuman.iqa ImageBatch, as real metrics get
        x = batch.rgb()  # (B, H, W, 3) float32 in [0, 1]
        self.calls.append(x.shape)
        if (x.reshape(len(x), -1).max(1) == 0).any():
            raise RuntimeError("black image")
        return x.mean(axis=(1, 2, 3))


def test_wrapper_batches_converts_and_turns_failures_into_nan():
    fake = _FakeMetric()
    m = _IQAMetric(fake, batch_size=2)
    crops = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (255, 51, 0, 102, 204)])  # (5, 8, 8, 3)
    scores = m(crops)
    assert fake.calls == [(2, 8, 8, 3), (2, 8, 8, 3), (1, 8, 8, 3)]
    np.testing.assert_allclose(scores[[0, 1, 4]], [1.0, 0.2, 0.8], rtol=1e-6)
    assert np.isnan(scores[2]) and np.isnan(scores[3])  # the failing batch
    assert m.info.name == "bright" and m.info.backend == "fake" and m.info.lower_better is False


def test_missing_iqa_package_degrades_to_laplacian(monkeypatch):
    monkeypatch.setitem(sys.modules, "osdhuman.iqa", None)  # import osdhuman.iqa -> ImportError
    with pytest.warns(UserWarning, match="laplacian_var only"):
        (m,) = load_metrics(IQAConfig(metrics=["niqe", "brisque"]))
    assert m.info.name == "laplacian_var" and not m.info.lower_better
    sharp = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    flat = np.full((1, 32, 32, 3), 90, np.uint8)
    s = m(np.concatenate([sharp, flat]))
    assert s[0] > 1000 and s[1] == 0


def test_unknown_metric_is_a_clear_error_before_work(tmp_path, capsys):
    pytest.importorskip("osdhuman.iqa")
    with pytest.raises(ScoringUnavailable, match="no_such_metric"):
        load_metrics(IQAConfig(metrics=["no_such_metric"]))
    folder = tmp_path / "photos"
    folder.mkdir()
    rc = main(["build-dataset", "--source", f"folder:{folder}", "--out", str(tmp_path / "out"),
               "--metrics", "no_such_metric"])
    assert rc == 2 and "no_such_metric" in capsys.readouterr().err
