"""``benchmarks/restore.py --people``: per-photo time of person-aware restoration split by
stage (detect, crops, people, background, blend) for a 1080p photo with 4 people, and the
crop + blend/paste overhead as a share of the restore time (target: under 5% at SD-2.1 size
on CPU). The photo is ultralytics' bus.jpg (four pedestrians, hand-measured boxes) widened
to 1920x1080 by reflection; without ultralytics, a textured synthetic photo with 4 boxes."""

from __future__ import annotations

import time

import cv2
import numpy as np

BUS_BOXES = [[50, 398, 245, 905], [222, 405, 345, 860], [668, 390, 810, 880], [0, 550, 78, 875]]


def photo_1080p() -> tuple[np.ndarray, np.ndarray, str]:
    """(1080, 1920, 3) uint8 photo, its 4 person boxes (4, 4), and where it came from."""
    try:
        from importlib.resources import files

        from osdhuman.imageio import read_rgb

        bus = read_rgb(str(files("ultralytics").joinpath("assets", "bus.jpg")))  # 810 x 1080
        left = (1920 - bus.shape[1]) // 2
        img = cv2.copyMakeBorder(bus, 0, 0, left, 1920 - bus.shape[1] - left, cv2.BORDER_REFLECT_101)
        return img, np.array(BUS_BOXES, float) + [left, 0, left, 0], "ultralytics bus.jpg widened to 1920x1080"
    except (ImportError, FileNotFoundError, OSError):
        rng = np.random.default_rng(0)
        img = cv2.GaussianBlur(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), (0, 0), 2)
        boxes = np.array([[200, 300, 450, 1000], [600, 250, 850, 950], [1100, 350, 1300, 900], [1500, 200, 1800, 1050]], float)
        return img, boxes, "synthetic 1920x1080"


def run_people(pipe, repeats: int = 1, detector=None) -> list[tuple[str, str]]:
    """Rows (stage, seconds) of the fastest of ``repeats`` runs, plus the overhead share."""
    from osdhuman.pipelines.people import PeopleConfig, restore_people

    img, boxes, what = photo_1080p()
    print(f"photo: {what}, {len(boxes)} people", flush=True)
    restore = lambda arrays: list(pipe(arrays, batch_size=len(arrays), output_type="np").images)
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        found = detector(img) if detector is not None else boxes
        t_detect = time.perf_counter() - t
        (res,) = restore_people([img], [boxes], restore, PeopleConfig(), batch_size=len(boxes))
        secs = {"detect": t_detect, **res.seconds}
        if best is None or sum(secs.values()) < sum(best.values()):
            best = secs
        print(f"  run: {sum(secs.values()):.2f} s (detector found {len(found)} boxes; the benchmark uses the 4 given)", flush=True)
    restore_s = best["people"] + best["background"]
    overhead = best["crops"] + best["blend"]
    rows = [(k, f"{best[k]:.3f}") for k in ("detect", "crops", "people", "background", "blend")]
    rows.append(("total", f"{sum(best.values()):.3f}"))
    rows.append(("crop + blend/paste overhead / restore time", f"{100 * overhead / restore_s:.2f}% (target < 5%)"))
    return rows
