"""Speed of `osdhuman degrade` as a whole process, beside a naive per-image reference process.

    python benchmarks/degrade_folder.py                 # 48 crops of 512x512, 2 rounds each
    python benchmarks/degrade_folder.py --images 16 --rounds 1

Both sides are timed as whole processes (interpreter start, imports, reading, degrading,
writing) on the same folder of HQ crops, in alternating rounds:
(a) reference: this file run with ``--reference``: one image at a time, PIL reads it,
    benchmarks/reference_degradation.py degrades it (direct 21x21 convolutions, PIL JPEG),
    PIL writes the PNG, in the main loop;
(b) ours: ``osdhuman degrade HQ -o LQ`` (FFT blur, batching, the writer pool encoding PNGs
    on threads), into a fresh folder each round.
Prints each round with its ratio, then the ratio of the medians, the median of the per-round
ratios (each pair runs back to back, so it resists a shared machine's load) and min over min.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_crops(folder: Path, n: int, size: int) -> None:
    """``n`` HQ crops: pieces of scikit-image's sample photos (natural textures), else smooth noise."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    try:
        from skimage import data

        photos = [np.asarray(Image.fromarray(getattr(data, k)()).convert("RGB"))
                  for k in ("astronaut", "coffee", "chelsea", "rocket")]
    except ImportError:  # pragma: no cover
        photos = []
    rng = np.random.default_rng(0)
    for i in range(n):
        if photos:
            img = Image.fromarray(photos[i % len(photos)])
            scale = size / min(img.size) * (1.0 + 0.5 * rng.random())
            img = img.resize((int(img.size[0] * scale) + 1, int(img.size[1] * scale) + 1), Image.BICUBIC)
            x, y = rng.integers(0, img.size[0] - size + 1), rng.integers(0, img.size[1] - size + 1)
            img = img.crop((x, y, x + size, y + size))
        else:
            img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        img.save(folder / f"img{i:03d}.png")


def reference_main(hq: Path, lq: Path) -> None:
    """The naive process: PIL read -> reference degradation -> PIL PNG, one image at a time."""
    import numpy as np
    import torch
    from PIL import Image

    sys.path.insert(0, str(HERE))
    import reference_degradation as ref

    ref.JPEG_CODEC = "pil"
    lq.mkdir(parents=True, exist_ok=True)
    np.random.seed(0)
    for f in sorted(hq.glob("*.png")):
        arr = np.asarray(Image.open(f).convert("RGB"))
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float()[None] / 255.0
        y = ref.degrade(x)
        out = (y[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(out).save(lq / f.name)


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reference", nargs=2, metavar=("HQ", "LQ"), help=argparse.SUPPRESS)
    ap.add_argument("--extra", default="", help="extra arguments for osdhuman degrade, e.g. '--writers 4'")
    args = ap.parse_args()
    if args.reference:
        reference_main(Path(args.reference[0]), Path(args.reference[1]))
        return 0
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    work = Path(tempfile.mkdtemp(prefix="osdhuman-bench-"))
    try:
        make_crops(work / "hq", args.images, args.size)
        ours_cmd = [sys.executable, "-c", "import sys; from osdhuman.cli import main; sys.exit(main())",
                    "degrade", str(work / "hq"), "-o", "LQ", "--no-progress", *args.extra.split()]
        t_ref, t_ours = [], []
        for r in range(args.rounds):
            shutil.rmtree(work / "ref", ignore_errors=True)
            t_ref.append(timed([sys.executable, __file__, "--reference", str(work / "hq"), str(work / "ref")], env))
            out = work / f"ours{r}"
            t_ours.append(timed([c if c != "LQ" else str(out) for c in ours_cmd], env))
            print(f"round {r}: reference {t_ref[-1]:6.2f} s   ours {t_ours[-1]:6.2f} s   "
                  f"ratio {t_ref[-1] / t_ours[-1]:.2f}x   ({args.images} crops of {args.size}x{args.size}, "
                  "whole processes)")
        ref_s, ours_s = statistics.median(t_ref), statistics.median(t_ours)
        print(f"reference: {ref_s:.2f} s ({args.images / ref_s:.2f} img/s)   ours: {ours_s:.2f} s "
              f"({args.images / ours_s:.2f} img/s)   ratio of medians: {ref_s / ours_s:.2f}x   "
              f"median of paired-round ratios: {statistics.median(a / b for a, b in zip(t_ref, t_ours)):.2f}x   "
              f"min over min: {min(t_ref) / min(t_ours):.2f}x  [{os.cpu_count()} CPUs]")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
