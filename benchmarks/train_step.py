"""Time and peak memory of one full OSDHuman training step (paper 3.2 / docs/reference.md §training).

One step = generator forward (VAE encoder + HFIE + UNet at t=999 + VAE decoder), LPIPS(VGG16),
VSD (frozen teacher with CFG on 2B samples + regularizer, no grad), backward, clip, AdamW;
then the regularizer's Eq. 7 forward / backward / AdamW. The exact code ``train`` runs
(``osdhuman.training.update.Updater``), on random inputs, random model weights.

    python benchmarks/train_step.py                                   # CPU, tiny preset, 64 px
    python benchmarks/train_step.py --base-model sd21-random --size 512 --batch 4 \
        --precision bf16 --device cuda                                 # + batch 1 with checkpointing

The reference column is the docs/reference.md §training measurement on one H100 (SD-2.1-base-sized
modules, random weights, bf16, three separate UNets, eager): batch 4: 762 ms / 42.7 GiB;
batch 1 + gradient checkpointing: 1,071 ms / 8.2 GiB; batch 4 + checkpointing: 1,262 ms /
17.1 GiB. Targets (issue 5): >= 8 images/s per H100 at batch 4, < 22 GB at batch 1.
There is no published reference for the tiny preset or for a CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

# (base model, size, batch, checkpointing) -> (ms per step, GiB peak) measured on one H100 (docs/reference.md §training)
REFERENCE_H100 = {
    ("sd21-random", 512, 4, False): (762.0, 42.7),
    ("sd21-random", 512, 1, True): (1071.0, 8.2),
    ("sd21-random", 512, 4, True): (1262.0, 17.1),
}


def _peak_cpu_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def bench(base: str, size: int, batch: int, precision: str, ckpt: bool, device: str, steps: int, warmup: int,
          frozen_dtype: str) -> dict:
    from osdhuman.models import OSDHumanConfig
    from osdhuman.training import TrainConfig
    from osdhuman.training.config import LPIPSConfig
    from osdhuman.training.step import OSDHumanTrainStep
    from osdhuman.training.update import Updater, autocast_dtype, build_for_training, make_optimizer

    cfg = TrainConfig(model=OSDHumanConfig(base_model=base), lpips=LPIPSConfig(random_backbone=True),
                      batch_size=batch, mixed_precision=precision, gradient_checkpointing=ckpt,
                      frozen_dtype=frozen_dtype, device=device)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model, lpips, gen, reg = build_for_training(cfg, dev)
    sm = OSDHumanTrainStep(model, lpips, cfg.loss, cfg.vsd).to(dev)
    sm.set_uncond(model.null_prompt_embeds if model.null_prompt_embeds is not None
                  else torch.zeros(1, 77, model.cross_attention_dim))
    sm.train()
    up = Updater(sm, make_optimizer(gen, cfg.optim.lr, cfg), make_optimizer(reg, cfg.optim.lr, cfg), gen, reg,
                 cfg, dev, autocast_dtype(cfg))
    g = torch.Generator().manual_seed(0)
    hq = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(dev)
    lq = (hq + 0.1 * torch.randn(batch, 3, size, size, generator=g).to(dev)).clamp(-1, 1)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        up.iteration([(lq, hq)])
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        up.iteration([(lq, hq)])
    sync()
    ms = (time.perf_counter() - t0) / steps * 1000
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else _peak_cpu_gib()
    n_train = sum(p.numel() for p in gen + reg)
    del up, sm, model, lpips
    return {"ms": ms, "img_s": batch / ms * 1000, "peak_gib": peak, "trainable_m": n_train / 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-model", default="tiny", choices=["tiny", "sd21-random"])
    ap.add_argument("--size", type=int, default=None, help="image side (default 64 for tiny, 512 otherwise)")
    ap.add_argument("--batch", type=int, default=None, help="batch (default 2 for tiny, 4 otherwise)")
    ap.add_argument("--precision", default=None, choices=["no", "bf16", "fp16"],
                    help="autocast (default: no on CPU, bf16 on GPU)")
    ap.add_argument("--frozen-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 5 on CPU, 10 on GPU)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--only", choices=["plain", "ckpt"], help="run one row only")
    args = ap.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = args.base_model == "tiny"
    size = args.size or (64 if tiny else 512)
    batch = args.batch or (2 if tiny else 4)
    precision = args.precision or ("no" if device == "cpu" else "bf16")
    steps = args.steps or (5 if device == "cpu" else 10)
    rows = []
    if args.only != "ckpt":
        rows.append((batch, False))
    if args.only != "plain":
        rows.append((1, True))
    dev_name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"one OSDHuman training step: {args.base_model}, {size}x{size}, precision {precision}, "
          f"frozen {args.frozen_dtype}, {dev_name}, {steps} timed steps after {args.warmup} warm-up")
    head = f"{'batch':>5} {'ckpt':>5} {'ms/step':>9} {'img/s':>7} {'peak GiB':>9} {'ref ms':>8} {'ref GiB':>8} {'speed x':>8} {'mem x':>6}"
    print(head)
    print("-" * len(head))
    for b, ck in rows:
        r = bench(args.base_model, size, b, precision, ck, device, steps, args.warmup, args.frozen_dtype)
        ref = REFERENCE_H100.get((args.base_model, size, b, ck)) if device.startswith("cuda") else None
        ref_ms, ref_gib = (f"{ref[0]:.0f}", f"{ref[1]:.1f}") if ref else ("-", "-")
        sx, mx = (f"{ref[0] / r['ms']:.2f}", f"{ref[1] / r['peak_gib']:.2f}") if ref else ("-", "-")
        print(f"{b:>5} {str(ck):>5} {r['ms']:>9.1f} {r['img_s']:>7.2f} {r['peak_gib']:>9.2f} {ref_ms:>8} {ref_gib:>8} {sx:>8} {mx:>6}")
    print(f"trainable parameters (generator + regularizer): {r['trainable_m']:.3f} M")
    if device == "cpu":
        print("peak memory on CPU is the process's max RSS (includes Python and the libraries)")
    print("reference: docs/reference.md §training, one H100, SD-2.1-base-sized random weights, bf16, three separate UNets; "
          "targets >= 8 img/s at batch 4 and < 22 GB at batch 1 (ratios > 1 mean faster / smaller)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
