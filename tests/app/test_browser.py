"""The app end to end in a real browser: Playwright driving Debian's chromium (installed by
.ci/run; no browser is downloaded). Every request that is not to the app's loopback address
is blocked and recorded: the page must work offline and attempt none."""

import os
import shutil
import socket
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(demo_like, tmp_path_factory):
    from osdhuman.app.config import AppConfig
    from osdhuman.app.server import launch

    for name in ("OSDHUMAN_WEIGHTS", "OSDHUMAN_BASE_MODEL", "OSDHUMAN_HFIE_ENCODER"):
        os.environ.pop(name, None)
    cfg = AppConfig(port=_free_port(), dataset_dir=str(demo_like["dataset"]), results_dir=str(demo_like["eval"]),
                    work_dir=str(tmp_path_factory.mktemp("appwork")))
    demo = launch(cfg, block=False)
    yield f"http://127.0.0.1:{cfg.port}/"
    demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    foreign: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 1000})

        def gate(route):
            host = urlparse(route.request.url).hostname
            if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
                route.continue_()
            else:
                foreign.append(route.request.url)
                route.abort()

        ctx.route("**/*", gate)
        pg = ctx.new_page()
        pg.foreign = foreign
        pg.goto(app_url, wait_until="load")
        pg.locator("#restore-banner").wait_for(timeout=30_000)
        yield pg
        browser.close()


def test_restore_tab_upload_shows_restored_image(page, demo_like, tmp_path):
    assert "UNTRAINED" in page.locator("#restore-banner").inner_text()
    page.locator("#restore-upload input[type=file]").set_input_files(str(demo_like["photo"]))
    page.get_by_text("p0.png").first.wait_for(timeout=20_000)
    page.locator("#restore-run").click()
    page.locator("#restore-status").get_by_text("Restored 1 of 1").wait_for(timeout=60_000)
    assert page.locator("#restore-slider img").count() >= 1
    assert "UNTRAINED" in page.locator("#restore-status").inner_text()
    page.screenshot(path=str(tmp_path / "restore.png"), full_page=True)
    assert page.foreign == []


def test_dataset_tab_grid_and_open_in_source(page, demo_like):
    import pandas as pd

    n = len(pd.read_parquet(demo_like["dataset"] / "manifest.parquet"))
    page.get_by_role("tab", name="Dataset").click()
    grid = page.locator("#dataset-grid img")
    grid.first.wait_for(timeout=20_000)
    assert grid.count() == n
    assert f"{n} crops" in page.locator("#dataset-summary").inner_text()
    grid.first.click()
    page.locator("#dataset-source img").wait_for(timeout=20_000)
    assert page.foreign == []


def test_results_tab_shows_the_table(page):
    page.get_by_role("tab", name="Results").click()
    table = page.locator("#results-table")
    table.get_by_text("PSNR").first.wait_for(timeout=20_000)
    assert "blurred" in table.inner_text()
    page.locator("#results-images img").first.wait_for(timeout=20_000)
    assert page.foreign == []


def test_the_offline_gate_really_blocks(page):
    """The check above means something: a request to a font CDN is seen and refused."""
    page.evaluate("fetch('https://fonts.googleapis.com/css?family=Roboto').catch(() => null)")
    page.wait_for_timeout(500)
    assert any("fonts.googleapis.com" in u for u in page.foreign)
