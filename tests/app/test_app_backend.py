"""The app's tabs without a browser: what each computes from real command outputs, and the
server's host / port checks."""

import socket
import warnings

import numpy as np
import pytest

from osdhuman.app import dataset_tab as ds
from osdhuman.app import results_tab as rs
from osdhuman.app.config import AppConfig
from osdhuman.app.server import AppStartError, check_port, is_loopback


def test_dataset_tab_filters_sorts_and_opens_in_source(demo_like):
    df = ds.load_manifest(demo_like["dataset"])
    assert set(df["status"]) == {"selected", "rejected"}
    sel = ds.filter_crops(df, ds.Filters(status="selected", sort_by="score", descending=True))
    assert len(sel) == df["selected"].sum() and list(sel["score"]) == sorted(sel["score"], reverse=True)
    val = ds.filter_crops(df, ds.Filters(split="val"))
    assert len(val) and (val["split"] == "val").all()
    lo = float(df["score"].median())
    ranged = ds.filter_crops(df, ds.Filters(metric="score", low=lo))
    assert len(ranged) and (ranged["score"] >= lo).all()
    items = ds.gallery(ds.filter_crops(df, ds.Filters()))
    assert len(items) == len(df) and items[0][0].shape == (192, 192, 3) and "score" in items[0][1]
    rejected = df[df["status"] == "rejected"].iloc[0]
    assert rejected["reject_reason"] in ds.caption(rejected)
    img, info = ds.in_source(rejected)
    assert img.shape == (160, 200, 3) and info["crop_id"] == rejected["crop_id"]
    with pytest.raises(ds.DatasetError, match="manifest.parquet"):
        ds.load_manifest(demo_like["eval"])


def test_results_tab_tables_and_side_by_side(demo_like):
    res = rs.load_results(demo_like["eval"])
    assert res["methods"] == ["blurred"] and {"psnr_y", "ssim_y"} <= set(res["metrics"])
    assert "PSNR" in res["table"]
    wide = rs.wide_table(res, "blurred psnr_y", descending=False)
    assert list(wide["blurred psnr_y"]) == sorted(wide["blurred psnr_y"])
    items = rs.side_by_side(res, wide["stem"].iloc[0])
    assert [c.split(":")[0] for _, c in items] == ["blurred", "HQ reference"]
    assert items[0][0].shape == items[1][0].shape
    with pytest.raises(rs.ResultsError, match="per_image.csv"):
        rs.load_results(demo_like["dataset"])


def test_restore_service_runs_the_tiny_preset_and_says_untrained(demo_like, tmp_path, monkeypatch):
    from osdhuman.app.restore_tab import TINY, RestoreService

    for name in ("OSDHUMAN_WEIGHTS", "OSDHUMAN_BASE_MODEL", "OSDHUMAN_HFIE_ENCODER"):
        monkeypatch.delenv(name, raising=False)
    svc = RestoreService(AppConfig(work_dir=str(tmp_path)))
    assert svc.models() == [TINY] and "UNTRAINED" in svc.banner()
    (view,), report = svc.run([str(demo_like["photo"])], TINY, "whole image", upscale=1.5, tile=128)
    assert view.after.shape == (240, 300, 3) and view.before.shape == view.after.shape
    assert report["untrained_model"] is True and view.output.endswith("p0.png")
    assert not np.array_equal(view.before, view.after)


def test_host_and_port_checks():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(AppStartError, match=f"port {port} on 127.0.0.1 is in use"):
            check_port("127.0.0.1", port)


def test_cli_port_in_use_is_one_line_exit_2(capsys):
    from osdhuman.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["app", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"port {port}" in err[0] and "--port" in err[0]


def test_non_loopback_host_warns(monkeypatch):
    from osdhuman.app import server

    monkeypatch.setattr(server, "check_port", lambda h, p: (_ for _ in ()).throw(AppStartError("stop here")))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(AppStartError):
            server.launch(AppConfig(host="0.0.0.0"))
    assert any("reachable from the network" in str(x.message) for x in w)
