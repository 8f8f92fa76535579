"""The app's HTTP API as a client meets it (issue 19): a refused request returns its one-line reason,
not ``{"error": null}``, and leaves no traceback in the server's log; the advertised parameter types
are the ones the app takes; the Dataset and Results tabs read only the folders given at start, what
is under them, and the folder the app was started in."""

from __future__ import annotations

import socket

import pytest

from osdhuman.app.config import (
    AppConfig,
    FolderNotAllowed,
    allowed_folder,
    allowed_roots,
)

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(demo_like, tmp_path, monkeypatch):
    """The app serving on a free loopback port, started in tmp_path/start, with --dataset given."""
    from gradio_client import Client

    from osdhuman.app.server import launch

    for name in ("OSDHUMAN_WEIGHTS", "OSDHUMAN_BASE_MODEL", "OSDHUMAN_HFIE_ENCODER"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "start").mkdir()
    monkeypatch.chdir(tmp_path / "start")
    port = _free_port()
    demo = launch(AppConfig(port=port, dataset_dir=str(demo_like["dataset"]), work_dir=str(tmp_path / "work")),
                  block=False)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), demo_like
    finally:
        demo.close()


TINY = "tiny preset (UNTRAINED)"


def test_refused_requests_tell_the_client_why_and_log_no_traceback(served, capfd):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, demo_like = served
    photo = handle_file(str(demo_like["photo"]))  # uploaded by the client
    cases = [
        (([photo], TINY, "whole image", 1, "adain", 512, "fp64"), "fp64"),  # not a choice
        (([photo], TINY, "no such mode", 1, "adain", 512, "fp32"), "no such mode"),
        (([photo], TINY, "whole image", 1, "adain", "five hundred", "fp32"), "five hundred"),
        (([photo], "some other model", "whole image", 1, "adain", 512, "fp32"), "some other model"),
    ]
    for args, reason in cases:
        with pytest.raises(AppError) as exc:
            client.predict(*args, api_name="/do_run")
        assert reason in str(exc.value), str(exc.value)
        assert "verbose error reporting" not in str(exc.value)
    log = capfd.readouterr()
    assert "Traceback" not in log.err + log.out


def test_a_path_that_was_never_uploaded_is_refused_with_its_reason(served, tmp_path, capfd):
    """Sent as raw HTTP (gradio_client would upload it): Gradio refuses the path before the app
    runs; the client reads why instead of {"error": null}, the log has no traceback."""
    import httpx

    client, _ = served
    (tmp_path / "secret.png").write_bytes(b"not for the browser")
    url = f"{client.src.rstrip('/')}/gradio_api/call/do_run"
    data = [[{"path": str(tmp_path / "secret.png"), "meta": {"_type": "gradio.FileData"}}], TINY, "whole image", 1,
            "adain", 512, "fp32"]
    event = httpx.post(url, json={"data": data}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{url}/{event}", timeout=60).text
    assert "event: error" in stream and "secret.png" in stream and "not uploaded by a user" in stream, stream
    assert '"error": null' not in stream
    log = capfd.readouterr()
    assert "Traceback" not in log.err + log.out


def test_the_api_advertises_the_types_the_app_takes(served):
    client, _ = served
    params = {p["label"]: p for p in client.view_api(return_format="dict", print_info=False)
              ["named_endpoints"]["/do_run"]["parameters"]}
    assert params["Tile size (px)"]["python_type"]["type"] == "int"
    assert params["Upscale"]["python_type"]["type"] == "float"


def test_a_tile_size_the_pipeline_cannot_take_is_refused_in_one_line(served, capfd):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, demo_like = served
    with pytest.raises(AppError, match="tile size 100: a whole number of pixels, a multiple of 8"):
        client.predict([handle_file(str(demo_like["photo"]))], TINY, "whole image", 1, "adain", 100, "fp32",
                       api_name="/do_run")
    assert "Traceback" not in capfd.readouterr().err


def test_the_dataset_tab_reads_only_the_folders_it_was_given(served, tmp_path):
    client, demo_like = served
    args = ("all", "all", "all", "score", None, None, "score", True)
    ok = client.predict(str(demo_like["dataset"]), *args, api_name="/refresh")  # (gallery, summary, 4 updates)
    assert "crops in" in ok[1] and len(ok[0]) > 0, ok[1]
    for elsewhere in ("/etc", str(tmp_path), "../", str(demo_like["dataset"]) + "/../.."):
        refused = client.predict(elsewhere, *args, api_name="/refresh")
        assert "the app reads only the folders given at start" in refused[1], (elsewhere, refused[1])
        assert refused[0] == []


def test_allowed_folders_are_the_given_ones_their_children_and_the_start_folder(tmp_path, monkeypatch):
    (tmp_path / "start" / "sub").mkdir(parents=True)
    (tmp_path / "ds" / "inner").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "start" / "link").symlink_to(tmp_path / "other")
    monkeypatch.chdir(tmp_path / "start")
    roots = allowed_roots(AppConfig(dataset_dir=str(tmp_path / "ds")))
    assert allowed_folder(str(tmp_path / "ds" / "inner"), roots) == tmp_path / "ds" / "inner"
    assert allowed_folder("sub", roots) == tmp_path / "start" / "sub"
    for bad in (str(tmp_path / "other"), "..", "link", "/", str(tmp_path / "ds" / ".." / "other")):
        with pytest.raises(FolderNotAllowed):
            allowed_folder(bad, roots)
