"""Speed of the degradation: images/s at 512x512, ours beside a straightforward reference.

    python benchmarks/degradation.py                      # CPU: reference vs ours, ratio
    python benchmarks/degradation.py --device cuda --batch-size 64
    python benchmarks/degradation.py --threads 1 --reference-conv both   # as docs/reference.md §degradation measured

(a) reference: benchmarks/reference_degradation.py, one image at a time, direct 21x21
    convolution (as the OSEDiff / BasicSR code), on the CPU;
(b) ours: osdhuman.degradation.Degrader on --device, --batch-size images per call.
Both run on the same synthetic images in one process; the rounds alternate so that load
from other processes hits both alike. Prints a line per measurement and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference_degradation as ref

from osdhuman.degradation import DegradationConfig, Degrader


def synthetic_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]: smooth colour fields with edges and texture (natural-ish)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    stripes = (torch.sin(xx / 3.0 + yy / 7.0) > 0).float() * 0.2
    tex = torch.rand(n, 1, size, size, generator=g) * 0.1
    return (x * 0.7 + stripes + tex).clamp(0, 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--images", type=int, default=None, help="images per round for ours (default: 2 batches)")
    ap.add_argument("--ref-images", type=int, default=4, help="reference images per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads, and ours' images side by side on a CPU (default: torch's / the CPU count)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--reference-conv", choices=["onednn", "aten", "both"], default="onednn",
                    help="the reference's F.conv2d backend: torch's default (oneDNN direct conv) or ATen's "
                         "own direct conv (oneDNN off; the setting behind docs/reference.md §degradation's 2 img/s, 84%% conv)")
    ap.add_argument("--batched", action="store_true", help="ours as one ragged batch (the GPU mode) even on CPU")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    n_ours = args.images or 2 * args.batch_size
    imgs = synthetic_images(max(n_ours, args.ref_images), args.size)
    deg = Degrader(DegradationConfig(), device=dev, batched=True if args.batched else None, workers=args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
          + f", {args.size}x{args.size}, batch {args.batch_size}")

    # warm-up (tables, FFT plans, codec, CUDA context)
    deg(imgs[: min(2, args.batch_size)].to(dev), [0, 1][: min(2, args.batch_size)])
    ref.degrade(imgs[:1])
    # both use one RNG per image; the reference's draws come from numpy's global state
    convs = [] if args.skip_reference else (["onednn", "aten"] if args.reference_conv == "both" else [args.reference_conv])
    t_ref = {c: 0.0 for c in convs}
    n_ref_done = {c: 0 for c in convs}
    t_ours = 0.0
    n_ours_done = 0
    for r in range(args.rounds):
        for conv in convs:
            np.random.seed(r)
            with torch.backends.mkldnn.flags(enabled=conv == "onednn"):
                t = time.perf_counter()
                for i in range(args.ref_images):
                    ref.degrade(imgs[i:i + 1])
                dt = time.perf_counter() - t
            t_ref[conv] += dt
            n_ref_done[conv] += args.ref_images
            print(f"round {r}: reference {args.ref_images / dt:8.2f} img/s (cpu, one image at a time, {conv} conv)")
        batches = [imgs[(i % imgs.shape[0]):(i % imgs.shape[0]) + args.batch_size] for i in range(0, n_ours, args.batch_size)]
        on_dev = [b.to(dev) for b in batches]
        sync(dev)
        t = time.perf_counter()
        seed = r * 1_000_000
        for b in on_dev:
            deg(b, list(range(seed, seed + b.shape[0])))
            seed += b.shape[0]
        sync(dev)
        dt = time.perf_counter() - t
        t_ours += dt
        n_ours_done += sum(b.shape[0] for b in on_dev)
        mode = "ragged batch" if (args.batched or dev.type != "cpu") else "image by image"
        print(f"round {r}: ours      {sum(b.shape[0] for b in on_dev) / dt:8.2f} img/s ({dev}, batch {args.batch_size}, {mode})")
    ours = n_ours_done / t_ours
    print(f"ours:      {ours:.2f} img/s")
    for conv in convs:
        refr = n_ref_done[conv] / t_ref[conv]
        print(f"reference ({conv} conv): {refr:.2f} img/s   ratio ours / reference: {ours / refr:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
