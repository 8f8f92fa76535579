"""`make demo`: a small PERSONA-style dataset from real photos of people that ship inside
installed packages, built by `osdhuman build-dataset` (no network, no browser).

Steps:
  1. collect_photos      copy the packaged photos (skip any whose package is missing), add a
                         mirrored copy, a heavily JPEG-compressed copy and a blurred copy of each
  2. write_annotations   COCO json with hand-measured person boxes for the annotated photos
  3. build_dataset       osdhuman build-dataset: coco: source + folder: source (OpenCV detector)
  4. show_report         print where report.html is
  5. degrade_val         osdhuman degrade: synthetic LQ for the val crops (PERSONA-Val style)
  6. restore_lq          OSDHuman restore with real weights (OSDHUMAN_WEIGHTS ...), else skipped
  7. evaluate            osdhuman evaluate (Table 2 layout) and dataset-quality (Table 1 layout)
  8. restore_people      osdhuman restore --people on the four-person bus photo with the tiny
                         preset (UNTRAINED: shows the person-aware path, not a restoration)
  9. show_app            how to start the web app on these outputs

    python demo/run.py --out demo_out [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Hand-measured person boxes (x0, y0, x1, y1) on the photos as shipped.
ANNOTATED = {
    # ultralytics/assets/bus.jpg (810x1080): four pedestrians
    "bus": [[50, 398, 245, 905], [222, 405, 345, 860], [668, 390, 810, 880], [0, 550, 78, 875]],
    # ultralytics/assets/zidane.jpg (1280x720): Zidane (arm outstretched) and Ancelotti
    "zidane": [[120, 200, 1150, 720], [750, 40, 1140, 720]],
    # skimage.data.camera() (512x512): the cameraman
    "camera": [[0, 65, 335, 512]],
}


@dataclass
class Demo:
    out: Path
    workers: int
    photos: dict = field(default_factory=dict)  # name -> (RGB uint8 array, "coco" | "folder")
    coco_json: Path | None = None
    dataset: Path | None = None  # OUT of build-dataset (manifest.parquet, images/<split>/)
    report: Path | None = None
    hq: Path | None = None  # HQ crops that were degraded (images/val)
    lq: Path | None = None  # their synthetic LQ (osdhuman degrade)
    restored: Path | None = None  # OSDHuman output, when real weights are configured


def _ultralytics_asset(name: str):
    from importlib.resources import files

    return files("ultralytics").joinpath("assets", name)


def _read(path) -> np.ndarray:
    from osdhuman.imageio import read_rgb

    return read_rgb(path)


def _loaders():
    """name -> (loader, kind); each loader may raise ImportError / FileNotFoundError."""

    def ultra(name):
        return lambda: _read(str(_ultralytics_asset(f"{name}.jpg")))

    def skimage_img(fn):
        def load():
            import skimage.data

            img = getattr(skimage.data, fn)()
            return np.ascontiguousarray(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3])
        return load

    def grace():
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False) as p:  # type: ignore[attr-defined]
            return _read(p)

    def grace_path():
        import matplotlib

        return _read(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")

    def pyiqa_face():
        import importlib.util

        spec = importlib.util.find_spec("ResultsCalibra")  # ships with pyiqa
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("pyiqa's ResultsCalibra not installed")
        return _read(Path(next(iter(spec.submodule_search_locations))) / "ref_dir" / "I04.bmp")

    def grace_any():
        try:
            return grace_path()
        except Exception:  # noqa: BLE001 - matplotlib's sample data missing or moved: draw the stand-in
            return grace()

    return {
        "bus": (ultra("bus"), "coco"),
        "zidane": (ultra("zidane"), "coco"),
        "camera": (skimage_img("camera"), "coco"),
        "astronaut": (skimage_img("astronaut"), "folder"),
        "grace_hopper": (grace_any, "folder"),
        "pyiqa_I04": (pyiqa_face, "folder"),
    }


# ---- steps --------------------------------------------------------------------------------
def collect_photos(d: Demo) -> None:
    for name, (load, kind) in _loaders().items():
        try:
            rgb = load()
        except (ImportError, FileNotFoundError, OSError, AttributeError) as exc:
            print(f"demo: skipping {name} ({type(exc).__name__}: {exc})")
            continue
        d.photos[name] = (rgb, kind)
    if sum(1 for _, k in d.photos.values() if k == "coco") < 1 or len(d.photos) < 3:
        raise SystemExit("demo: too few sample photos are installed (need ultralytics or scikit-image and matplotlib)")
    root = d.out / "photos"
    if root.exists():
        shutil.rmtree(root)
    for name, (rgb, kind) in d.photos.items():
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{name}.png"), bgr)
        cv2.imwrite(str(folder / f"{name}_mirror.png"), bgr[:, ::-1])
        cv2.imwrite(str(folder / f"{name}_jpeg_q8.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 8])
        cv2.imwrite(str(folder / f"{name}_blurred.png"), cv2.GaussianBlur(bgr, (0, 0), 4))
    print(f"demo: {len(d.photos)} photos ({', '.join(d.photos)}) x 4 variants -> {root}")


def write_annotations(d: Demo) -> None:
    images, anns = [], []
    for name, (rgb, kind) in d.photos.items():
        if kind != "coco":
            continue
        h, w = rgb.shape[:2]
        for variant in ("", "_mirror", "_jpeg_q8", "_blurred"):
            img_id = len(images) + 1
            images.append({"id": img_id, "file_name": f"{name}{variant}.{'jpg' if 'jpeg' in variant else 'png'}",
                           "width": w, "height": h})
            for x0, y0, x1, y1 in ANNOTATED[name]:
                if variant == "_mirror":
                    x0, x1 = w - x1, w - x0
                anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 1, "iscrowd": 0,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    d.coco_json = d.out / "photos" / "persons_coco.json"
    d.coco_json.write_text(json.dumps({"images": images, "annotations": anns,
                                       "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bus"}]}))
    print(f"demo: COCO annotations for {len(images)} images, {len(anns)} person boxes -> {d.coco_json}")


def build_dataset(d: Demo) -> None:
    from osdhuman.cli import main

    argv = ["build-dataset", "--out", str(d.out / "dataset"),
            "--source", f"photos=coco:{d.coco_json}:{d.out / 'photos' / 'coco'}",
            "--workers", str(d.workers), "--val-fraction", "0.25", "--set", "exec.shard_size=4"]
    if (d.out / "photos" / "folder").is_dir():
        argv += ["--source", f"unlabelled=folder:{d.out / 'photos' / 'folder'}"]
    print("demo: osdhuman " + " ".join(argv))
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"demo: build-dataset exited with {rc}")
    d.dataset = d.out / "dataset"
    d.report = d.dataset / "report.html"


def show_report(d: Demo) -> None:
    print(f"demo: dataset in {d.dataset}; open {d.report.resolve()} in a browser to see the report")


def degrade_val(d: Demo) -> None:
    """PERSONA-Val style: synthetic LQ for the selected val crops (train crops if val is empty)."""
    from osdhuman.cli import main

    images = d.dataset / "images"
    d.hq = next((images / s for s in ("val", "train") if any((images / s).glob("*.png"))), None)
    if d.hq is None:
        raise SystemExit("demo: build-dataset selected no crops; nothing to degrade")
    d.lq = d.out / f"{d.hq.name}_lq"
    argv = ["degrade", str(d.hq), "-o", str(d.lq), "--seed", "0"]
    print("demo: osdhuman " + " ".join(argv))
    if main(argv) != 0:
        raise SystemExit("demo: degrade failed")


def restore_lq(d: Demo) -> None:
    """Restore the LQ set when real weights are configured (OSDHUMAN_WEIGHTS, ...), else say how."""
    from osdhuman.cli.weights_env import demo_restore

    out = d.out / f"{d.hq.name}_restored"
    if demo_restore([d.lq], out) == 0 and out.is_dir() and any(out.glob("*.png")):
        d.restored = out


def evaluate(d: Demo) -> None:
    """Paper Table 2 layout (offline metrics) and Table 1 layout for the demo dataset."""
    from osdhuman.cli import main

    methods = ["--method", f"LQ (degraded)={d.lq}"]
    if d.restored is not None:
        methods += ["--method", f"OSDHuman={d.restored}"]
    argv = ["evaluate", *methods, "--reference", str(d.hq), "--metrics", "offline",
            "--title", f"demo {d.hq.name}", "-o", str(d.out / "eval"), "--no-progress"]
    print("demo: osdhuman " + " ".join(argv))
    if main(argv) != 0:
        raise SystemExit("demo: evaluate failed")
    argv = ["dataset-quality", "--dataset", f"PERSONA-demo={d.dataset / 'images'}",
            "--dataset", f"source photos={d.out / 'photos'}", "--metrics", "offline",
            "-o", str(d.out / "dataset_quality")]
    print("demo: osdhuman " + " ".join(argv))
    if main(argv) != 0:
        raise SystemExit("demo: dataset-quality failed")


def restore_people(d: Demo) -> None:
    """Person-aware restore of the bundled multi-person photo (hand-measured boxes), tiny preset."""
    from osdhuman.cli import main

    src = d.out / "photos" / "coco" / "bus.png"
    if not src.is_file():
        print("demo: bus.png not installed (ultralytics); person-aware restore skipped")
        return
    # half size and 256 px person crops keep the toy model's CPU time to seconds
    photo = d.out / "photos" / "bus_half.png"
    bgr = cv2.imread(str(src))
    cv2.imwrite(str(photo), cv2.resize(bgr, (bgr.shape[1] // 2, bgr.shape[0] // 2), interpolation=cv2.INTER_AREA))
    boxes = d.out / "photos" / "bus_half_boxes.json"
    boxes.write_text(json.dumps({
        "images": [{"id": 1, "file_name": photo.name}], "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [x0 / 2, y0 / 2, (x1 - x0) / 2, (y1 - y0) / 2]}
                        for x0, y0, x1, y1 in ANNOTATED["bus"]]}))
    out = d.out / "people_restore"
    argv = ["restore", str(photo), "-o", str(out), "--people", "--boxes", str(boxes), "--save-crops",
            "--base-model", "tiny", "--tile", "256", "--set", "person.crop_size=256", "--no-progress"]
    print("demo: osdhuman " + " ".join(argv) + "   [tiny preset: UNTRAINED, shows the person-aware path only]")
    if main(argv) != 0:
        raise SystemExit("demo: person-aware restore failed")
    print(f"demo: {out / photo.name} and the contact sheet {out / 'crops' / 'bus_half_people.png'} "
          "come from an UNTRAINED toy model: not restorations")


def show_app(d: Demo) -> None:
    print(f"demo: browse it all in the web app: osdhuman app --dataset {d.dataset} --results {d.out / 'eval'}"
          "  (then open http://127.0.0.1:7860)")


STEPS = [collect_photos, write_annotations, build_dataset, show_report, degrade_val, restore_lq, evaluate,
         restore_people, show_app]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out", help="output directory (default demo_out/)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    d = Demo(out=Path(args.out), workers=args.workers)
    d.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for step in STEPS:
        step(d)
    print(f"demo: done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
