"""pyiqa weight files are checked before use and nothing ever downloads (issue 12), with the
network forbidden: a connect() anywhere fails the test."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pyiqa")

from osdhuman.iqa import get_metric
from osdhuman.iqa.records import METRICS
from osdhuman.iqa.weights import MetricUnavailable, WeightFile, expected_sha256


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, *a))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "torch" / "hub"
    (d / "clip").mkdir(parents=True)
    (d / "pyiqa").mkdir()
    (d / "checkpoints").mkdir()
    return d


def test_a_half_downloaded_clip_file_is_reported_corrupt_and_never_fetched_again(hub, no_network):
    (hub / "clip" / "RN50.pt").write_bytes(b"\0" * 4096)  # e.g. a download cut short
    with pytest.raises(MetricUnavailable) as exc:
        get_metric("clipiqa", backend="pyiqa")
    msg = str(exc.value)
    assert f"corrupt: {hub / 'clip' / 'RN50.pt'}, expected sha256 afeb0e10f9e5a86d" in msg, msg


def test_a_hub_style_name_is_checked_against_its_hash_prefix(hub, no_network):
    assert expected_sha256(WeightFile("alexnet-owt-7be5be79.pth", "checkpoints")) == "7be5be79"
    (hub / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth").write_bytes(b"not the weights")
    (hub / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    with pytest.raises(MetricUnavailable) as exc:
        get_metric("lpips", backend="pyiqa")
    msg = str(exc.value)
    assert "corrupt: " in msg and "LPIPS_v0.1_alex-df73285e.pth, expected sha256 df73285e" in msg
    assert "alexnet-owt-7be5be79.pth, expected a weight file, found 0 bytes" in msg


def test_every_downloader_pyiqa_could_reach_is_pre_empted(hub, no_network):
    import pyiqa.archs.clip_model as clip_model
    import torch.hub

    from osdhuman.iqa.metric import _safe_pyiqa_loading

    url = next(u for u in clip_model._MODELS.values() if u.endswith("/RN50.pt"))
    with _safe_pyiqa_loading(METRICS["clipiqa"]):
        with pytest.raises(MetricUnavailable, match="RN50.pt, which is not on disk"):
            clip_model._download(url, str(hub / "clip"))
        with pytest.raises(MetricUnavailable, match="never downloads"):
            torch.hub.load_state_dict_from_url("https://example.invalid/x-12345678.pth")
        with pytest.raises(MetricUnavailable, match="never downloads"):
            torch.hub.download_url_to_file("https://example.invalid/x.pth", str(hub / "x.pth"))
    assert clip_model._download is not None and torch.hub.load_state_dict_from_url.__name__ == "load_state_dict_from_url"


def test_evaluate_marks_the_metric_na_names_the_file_and_runs_the_others(hub, no_network, tmp_path, capsys):
    from osdhuman.cli import main

    (hub / "clip" / "RN50.pt").write_bytes(b"\0" * 4096)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    rc = main(["evaluate", "--method", f"A={d}", "--reference", str(d), "-o", str(tmp_path / "ev"),
               "--metrics", "clipiqa,psnr_y", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "unavailable: clipiqa" in err and "corrupt: " in err and "RN50.pt" in err
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["A"]["psnr_y"] is not None and summary["A"].get("clipiqa") is None
