"""HQ-ACF throughput on this machine, one core per process:

  * source images / s for everything before IQA scoring (decode, Laplacian blur filter, box
    filters, square crops, centre NMS, 512 resize of the surviving crops), on 640x480 JPEGs
    with 1-4 annotated people, beside a naive reference (Pillow decode + EXIF transpose +
    float64 Laplacian + two Pillow-Lanczos crops) and the ratio; target >= 120 / s / core;
  * the folder: person detector (OpenCV HOG + Haar) on its own, images / s;
  * IQA scoring, crops / s per metric and backend (512x512 crops);
  * ``--dedup N``: duplicate grouping of N random 64-bit perceptual hashes (and N mirror
    hashes) with planted near-duplicates: time, peak traced memory, planted pairs found,
    beside the brute-force O(N^2) popcount reference timed on a sample in the same run and
    the cost of the imagehash hashes per decoded 640x480 image.

    python benchmarks/curation.py [--images 200] [--no-iqa]
    python benchmarks/curation.py --dedup 4000000 [--max-hamming 4]
    python benchmarks/curation.py --scale 1000000 --dry-run
    python benchmarks/curation.py --scale 1000000 --rerun [--workers 2]
    python benchmarks/curation.py --end-to-end 200 [--against REV]

``--scale N --dry-run``: planning of a synthetic COCO-format file of N images with ~7 person
boxes each (the names the layout check samples point at a few real photos), through
``osdhuman build-dataset --dry-run`` in a fresh process: wall time and peak memory (max RSS),
beside the previous approach (``json.loads`` of the whole file) measured on the same file in
its own fresh process. ``--scale N --rerun``: a full build of that file, then the same command
again in a fresh process (everything done: the records and finished shards are reused), its
time beside the first build's (target: under 2 minutes for 1 M images).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

TARGET = 120.0


def _base_photos() -> list[np.ndarray]:
    """Real photos from installed packages when present (JPEG decode speed depends on content)."""
    photos = []
    try:
        import skimage.data as d

        photos += [d.astronaut(), np.stack([d.camera()] * 3, -1), d.coffee(), d.chelsea()]
    except ImportError:
        pass
    try:
        from importlib.resources import files

        for n in ("bus.jpg", "zidane.jpg"):
            photos.append(np.asarray(Image.open(str(files("ultralytics").joinpath("assets", n))).convert("RGB")))
    except (ImportError, FileNotFoundError, ModuleNotFoundError):
        pass
    if not photos:  # smooth random texture
        rng = np.random.default_rng(0)
        photos = [cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 1.2)]
    return photos


def _distinct_view(base: np.ndarray, rng) -> np.ndarray:
    """A random window (55-90 % of each side) of ``base`` at 640x480, its brightness shifted:
    views of one photo that duplicate control does not group (their perceptual hashes differ)."""
    h, w = base.shape[:2]
    f = rng.uniform(0.55, 0.9)
    ch, cw = int(h * f), int(min(w, h * f * 4 / 3))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    view = cv2.resize(base[y:y + ch, x:x + cw], (640, 480), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.clip(view + int(rng.integers(-20, 21)), 0, 255).astype(np.uint8)


def make_inputs(root: Path, n: int, distinct: bool = False):
    """n 640x480 JPEGs of the base photos with 1-4 person boxes each; ``distinct``: each a
    different view (no duplicates), else the photos resized, every other one mirrored."""
    from osdhuman.curation.sources import SourceImage

    rng = np.random.default_rng(0)
    photos = _base_photos()
    items = []
    for i in range(n):
        base = photos[i % len(photos)]
        if distinct:
            img = _distinct_view(base, rng)
        else:
            img = cv2.resize(base, (640, 480), interpolation=cv2.INTER_AREA)
        if i % 2:
            img = img[:, ::-1]
        path = root / f"{i:05d}.jpg"
        Image.fromarray(np.ascontiguousarray(img)).save(path, quality=90)
        boxes = []
        for _ in range(int(rng.integers(1, 5))):  # up to 4 people
            h = float(rng.uniform(260, 470))
            w = float(rng.uniform(0.3, 0.6) * h)
            x0 = float(rng.uniform(0, 640 - w))
            y0 = float(rng.uniform(0, 480 - h))
            boxes.append([x0, y0, x0 + w, y0 + h])
        items.append(SourceImage("bench", path.name, str(path), boxes, (640, 480)))
    return items


def naive(items) -> None:
    """The reference: what a straightforward script does."""
    for it in items:
        with Image.open(it.path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            rgb = np.asarray(im)
            gray = np.asarray(im.convert("L"))
        cv2.Laplacian(gray, cv2.CV_64F).var()
        for b in it.boxes[:2]:
            s = int(max(b[2] - b[0], b[3] - b[1]))
            x0 = int(min(max(0, (b[0] + b[2]) / 2 - s / 2), 640 - min(s, 640)))
            y0 = int(min(max(0, (b[1] + b[3]) / 2 - s / 2), 480 - min(s, 480)))
            Image.fromarray(rgb[y0:y0 + s, x0:x0 + s]).resize((512, 512), Image.LANCZOS)


def ours(items, cfg) -> tuple[int, int]:
    from osdhuman.curation.shard import prepare_image

    crops = rejects = 0
    for it in items:
        p = prepare_image(it, cfg)
        crops += len(p.crops)
        rejects += len(p.rejects)
    return crops, rejects


def rate(fn, n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def interleaved_rates(fns: dict, n: int, repeat: int = 5) -> dict:
    """Best-of-``repeat`` rate of each function, runs interleaved so that load changes on a
    shared machine hit all of them alike."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return {k: n / v for k, v in best.items()}


def bench_dedup(n: int, max_hamming: int, planted: int = 1000) -> None:
    """Grouping of ``n`` random hashes + mirrors with ``planted`` near-duplicate pairs."""
    import tracemalloc

    from osdhuman.curation import dedup

    rng = np.random.default_rng(0)
    ph = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64)
    mi = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64)
    src = rng.choice(n // 2, planted, replace=False)
    dst = n // 2 + rng.choice(n // 2, planted, replace=False)
    for a, b in zip(src, dst):  # b = a with 1..max_hamming random bits flipped
        bits = rng.choice(64, int(rng.integers(1, max(1, max_hamming) + 1)), replace=False)
        ph[b] = ph[a] ^ np.array(sum(1 << int(k) for k in bits), dtype=np.uint64).view(np.int64)
    tracemalloc.start()
    t = time.perf_counter()
    labels = dedup.duplicate_groups(ph, mi, None, max_hamming)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    found = int((labels[src] == labels[dst]).sum())
    sample = min(n, 20000)
    hs = np.concatenate([ph[:sample], mi[:sample]]).astype(np.uint64)
    t = time.perf_counter()
    for i in range(0, len(hs), 2048):  # brute force: every hash against every hash
        _ = np.bitwise_count(hs[i:i + 2048, None] ^ hs[None, :]) <= max_hamming
    brute_sample = time.perf_counter() - t
    t = time.perf_counter()
    dedup.duplicate_groups(ph[:sample], mi[:sample], None, max_hamming)
    ours_sample = time.perf_counter() - t
    brute_full = brute_sample * (n / sample) ** 2
    print(f"duplicate groups, {n} images (phash + mirror hash each), max Hamming {max_hamming}, 1 core:")
    print(f"  ours       {dt:9.1f} s   peak traced memory {peak / 2**20:8.0f} MiB   planted pairs found {found}/{planted}")
    print(f"  brute force{brute_full:9.1f} s   (measured {brute_sample:.2f} s on {sample}, scaled by (N/{sample})^2)")
    print(f"  ratio      {brute_full / dt:9.1f}x   (at {sample}: ours {ours_sample:.2f} s, brute {brute_sample:.2f} s)")
    from osdhuman.curation.stages import gray, laplacian_variance

    img = cv2.resize(_base_photos()[0], (640, 480), interpolation=cv2.INTER_AREA)
    luma = gray(img)
    r = interleaved_rates({"hash": lambda: [dedup.perceptual_hashes(luma) for _ in range(50)],
                           "content": lambda: [dedup.content_hash(img) for _ in range(50)],
                           "blur": lambda: [laplacian_variance(gray(img)) for _ in range(50)]}, 50)
    print(f"  per 640x480 image: imagehash phash + mirror {1e3 / r['hash']:.2f} ms, content hash "
          f"{1e3 / r['content']:.2f} ms, beside the blur filter it shares the decode with {1e3 / r['blur']:.2f} ms")


def write_synthetic_coco(root: Path, n: int, boxes_per_image: int = 7) -> tuple[Path, Path]:
    """COCO json of n images (streamed to disk, never held whole) + an image folder."""
    import json

    rng = np.random.default_rng(0)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann = root / "synthetic_coco.json"
    with open(ann, "w") as fh:
        fh.write('{"categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}], "images": [')
        for i in range(n):
            fh.write(("," if i else "") + json.dumps({"id": i, "file_name": f"{i:08d}.jpg", "width": 640, "height": 480}))
        fh.write('], "annotations": [')
        k = 0
        for i in range(n):
            for _ in range(int(rng.integers(boxes_per_image - 3, boxes_per_image + 4))):
                x, y = rng.uniform(0, 400), rng.uniform(0, 200)
                fh.write(("," if k else "") + json.dumps({"id": k, "image_id": i, "category_id": 1 if k % 8 else 2,
                                                          "bbox": [round(x, 2), round(y, 2), 120.5, 260.25], "iscrowd": 0,
                                                          "area": 31000.0}))
                k += 1
        fh.write("]}")
    photos = _base_photos()
    step = max(1, n // 64)  # the images the layout check samples (every step-th key) are real photos
    for j, i in enumerate(list(range(0, n, step))[:64]):
        Image.fromarray(cv2.resize(photos[j % len(photos)], (640, 480))).save(img_dir / f"{i:08d}.jpg", quality=90)
    return ann, img_dir


LAST_CPU = {"s": 0.0}  # CPU seconds (user + sys) of the last _measure'd process and its children


def _measure(code: str) -> tuple[float, float, str, float]:
    """(seconds, peak RSS MiB, stdout, peak RSS MiB of its largest child) of python -c code in
    a fresh process (the child reports its own VmHWM and its children's max RSS last). Its CPU
    time goes to ``LAST_CPU`` (wall time on a shared machine says little)."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)

    # VmHWM of the child's own address space (ru_maxrss would include the parent's at fork)
    code += ("\nimport resource; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
             "\nprint(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU["s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    *lines, kids, peak = r.stdout.strip().splitlines()
    return dt, int(peak) / 1024, " ".join(lines), int(kids) / 1024


def _build_code(ann: Path, img_dir: Path, out: Path, *extra: str) -> str:
    argv = ["build-dataset", "--source", f"coco:{ann}:{img_dir}", "--out", str(out), *extra]
    return f"from osdhuman.cli import main; rc = main({argv!r}); assert rc == 0"


def bench_scale(n: int) -> None:
    """``--scale N --dry-run``: planning memory and time."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ann, img_dir = write_synthetic_coco(Path(tmp), n)
        size = ann.stat().st_size / 2**20
        print(f"planning (build-dataset --dry-run) of a synthetic COCO file: {n} images, {size:.0f} MiB "
              f"(written in {time.perf_counter() - t:.0f} s), 1 core:")
        ref_code = f"import json; d = json.load(open({str(ann)!r})); print(len(d['images']), len(d['annotations']))"
        dt, peak, outp, kids = _measure(_build_code(ann, img_dir, Path(tmp) / "out", "--dry-run"))
        cpu = LAST_CPU["s"]
        print(f"  ours       {dt:8.1f} s   {cpu:8.1f} CPU s   peak RSS {peak:8.0f} MiB   (largest child {kids:.0f} MiB; "
              f"{outp.split(': ', 2)[-1]})")
        dt_r, peak_r, _, _ = _measure(ref_code)
        print(f"  json.load  {dt_r:8.1f} s   {LAST_CPU['s']:8.1f} CPU s   peak RSS {peak_r:8.0f} MiB   (the previous "
              "parser's first step: the whole file as Python objects)")
        print(f"  memory ratio {peak_r / peak:5.2f}x less; time ratio {dt_r / dt:5.2f}x")


def bench_rerun(n: int, workers: int) -> None:
    """``--scale N --rerun``: a full build of the synthetic file (its few real photos are scored,
    the other names are missing files: read rejects), then the same command again (everything
    done), each in a fresh process; the rerun beside the first build, and with
    ``exec.verify_inputs=false`` (no stat of the input files)."""
    with tempfile.TemporaryDirectory() as tmp:
        ann, img_dir = write_synthetic_coco(Path(tmp), n)
        out = Path(tmp) / "out"
        extra = ["--no-progress", "--workers", str(workers), "--metrics", "laplacian"]
        first = _measure(_build_code(ann, img_dir, out, *extra))
        again = _measure(_build_code(ann, img_dir, out, *extra))
        again_cpu = LAST_CPU["s"]
        trust = _measure(_build_code(ann, img_dir, out, *extra, "--set", "exec.verify_inputs=false"))
        files = sum(1 for _ in (out / ".work").rglob("*.parquet"))
        print(f"rerun of a finished build-dataset, synthetic COCO file of {n} images ({workers} workers; "
              f"{files} parquet files under .work/):")
        print(f"  first build        {first[0]:8.1f} s   peak RSS {first[1]:6.0f} MiB   ({first[2].split(' report:')[0]})")
        print(f"  rerun              {again[0]:8.1f} s   peak RSS {again[1]:6.0f} MiB   (records reused, every input "
              f"file stat'ed; {again_cpu:.0f} CPU s)   target < 120 s: {'met' if again[0] < 120 else 'NOT met'}")
        print(f"  rerun, no verify   {trust[0]:8.1f} s   peak RSS {trust[1]:6.0f} MiB   (exec.verify_inputs=false)")
        print(f"  ratio first/rerun  {first[0] / again[0]:8.1f}x")


def _coco_inputs(root: Path, n: int):
    """n distinct 640x480 JPEGs with 1-4 people and their COCO file -> (items, config)."""
    import json

    from osdhuman.config import apply_overrides
    from osdhuman.curation import CurationConfig

    items = make_inputs(root, n, distinct=True)
    images = [{"id": i, "file_name": Path(it.path).name, "width": 640, "height": 480} for i, it in enumerate(items)]
    anns = [{"id": len(images) * 10 + k, "image_id": i, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            for i, it in enumerate(items) for k, b in enumerate(it.boxes)]
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    cfg = apply_overrides(CurationConfig(sources=[f"coco:{ann}:{root}"]), ["exec.workers=1", "iqa.backend=offline"])
    return items, cfg


def _timed_build(cfg, out: Path) -> dict:
    """One build_dataset: total seconds, seconds in write_report (a fixed cost: histograms and
    a capped number of thumbnails), crops scored."""
    from osdhuman.curation import build_dataset, report

    real, spent = report.write_report, []

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            spent.append(time.perf_counter() - t0)

    report.write_report = timed
    try:
        t = time.perf_counter()
        res = build_dataset(cfg, out, progress=False)
        total = time.perf_counter() - t
    finally:
        report.write_report = real
    return {"total": total, "report": sum(spent), "scored": int(res.n_scored)}


_E2E_CHILD = """
import json, sys, time, tempfile
from pathlib import Path
import cv2, torch
cv2.setNumThreads(1); torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
import curation as B
with tempfile.TemporaryDirectory() as tmp:
    items, cfg = B._coco_inputs(Path(tmp), {n})
    B._timed_build(cfg, Path(tmp) / "warm")
    print(json.dumps(B._timed_build(cfg, Path(tmp) / "out")))
"""


def _fresh_build(src: Path, n: int) -> dict:
    """The same build in a fresh process importing the implementation in ``src``."""
    import json
    import subprocess

    code = _E2E_CHILD.format(bench=str(Path(__file__).parent), n=n)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def _export_rev(rev: str, dest: Path) -> Path:
    """``git archive`` of ``src/`` at ``rev`` into dest -> the src folder to import from."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    data = subprocess.run(["git", "-C", str(repo), "archive", rev, "src"], capture_output=True, check=True).stdout
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(dest, filter="data")
    return dest / "src"


def _stage_breakdown(items, cfg) -> dict:
    """ms per source image / per crop of the parts of a shard, measured on their own."""
    from osdhuman.curation.scoring import load_metrics
    from osdhuman.curation.shard import prepare_image
    from osdhuman.curation.stages import resize_square
    from osdhuman.iqa.crops import score_crops

    t = time.perf_counter()
    prepared = [prepare_image(it, cfg) for it in items]
    t_prep = time.perf_counter() - t
    crops = np.stack([c for p in prepared for c in p.crops])
    metrics = [m.metric for m in load_metrics(cfg.iqa)]
    score_crops(metrics, crops[:1])
    t = time.perf_counter()
    score_crops(metrics, crops, cfg.iqa.batch_size)
    t_iqa = time.perf_counter() - t
    side = 400  # a typical person crop upscaled to 512 (the selected crops are rendered again)
    src = np.ascontiguousarray(crops[0][:side, :side])
    t = time.perf_counter()
    for _ in range(20):
        resize_square(src, cfg.crop)
    t_resize = (time.perf_counter() - t) / 20
    from osdhuman.outputs import encode_png  # as the runner writes them

    t = time.perf_counter()
    for k in range(min(20, len(crops))):
        encode_png(crops[k], cfg.exec.png_compression)
    t_png = (time.perf_counter() - t) / min(20, len(crops))
    return {"prepare_ms_per_image": 1e3 * t_prep / len(items), "iqa_ms_per_crop": 1e3 * t_iqa / len(crops),
            "crops_per_image": len(crops) / len(items), "resize_ms": 1e3 * t_resize, "png_ms": 1e3 * t_png}


def bench_end_to_end(n: int, repeat: int = 3, against: str | None = None) -> None:
    """build_dataset on n 640x480 JPEGs (1-4 people) with the offline IQA set, one worker;
    ``against``: a git revision whose src/ is timed on the same inputs, runs interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        items, cfg = _coco_inputs(Path(tmp), n)
        prev_src = _export_rev(against, Path(tmp) / "prev") if against else None
        _timed_build(cfg, Path(tmp) / "warm")
        from osdhuman.config import apply_overrides

        cubic = apply_overrides(cfg, ["crop.upscale=cubic"])
        runs: dict[str, list] = {"ours": [], "previous": [], "cubic": [], "fresh": []}
        for r in range(repeat):
            runs["ours"].append(_timed_build(cfg, Path(tmp) / f"ours{r}"))
            runs["cubic"].append(_timed_build(cubic, Path(tmp) / f"cubic{r}"))
            if prev_src is not None:  # both in fresh processes, back to back
                runs["previous"].append(_fresh_build(prev_src, n))
                runs["fresh"].append(_fresh_build(Path(__file__).resolve().parents[1] / "src", n))
        parts = _stage_breakdown(items, cfg)
    scored = runs["ours"][0]["scored"]
    print(f"end to end, build-dataset with offline IQA ({', '.join(cfg.iqa.metrics)}), {n} 640x480 JPEGs, "
          f"{scored} crops scored, 1 worker, min / median of {repeat}:")

    def line(label: str, rs: list, note: str) -> tuple[float, float]:
        tot = sorted(n / x["total"] for x in rs)
        net = sorted(n / (x["total"] - x["report"]) for x in rs)
        rep = float(np.median([x["report"] for x in rs]))
        print(f"  {label:10s} {tot[0]:6.2f} / {np.median(tot):6.2f} source images/s/core   without the report "
              f"({rep:.1f} s, fixed): {net[0]:6.2f} / {np.median(net):6.2f}   {note}")
        return float(np.median(tot)), float(np.median(net))

    line("ours", runs["ours"], "target >= 15")
    line("ours cubic", runs["cubic"], "(crop.upscale=cubic instead of OpenCV's Lanczos4, ~10x cheaper per crop)")
    if runs["previous"]:
        fresh = line("ours fresh", runs["fresh"], "(this src/, fresh process)")
        prev = line("previous", runs["previous"], f"(src/ of {against}, fresh process)")
        print(f"  ratio vs previous   {fresh[0] / prev[0]:5.2f}x (without report {fresh[1] / prev[1]:5.2f}x), "
              f"fresh processes both")
    p = parts
    per_image = p["prepare_ms_per_image"] + p["crops_per_image"] * p["iqa_ms_per_crop"]
    print(f"  where the time goes, per source image ({p['crops_per_image']:.2f} crops scored each): prepare "
          f"(decode, blur, hashes, boxes, crop, resize) {p['prepare_ms_per_image']:.1f} ms, IQA "
          f"{p['crops_per_image'] * p['iqa_ms_per_crop']:.1f} ms ({p['iqa_ms_per_crop']:.1f} ms/crop); per selected "
          f"crop written: resize {p['resize_ms']:.1f} ms + PNG encode {p['png_ms']:.1f} ms (+ its decode); "
          f"prepare + IQA alone: {1e3 / per_image:.1f} images/s")


def bench_iqa(x, repeat: int = 3) -> None:
    """crops/s per offline metric beside pyiqa / the `brisque` package (the reference
    implementations), and the shared-planes set against the metrics one by one."""
    from osdhuman.iqa import MetricUnavailable, get_metric
    from osdhuman.iqa.crops import score_crops

    n = len(x)
    import torch

    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, 3)
    refs = _reference_metrics()
    print(f"IQA scoring, {n} crops 512x512, 1 core, best of {repeat} (runs interleaved):")
    ms = {}
    for name in ["niqe", "brisque", "piqe", "laplacian_var"]:
        m = get_metric(name, backend="offline", device="cpu")
        m(x[:1])  # warm-up (lazy imports, compiled kernels)
        ms[name] = m
        fns = {"ours": lambda m=m: m(x)}
        if name in refs:
            refs[name](x[:1])
            fns["ref"] = lambda f=refs[name]: f(x)
        r = interleaved_rates(fns, n, repeat=repeat)
        ref = f"   {refs[name].label} {r['ref']:7.2f} ({r['ours'] / r['ref']:5.2f}x)" if "ref" in r else ""
        print(f"  offline  {name:14s} {r['ours']:8.2f} crops/s{ref}")
    three = [ms["niqe"], ms["brisque"], ms["piqe"]]
    r = interleaved_rates({"shared": lambda: score_crops(three, u8),
                           "alone": lambda: [m(x) for m in three]}, n, repeat=repeat)
    print(f"  NIQE + BRISQUE + PIQE from shared planes (uint8 crops) {r['shared']:7.2f} crops/s, one by one "
          f"(float tensors) {r['alone']:7.2f} ({r['shared'] / r['alone']:5.2f}x)")
    for name in ["clipiqa", "maniqa", "musiq", "niqe", "piqe"]:
        try:
            m = get_metric(name, backend="pyiqa", device="cpu")
            m(x[:1])
            r = interleaved_rates({"m": lambda m=m: m(x)}, n, repeat=1)
            print(f"  pyiqa    {name:14s} {r['m']:8.2f} crops/s")
        except (MetricUnavailable, ImportError, KeyError, ValueError) as exc:
            print(f"  pyiqa    {name:14s} unavailable: {str(exc)[:110]}")


def _reference_metrics() -> dict:
    """The reference implementations that run offline here: pyiqa's PIQE, pyiqa's NIQE on our
    bundled parameters (written to the .mat it reads), the `brisque` package's own scorer."""
    refs = {}
    try:
        import pyiqa

        piqe = pyiqa.create_metric("piqe", device="cpu")
        piqe.label = "pyiqa"
        refs["piqe"] = piqe
        import scipy.io

        from osdhuman.iqa.niqe import load_pristine_params

        p = load_pristine_params()
        mat = Path(tempfile.mkdtemp()) / "niqe_modelparameters.mat"
        scipy.io.savemat(mat, {"mu_prisparam": p["mu"][None], "cov_prisparam": p["cov"]})
        niqe = pyiqa.create_metric("niqe", device="cpu", pretrained_model_path=str(mat))
        niqe.label = "pyiqa"
        refs["niqe"] = niqe
    except ImportError:
        pass
    try:
        import brisque

        class PackageBrisque:
            label = "brisque pkg"

            def __init__(self):
                class Ref(brisque.BRISQUE):  # its scale_features breaks on NumPy 2 (1-element arrays)
                    def scale_features(self, features):
                        return super().scale_features(np.array([np.ravel(v)[0] for v in features]))

                self.ref = Ref(url=False)

            def __call__(self, x):
                a = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
                return [self.ref.score(im) for im in a]

        refs["brisque"] = PackageBrisque()
    except ImportError:
        pass
    return refs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--dedup", type=int, metavar="N", help="only the duplicate-grouping benchmark on N hashes")
    ap.add_argument("--max-hamming", type=int, default=4)
    ap.add_argument("--scale", type=int, metavar="N", help="planning benchmark on a synthetic COCO file of N images")
    ap.add_argument("--dry-run", action="store_true", help="with --scale: plan only")
    ap.add_argument("--rerun", action="store_true", help="with --scale: a full build, then the time of a rerun")
    ap.add_argument("--workers", type=int, default=2, help="with --scale --rerun: worker processes")
    ap.add_argument("--end-to-end", type=int, metavar="N", help="build-dataset on N photos with the offline IQA set")
    ap.add_argument("--against", metavar="REV", help="with --end-to-end: also time src/ of this git revision")
    ap.add_argument("--no-iqa", action="store_true")
    ap.add_argument("--iqa-crops", type=int, default=8)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    if args.dedup:
        bench_dedup(args.dedup, args.max_hamming)
        return 0
    if args.scale:
        if args.rerun:
            bench_rerun(args.scale, args.workers)
        else:
            bench_scale(args.scale)
        return 0
    if args.end_to_end:
        bench_end_to_end(args.end_to_end, against=args.against)
        return 0
    from osdhuman.curation.config import CurationConfig

    cfg = CurationConfig()
    with tempfile.TemporaryDirectory() as tmp:
        items = make_inputs(Path(tmp), args.images)
        n_boxes = sum(len(i.boxes) for i in items)
        naive(items[:10]), ours(items[:10], cfg)  # warm the page cache and imports
        crops, rejects = ours(items, cfg)
        from osdhuman.config import apply_overrides

        cubic = apply_overrides(cfg, ["crop.upscale=cubic"])
        rates = interleaved_rates({"naive": lambda: naive(items), "ours": lambda: ours(items, cfg),
                                   "cubic": lambda: ours(items, cubic)}, len(items))
        r_naive, r_ours = rates["naive"], rates["ours"]
        print(f"HQ-ACF before IQA, {len(items)} 640x480 JPEGs, {n_boxes} person boxes "
              f"({crops} crops resized to 512 after NMS, {rejects} boxes rejected), 1 core:")
        print(f"  ours      {r_ours:8.1f} source images/s/core")
        print(f"  naive ref {r_naive:8.1f} source images/s/core  (Pillow decode + float64 Laplacian + 2 Lanczos crops)")
        print(f"  ratio     {r_ours / r_naive:8.2f}x   target >= {TARGET:.0f}/s/core: {'met' if r_ours >= TARGET else 'NOT met'}"
              f" (the issue's unloaded naive figure is 92/s: {TARGET / 92:.2f}x)")
        print(f"  ours with crop.upscale=cubic {rates['cubic']:8.1f} source images/s/core (Lanczos is ~80% of our time)")

        from osdhuman.curation.detect import OpenCVPersonDetector
        from osdhuman.imageio import read_rgb

        det = OpenCVPersonDetector(cfg.detector)
        imgs = [read_rgb(i.path) for i in items[:20]]
        r_det = rate(lambda: [det(im) for im in imgs], len(imgs), repeat=1)
        print(f"  detector  {r_det:8.1f} images/s/core  (OpenCV HOG + Haar upper body + face, folder: sources only)")

        if args.no_iqa:
            return 0
        from osdhuman.curation import stages

        crops_arr = []
        for it in items:
            rgb = read_rgb(it.path)
            b = it.boxes[0]
            sq = stages.square_crop_box(b, 640, 480, "pad")
            crops_arr.append(stages.resize_square(stages.extract_crop(rgb, sq), cfg.crop))
            if len(crops_arr) == args.iqa_crops:
                break
        x = torch.from_numpy(np.stack(crops_arr)).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, 512, 512)
        try:
            import osdhuman.iqa  # noqa: F401 - imported to see whether it can be
        except ImportError as exc:
            print(f"  osdhuman.iqa not importable ({exc})")
            return 0
        bench_iqa(x)
    return 0


if __name__ == "__main__":
    sys.exit(main())
