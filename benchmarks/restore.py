"""Restoration speed and peak memory of OSDHuman (one step, batch 1 and 8 at 512x512, one
2048x2048 photo through latent + VAE tiling), beside the reference figures of docs/reference.md §costs.

    python benchmarks/restore.py --base-model tiny                       # smoke run, any CPU
    python benchmarks/restore.py --base-model sd21-random --precision bf16 [--compile] [--no-fuse]
    python benchmarks/restore.py --base-model sd21-random --precision fp32 --device cpu --fuse-compare
    python benchmarks/restore.py --people [--base-model sd21-random --precision fp32 --device cpu]

``--vs-diffusers``: ours (fused, the whole pipeline with HFIE and colour fix) beside plain
diffusers + peft in the same run (UNet + VAE with the same peft LoRA, unfused, one step at
t=999 from a given prompt tensor, no osdhuman code in its loop), interleaved, at --batches.

``--fuse-compare``: the same model and input timed with its LoRA apart (peft layers) and then
fused into the base weights (what ``restore`` does by default), in one run: min of
``--repeats``, and the ratio unfused / fused.

``--prompt-source dape_lq``: the cost of OSEDiff's DAPE prompt (RAM Swin-L + the 2-layer tagging
decoder + SD-2.1's 23-layer CLIP text encoder, per image) beside HFIE's (the same Swin-L + one
attention layer), interleaved in one run on the same model: each prompt alone, and the whole
restore with each. Random weights; a stand-in list of 4,585 tag names unless --ram-tag-list.

``--backend openvino``: the OpenVINO export of the same model (``export_openvino``, at
``--ov-precision``, default the export's own default for this CPU) beside torch eager fp32 and
torch eager bf16, interleaved, whole restore (HFIE and colour fix inside) of one 512x512 photo
(skimage's astronaut), min and median of --repeats; the first call's compile time apart; the
PSNR of each output against torch fp32 on the 8-bit image; ``--large`` side: seconds and the
peak RSS rise during the call, torch fp32 against OpenVINO. Ends with the one-line summary.

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

REF_MS = {  # docs/reference.md §costs, one H100, SD-2.1-base sized, random weights, bf16
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
    ap.add_argument("--no-fuse", action="store_true", help="keep the LoRA apart (default: fused, as restore does)")
    ap.add_argument("--fuse-compare", action="store_true", help="time unfused, then fused, at batch 1 x --size")
    ap.add_argument("--vs-diffusers", action="store_true", help="ours beside plain diffusers + peft (unfused)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--large", type=int, default=2048, help="side of the tiled photo (0: skip)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--prompt-source", choices=["hfie_lq", "dape_lq"], default="hfie_lq",
                    help="dape_lq: time DAPE's prompt beside HFIE's, same run")
    ap.add_argument("--ram-tag-list", default=None, help="RAM's ram_tag_list.txt for --prompt-source dape_lq")
    ap.add_argument("--backend", choices=["torch", "openvino"], default="torch",
                    help="openvino: the OpenVINO export beside torch eager fp32 and bf16, interleaved")
    ap.add_argument("--ov-precision", choices=["fp32", "bf16", "int8w"], default=None,
                    help="--backend openvino: export precision (default: bf16 where the CPU computes it, else fp32)")
    ap.add_argument("--ov-dir", default=None, help="--backend openvino: export folder (default: a temp folder; "
                    "an export already there at this precision is reused)")
    ap.add_argument("--people", action="store_true",
                    help="person-aware restore of a 1080p photo with 4 people, time per stage (benchmarks/restore_people.py)")
    ap.add_argument("--families", action="store_true",
                    help="OSEDiff, OSDHuman and HAODiff side by side, s per 512 image (benchmarks/restore_families.py)")
    args = ap.parse_args(argv)
    if args.families:
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        from restore_families import families_compare

        return families_compare(args)

    from osdhuman.models import OSDHumanConfig, build_osdhuman
    from osdhuman.pipelines import PipelineConfig, RestorationPipeline

    t0 = time.perf_counter()
    cfg = OSDHumanConfig(base_model=args.base_model, hfie_encoder_path=args.hfie_encoder, compute_null_prompt=False)
    model = build_osdhuman(cfg)
    if args.fuse_compare:
        return fuse_compare(model, args)
    if args.vs_diffusers:
        return vs_diffusers(model, args)
    if args.prompt_source == "dape_lq":
        return dape_compare(model, args)
    if args.backend == "openvino":
        return openvino_compare(model, args)
    # compiled modules: per-tile GroupNorm (patching norms between tiles would force recompiles)
    pipe = RestorationPipeline(model, PipelineConfig(device=args.device, precision=args.precision,
                                                     tile_size=args.tile, color_fix="adain",
                                                     tile_norm="tile" if args.compile else "global"),
                               fuse=not args.no_fuse)
    if args.compile:
        model.unet = torch.compile(model.unet)
        model.vae.encoder = torch.compile(model.vae.encoder)
        model.vae.decoder = torch.compile(model.vae.decoder)
    dev = pipe.device
    print(f"built {args.base_model} in {time.perf_counter() - t0:.1f} s on {dev} "
          f"({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), precision {args.precision}"
          f"{', compiled' if args.compile else ''}{'' if args.no_fuse else ', fused LoRA'}"
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


def _time(pipe, x) -> float:
    t = time.perf_counter()
    pipe.restore_tensor(x)
    _sync(pipe.device)
    return time.perf_counter() - t


def _set_merged(model, merged: bool) -> None:
    """peft's reversible merge / unmerge of the generator LoRA on every layer."""
    from osdhuman.models import lora_layers

    for root in (model.vae, model.unet):
        for _, layer in lora_layers(root):
            if merged and not layer.merged:
                layer.merge(adapter_names=["generator"])
            elif not merged and layer.merged:
                layer.unmerge()


def fuse_compare(model, args) -> int:
    """Unfused and fused runs interleaved (A B A B ...) on the same model and input, so that
    machine-load drift hits both; fused uses peft's reversible merge here (``restore``
    also drops the then idle peft wrappers, which can only be faster)."""
    from osdhuman.pipelines import PipelineConfig, RestorationPipeline

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B off zero, as after training
        for p in model.generator_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    pc = PipelineConfig(device=args.device, precision=args.precision, tile_size=max(args.tile, args.size))
    pipe = RestorationPipeline(model, pc, fuse=False)
    x = torch.rand(1, 3, args.size, args.size, generator=g) * 2 - 1
    times = {False: [], True: []}
    with torch.no_grad():
        before = pipe.restore_tensor(x)  # warm-up, unfused
        for _ in range(args.repeats):
            for merged in (False, True):
                _set_merged(model, merged)
                times[merged].append(_time(pipe, x))
        diff = (pipe.restore_tensor(x) - before).abs().max().item()
    unfused, fused = min(times[False]), min(times[True])
    ratios = sorted(a / b for a, b in zip(times[False], times[True]))
    print(f"{args.base_model} {args.size}x{args.size} batch 1 on {pipe.device}, {args.precision}, "
          f"{args.repeats} interleaved pairs")
    print(f"  unfused (peft LoRA layers): min {unfused:.3f} s/image")
    print(f"  fused (LoRA merged into the base weights): min {fused:.3f} s/image")
    print(f"  ratio unfused / fused: {unfused / fused:.3f} (min over min); pairwise median "
          f"{ratios[len(ratios) // 2]:.3f}; max |fused - unfused| = {diff:.2e}")
    return 0


def _plain_diffusers(model, device, dtype):
    """A plain diffusers UNet + VAE of the same size with the same peft LoRA (unfused), and
    its one-step restore: (B,3,H,W) [-1,1], prompt (B,77,D) -> (B,3,H,W)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig

    from osdhuman.models import lora_target_names

    unet = UNet2DConditionModel.from_config(model.unet.config)
    vae = AutoencoderKL.from_config(model.vae.config)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_names(unet, "unet"),
                                init_lora_weights="gaussian"))
    vae.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_names(vae, "vae_encoder"),
                               init_lora_weights="gaussian"))
    unet.to(device, dtype).eval()
    vae.to(device, dtype).eval()
    a = model.alphas_cumprod[999].item()

    @torch.no_grad()
    def step(x, p):
        z = vae.encode(x.to(dtype)).latent_dist.mode() * 0.18215
        t = torch.full((x.shape[0],), 999, device=device, dtype=torch.long)
        eps = unet(z, t, encoder_hidden_states=p.to(dtype)).sample
        x0 = (z.float() - (1 - a) ** 0.5 * eps.float()) / a ** 0.5
        return vae.decode((x0 / 0.18215).to(dtype)).sample.clamp(-1, 1)

    return step


def vs_diffusers(model, args) -> int:
    """Ours (fused pipeline) and plain diffusers + peft (unfused), interleaved per repeat."""
    from osdhuman.pipelines import PipelineConfig, RestorationPipeline

    pipe = RestorationPipeline(model, PipelineConfig(device=args.device, precision=args.precision,
                                                     tile_size=max(args.tile, args.size)))
    dev, dtype = pipe.device, pipe.dtype
    ref = _plain_diffusers(model, dev, dtype)
    g = torch.Generator().manual_seed(0)
    print(f"{args.base_model} on {dev}, {args.precision}, {args.repeats} interleaved repeats", flush=True)
    for b in map(int, args.batches.split(",")):
        x = (torch.rand(b, 3, args.size, args.size, generator=g) * 2 - 1).to(dev)
        p = torch.randn(b, 77, model.cross_attention_dim, generator=g).to(dev)
        with torch.no_grad():
            pipe.restore_tensor(x), ref(x, p)  # warm-up
            ours, theirs = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                pipe.restore_tensor(x)
                _sync(dev)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                ref(x, p)
                _sync(dev)
                theirs.append(time.perf_counter() - t)
        o, r = min(ours) / b, min(theirs) / b
        print(f"  batch {b} x {args.size}: ours {1000 * o:.1f} ms/image (HFIE + colour fix included), "
              f"plain diffusers + peft unfused {1000 * r:.1f} ms/image, ours/ref {o / r:.3f}", flush=True)
    return 0


def _dape_prompt(model, args):
    """An SD-2.1-sized DAPE prompt: RAM Swin-L + tagging head (random), full CLIP text encoder."""
    import tempfile
    from pathlib import Path

    from transformers import CLIPTextConfig, CLIPTextModel

    from osdhuman.models import OSDHumanConfig, build_tiny_tokenizer
    from osdhuman.models.config import (
        SD21_BASE_TEXT_ENCODER_CONFIG,
        TINY_TEXT_ENCODER_CONFIG,
    )
    from osdhuman.models.dape import DAPEPrompt, _build_tagger
    from osdhuman.models.ram_tagging import find_tag_files, read_tag_files

    tag_list = args.ram_tag_list
    if tag_list is None:  # benchmark stand-in: RAM's count of tags, names irrelevant to the cost
        d = Path(tempfile.mkdtemp(prefix="osdhuman-bench-"))
        (d / "ram_tag_list.txt").write_text("\n".join(f"tag{i}" for i in range(4585)))
        (d / "ram_tag_list_threshold.txt").write_text("\n".join(["0.68"] * 4585))
        tag_list = str(d / "ram_tag_list.txt")
    cfg = OSDHumanConfig(base_model="sd21-random" if model.config.base_model != "tiny" else "tiny", prompt_source="dape_lq")
    tagger = _build_tagger(cfg, read_tag_files(*find_tag_files(tag_list, None, None)))
    tiny = cfg.base_model == "tiny"
    tcfg = dict(TINY_TEXT_ENCODER_CONFIG if tiny else SD21_BASE_TEXT_ENCODER_CONFIG,
                bos_token_id=512, eos_token_id=513, pad_token_id=513)
    te = CLIPTextModel(CLIPTextConfig(**tcfg)).eval()  # 23 layers at SD size (the random preset keeps 1)
    return DAPEPrompt(tagger, te, build_tiny_tokenizer(), source="lq")


def dape_compare(model, args) -> int:
    """HFIE's prompt vs DAPE's (tags + CLIP text), alone and inside the whole restore, interleaved."""
    from osdhuman.pipelines import PipelineConfig, RestorationPipeline

    pipe = RestorationPipeline(model, PipelineConfig(device=args.device, precision=args.precision,
                                                     tile_size=max(args.tile, args.size)))
    dev, dtype = pipe.device, pipe.dtype
    hfie = model.prompt_extractor
    dape = _dape_prompt(model, args).to(dev, dtype)
    x = (torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dev)
    t: dict[str, list[float]] = {k: [] for k in ("hfie", "dape", "dape_tags", "restore_hfie", "restore_dape")}

    def clock(key, fn):
        s = time.perf_counter()
        fn()
        _sync(dev)
        t[key].append(time.perf_counter() - s)

    with torch.no_grad():
        hfie(x.to(dtype)), dape(x.to(dtype))  # warm-up
        for _ in range(args.repeats):
            clock("hfie", lambda: hfie(x.to(dtype)))
            clock("dape", lambda: dape(x.to(dtype)))
            clock("dape_tags", lambda: dape.tagger(x.to(dtype)))
            model.prompt_extractor = hfie
            clock("restore_hfie", lambda: pipe.restore_tensor(x))
            model.prompt_extractor = dape
            clock("restore_dape", lambda: pipe.restore_tensor(x))
    model.prompt_extractor = hfie
    m = {k: min(v) for k, v in t.items()}
    print(f"{args.base_model} {args.size}x{args.size} batch 1 on {dev}, {args.precision}, {args.repeats} interleaved "
          f"repeats (min), threads {torch.get_num_threads()}")
    print(f"  HFIE prompt (Swin-L + attention head):               {m['hfie']:.3f} s")
    print(f"  DAPE prompt (Swin-L + tagging decoder + CLIP text):  {m['dape']:.3f} s "
          f"(tags {m['dape_tags']:.3f} s, text encoder {m['dape'] - m['dape_tags']:.3f} s); DAPE / HFIE {m['dape'] / m['hfie']:.2f}")
    print(f"  whole restore with HFIE: {m['restore_hfie']:.3f} s; with DAPE: {m['restore_dape']:.3f} s; "
          f"ratio {m['restore_dape'] / m['restore_hfie']:.3f}")
    return 0


class _RssPeak:
    """Peak resident memory of this process while the block runs (sampled every 20 ms), GiB."""

    def __enter__(self):
        import os
        import threading

        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page / 2**30

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


def _photo(side: int) -> torch.Tensor:
    """skimage's astronaut (a person, 512x512) resized to side x side, (1,3,S,S) in [-1,1]; noise without skimage."""
    try:
        import numpy as np
        from PIL import Image
        from skimage import data

        a = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.BICUBIC))
        return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    except ImportError:
        return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _psnr8(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) between two [-1,1] images after rounding both to 8 bits, as the files are written."""
    q = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round()
    mse = (q(a) - q(b)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * __import__("math").log10(255.0**2 / mse)


def _ov_export(model, args, precision: str):
    """The export folder for ``model`` at ``precision`` (made, or reused when it is there)."""
    import tempfile
    from pathlib import Path

    from osdhuman.models.openvino_export import (
        export_openvino,
        is_openvino_export,
        read_openvino_config,
    )

    folder = Path(args.ov_dir or Path(tempfile.gettempdir()) / f"osdhuman-bench-ov-{args.base_model}-{precision}")
    if is_openvino_export(folder) and read_openvino_config(folder)["precision"] == precision:
        model.merge_generator_lora()  # what the export holds (and what the torch rows run)
        print(f"  OpenVINO export reused: {folder}", flush=True)
        return folder
    t = time.perf_counter()
    export_openvino(model, folder, precision=precision)
    print(f"  OpenVINO export ({precision}) written in {time.perf_counter() - t:.1f} s: {folder}", flush=True)
    return folder


def _second_process_compile(folder, tile: int, size: int) -> None:
    """Compile seconds of the same export in a fresh process (OpenVINO's model cache is warm by now)."""
    import subprocess

    code = ("import sys,time,torch; from osdhuman.pipelines.openvino_backend import OpenVINOPipeline as P; "
            f"p=P.from_export(sys.argv[1], tile_size={tile}); p.restore_tensor(torch.zeros(1,3,{size},{size})); "
            "print(f'{p.backend.compile_seconds:.2f}')")
    try:
        second = subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True, text=True,
                                timeout=1800).stdout.strip().splitlines()[-1]
        print(f"  openvino compile in a second process (model cache): {second} s", flush=True)
    except (subprocess.SubprocessError, IndexError):
        print("  openvino second process: failed", flush=True)


def openvino_compare(model, args) -> int:
    """torch eager fp32, torch eager bf16 and the OpenVINO export, interleaved on one model and photo."""
    import copy
    import gc
    import statistics

    from osdhuman.models.openvino_export import default_precision
    from osdhuman.pipelines import PipelineConfig, RestorationPipeline
    from osdhuman.pipelines.openvino_backend import OpenVINOPipeline

    precision = args.ov_precision or default_precision()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B off zero, as after training
        for p in model.generator_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    folder = _ov_export(model, args, precision)
    gc.collect()
    tile = max(args.tile, args.size)
    ov = OpenVINOPipeline.from_export(folder, tile_size=tile)
    ov_name = f"openvino {ov.precision_name}"
    x = _photo(args.size)
    print(f"{args.base_model} {args.size}x{args.size} batch 1 on the CPU ({torch.get_num_threads()} threads), "
          f"whole restore (HFIE + colour fix), {args.repeats} interleaved rounds", flush=True)
    t = time.perf_counter()
    ov.restore_tensor(x)
    first = time.perf_counter() - t
    print(f"  openvino first call {first:.2f} s, of which compiling {ov.backend.compile_seconds:.2f} s "
          f"(cache {ov.backend.cache_dir})", flush=True)
    _second_process_compile(folder, tile, args.size)  # before the torch copies: both processes must fit in memory
    pipes = {"torch eager fp32": RestorationPipeline(model, PipelineConfig(device="cpu", precision="fp32", tile_size=tile)),
             "torch eager bf16": RestorationPipeline(copy.deepcopy(model), PipelineConfig(device="cpu", precision="bf16",
                                                                                         tile_size=tile)),
             ov_name: ov}
    out, times = {}, {k: [] for k in pipes}
    with torch.no_grad():
        for k, p in pipes.items():
            if k != ov_name:
                p.restore_tensor(x)  # warm-up
        for _ in range(args.repeats):
            for k, p in pipes.items():
                t = time.perf_counter()
                out[k] = p.restore_tensor(x)
                times[k].append(time.perf_counter() - t)
    ref = out["torch eager fp32"]
    print(f"  {'':24s}   min s   median s   PSNR vs torch fp32 (8-bit)")
    for k, v in times.items():
        print(f"  {k:24s} {min(v):7.2f}   {statistics.median(v):8.2f}   {_psnr8(out[k], ref):.1f} dB", flush=True)
    base, ovt = times["torch eager fp32"], times[ov_name]
    ratio, ratio_med = min(base) / min(ovt), statistics.median(base) / statistics.median(ovt)
    vs_bf16 = min(times["torch eager bf16"]) / min(ovt)
    print(f"  openvino vs torch eager bf16 (min): {vs_bf16:.2f}x; vs fp32 by medians: {ratio_med:.2f}x")
    with torch.no_grad():  # the colour fix rescales each channel to the input's spread: it magnifies small errors
        raw = {k: pipes[k].restore_tensor(x, color_fix="none") for k in ("torch eager fp32", ov_name)}  # when the
    print(f"  PSNR without the colour fix: {_psnr8(raw[ov_name], raw['torch eager fp32']):.1f} dB "  # output is flat
          f"(raw output spread {raw['torch eager fp32'].std().item():.3f}, input {x.std().item():.3f})", flush=True)
    if args.large:
        del pipes["torch eager bf16"]
        gc.collect()
        big = _photo(args.large)
        for k in ("torch eager fp32", ov_name):
            with _RssPeak() as r, torch.no_grad():
                t = time.perf_counter()
                pipes[k].restore_tensor(big)
                sec = time.perf_counter() - t
            print(f"  {args.large}x{args.large} {k}: {sec:.1f} s, peak RSS rise during the call "
                  f"{r.peak - r.start:.2f} GiB (process {r.peak:.2f} GiB)", flush=True)
    print(f"openvino {precision} vs torch eager fp32, {args.size}x{args.size} batch 1, whole restore: "
          f"{ratio:.2f}x, PSNR {_psnr8(out[ov_name], ref):.1f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
