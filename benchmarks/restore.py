"""Restoration speed and peak memory of OSDHuman (one step, batch 1 and 8 at 512x512, one
2048x2048 photo through latent + VAE tiling), beside the reference figures of FACTS 7.

    python benchmarks/restore.py --base-model tiny                       # smoke run, any CPU
    python benchmarks/restore.py --base-model sd21-random --precision bf16 [--compile] [--merge-lora]
    python benchmarks/restore.py --people [--base-model sd21-random --precision fp32 --device cpu]

``sd21-random`` builds SD-2.1-base-sized modules (UNet 866 M, VAE 84 M, Swin-L HFIE) with
random weights: the cost of the real model without downloading it. The reference column
is one H100, eager diffusers bf16 (61 ms / image at batch 1, 25 ms / image at batch 8) and
torch.compile bf16 (15 ms / image at batch 8); ratios are only meaningful on that setup.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

REF_MS = {  # FACTS 7, one H100, SD-2.1-base sized, random weights, bf16
    ("eager", 1, 512): 61.0,
    ("eager", 8, 512): 25.0,
    ("compile", 8, 512): 15.0,
}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_gib(dev: torch.device) -> tuple[float, str]:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**30, "GPU alloc"
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB, process lifetime
    return kb / 2**20, "RSS (process max)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default="tiny", help="tiny | sd21-random | diffusers folder")
    ap.add_argument("--hfie-encoder", default=None)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE")
    ap.add_argument("--merge-lora", action="store_true", help="fold the generator LoRA into the base weights")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--large", type=int, default=2048, help="side of the tiled photo (0: skip)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--people", action="store_true",
                    help="person-aware restore of a 1080p photo with 4 people, time per stage (benchmarks/restore_people.py)")
    args = ap.parse_args(argv)

    from osdhuman.models import OSDHumanConfig, build_osdhuman
    from osdhuman.pipelines import PipelineConfig, RestorationPipeline

    t0 = time.perf_counter()
    cfg = OSDHumanConfig(base_model=args.base_model, hfie_encoder_path=args.hfie_encoder, compute_null_prompt=False)
    model = build_osdhuman(cfg)
    if args.merge_lora:
        model.merge_generator_lora()
    # compiled modules: per-tile GroupNorm (patching norms between tiles would force recompiles)
    pipe = RestorationPipeline(model, PipelineConfig(device=args.device, precision=args.precision,
                                                     tile_size=args.tile, color_fix="adain",
                                                     tile_norm="tile" if args.compile else "global"))
    if args.compile:
        model.unet = torch.compile(model.unet)
        model.vae.encoder = torch.compile(model.vae.encoder)
        model.vae.decoder = torch.compile(model.vae.decoder)
    dev = pipe.device
    print(f"built {args.base_model} in {time.perf_counter() - t0:.1f} s on {dev} "
          f"({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), precision {args.precision}"
          f"{', compiled' if args.compile else ''}{', merged LoRA' if args.merge_lora else ''}"
          + ("  [random weights: speed only]" if model.untrained else ""), flush=True)

    if args.people:
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        from restore_people import run_people

        from osdhuman.curation.config import DetectorConfig
        from osdhuman.curation.detect import make_detector

        rows = run_people(pipe, repeats=args.repeats if args.base_model == "tiny" else 1,
                          detector=make_detector(DetectorConfig()))
        w = max(len(r[0]) for r in rows)
        print(f"{'stage'.ljust(w)} | seconds")
        for k, v in rows:
            print(f"{k.ljust(w)} | {v}")
        return 0

    mode = "compile" if args.compile else "eager"
    cases = [(b, args.size) for b in map(int, args.batches.split(","))]
    if args.large:
        cases.append((1, args.large))
    rows = []
    g = torch.Generator().manual_seed(0)
    for b, side in cases:
        x = torch.rand(b, 3, side, side, generator=g) * 2 - 1
        try:
            pipe.restore_tensor(x)  # warm-up (compilation, kernels)
            _sync(dev)
            _peak_reset(dev)
            times = []
            for _ in range(args.repeats if side <= 1024 else max(1, args.repeats // 2)):
                t = time.perf_counter()
                y = pipe.restore_tensor(x)
                _sync(dev)
                times.append(time.perf_counter() - t)
            assert y.shape == x.shape and torch.isfinite(y).all()
            sec = min(times)
            peak, kind = _peak_gib(dev)
            ref = REF_MS.get((mode, b, side))
            comparable = dev.type == "cuda" and args.base_model == "sd21-random"
            ms = 1000 * sec / b
            rows.append((f"{b} x {side}x{side}", f"{b / sec:.2f}", f"{ms:.1f}", f"{peak:.2f} ({kind})",
                         f"{ref:.0f}" if ref else "-",
                         f"{ms / ref:.2f}" if ref and comparable else "-"))
        except torch.OutOfMemoryError:
            rows.append((f"{b} x {side}x{side}", "OOM", "-", "-", "-", "-"))
        print("  done", rows[-1][0], flush=True)

    head = ("batch x size", "images/s", "ms/image", "peak memory GiB", "ref ms/image (H100)", "ours/ref")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths))
    print(line(head))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    if dev.type != "cuda" or args.base_model != "sd21-random":
        print("(reference figures are for SD-2.1-base-sized modules on one H100; no ratio is printed here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
