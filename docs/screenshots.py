"""Screenshots of the app's three tabs for the README (docs/app_*.jpg, 960 px wide), on `make demo`'s
output: the dataset, the evaluation, and a person-aware restore of the bus photo with the
UNTRAINED tiny preset. Needs playwright (pip) and Debian's chromium (apt-get).

    python docs/screenshots.py --demo demo_out
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
from pathlib import Path


def _save(page, path: Path) -> None:
    """Full-page screenshot, scaled to 960 px wide JPEG (small enough for the repository)."""
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    im.resize((960, round(im.height * 960 / im.width)), Image.LANCZOS).save(path, quality=80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="demo_out", help="a `make demo` output folder")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from osdhuman.app.config import AppConfig
    from osdhuman.app.server import launch

    demo = Path(args.demo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = launch(AppConfig(port=port, dataset_dir=str(demo / "dataset"), results_dir=str(demo / "eval")), block=False)
    out = Path(args.out)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
        page.locator("#restore-upload input[type=file]").set_input_files(str(demo / "photos" / "coco" / "bus.png"))
        page.get_by_text("bus.png").first.wait_for(timeout=30_000)
        page.locator("#restore-run").click()
        page.locator("#restore-status").get_by_text("Restored").wait_for(timeout=300_000)
        page.wait_for_timeout(1000)
        _save(page, out / "app_restore.jpg")
        page.get_by_role("tab", name="Dataset").click()
        page.locator("#dataset-grid img").first.wait_for(timeout=30_000)
        page.locator("#dataset-grid img").first.click()
        page.locator("#dataset-source img").wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        _save(page, out / "app_dataset.jpg")
        page.get_by_role("tab", name="Results").click()
        page.locator("#results-images img").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        _save(page, out / "app_results.jpg")
        browser.close()
    app.close()
    print(f"screenshots in {out}: app_restore.jpg, app_dataset.jpg, app_results.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
