"""``osdhuman restore``: one-step restoration of image files and folders."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from osdhuman.cli import UsageError
from osdhuman.cli._common import add_config_args, check_device, check_output_dir, resolve_config
from osdhuman.cli.restore_people import add_people_args, check_people_args, people_overrides
from osdhuman.outputs import output_name_problem

# osdhuman.models / osdhuman.pipelines (torch, diffusers, OpenVINO) are imported inside the functions that
# restore, so `osdhuman --help` and bad-flag errors stay fast.


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "restore", help="restore human images with OSDHuman (one diffusion step)",
        description="Restore image files / folders into OUTDIR with OSDHuman. Weights come from "
                    "--weights / --base-model / --hfie-encoder or the environment variables "
                    "OSDHUMAN_WEIGHTS, OSDHUMAN_BASE_MODEL, OSDHUMAN_HFIE_ENCODER. "
                    "--base-model tiny runs an untrained toy model (smoke tests only).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", "--out", "--output-dir", dest="output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--weights", metavar="PATH", help="trained weights: an osdhuman folder or export, a diffusers/peft "
                   "LoRA file or folder, the authors' release folder, OSEDiff's osediff.pkl, or a hub id in the "
                   "local cache (env OSDHUMAN_WEIGHTS)")
    p.add_argument("--base-model", metavar="PATH_OR_ID",
                   help="SD-2.1-base diffusers folder or hub id, or 'tiny' (env OSDHUMAN_BASE_MODEL)")
    p.add_argument("--hfie-encoder", metavar="FILE", help="RAM ram_swin_large_14m.pth: HFIE's image encoder, and DAPE's RAM "
                   "(env OSDHUMAN_HFIE_ENCODER)")
    p.add_argument("--no-fuse", action="store_true", help="keep the LoRA apart from the base weights (default: fused at load)")
    p.add_argument("--timestep", type=int, metavar="T", help="override the one-step timestep the weights record "
                   "(HAODiff 199, OSDFace 399, OSEDiff / OSDHuman 999); a warning says so and the report records it")
    p.add_argument("--guidance-scale", type=float, metavar="S", help="classifier-free guidance with the weights' "
                   "negative prompt (default: the family's: HAODiff 3.5, others 1 = none)")
    p.add_argument("--prompt-source", choices=["hfie_lq", "hfie_hq", "text", "null", "dape_lq", "dape_hq"],
                   help="override the prompt source the weights record (OSEDiff weights: dape_lq with --dape, "
                        "or null)")
    p.add_argument("--dape", metavar="FILE", help="OSEDiff's DAPE.pth (LoRA over the RAM checkpoint of --hfie-encoder); "
                   "implies --prompt-source dape_lq")
    p.add_argument("--ram-tag-list", metavar="FILE", help="RAM's ram_tag_list.txt (default: beside the RAM checkpoint); "
                   "ram_tag_list_threshold.txt is read from beside it")
    p.add_argument("--ram-tag-thresholds", metavar="FILE", help="RAM's per-class thresholds (ram_tag_list_threshold.txt)")
    p.add_argument("--dape-prompt", metavar="TEXT", help="user text appended to the DAPE tags (OSEDiff's --prompt)")
    p.add_argument("--latent", choices=["mode", "sample"],
                   help="LQ latent: posterior mode or a seeded sample (default: the family's: OSEDiff, HAODiff and "
                        "OSDFace sample, OSDHuman mode)")
    p.add_argument("--tile", type=int, metavar="N", help="tile size in pixels (default 512)")
    p.add_argument("--tile-overlap", type=int, metavar="N", help="tile overlap in pixels (default 64)")
    p.add_argument("--vae-tile", type=int, metavar="N", help="VAE tile size in pixels (default: --tile; HAODiff 1024)")
    p.add_argument("--latent-blend", choices=["smooth", "gaussian"],
                   help="how latent tiles are blended: smooth (ours: raised-cosine ramps over --tile-overlap) or "
                        "gaussian (HAODiff's: 5-latent-pixel overlap, Gaussian-weighted eps); default: the family's")
    p.add_argument("--color-fix", choices=["adain", "wavelet", "none"],
                   help="default: the family's (HAODiff wavelet, OSDFace none, OSDHuman / OSEDiff adain)")
    p.add_argument("--bit-depth", type=int, choices=[8, 16], help="16: 16-bit RGB PNG outputs (default 8)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="PyTorch compute precision (an OpenVINO "
                   "export runs at the precision it was exported with)")
    p.add_argument("--backend", choices=["auto", "torch", "openvino"],
                   help="auto (default): OpenVINO for a folder written by `export --format openvino`, PyTorch otherwise")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--batch-size", type=int, metavar="N")
    p.add_argument("--ext", choices=["png", "jpg", "auto"], help="output format (auto: keep png/jpg/webp)")
    p.add_argument("--suffix", metavar="S", help="appended to output file names")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="write every output again (default: resume - keep outputs whose input and settings are "
                        "unchanged, never replace a file restore did not write)")

    add_people_args(p)
    add_config_args(p)
    p.set_defaults(func=run)


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    pairs = {
        "weights": args.weights or os.environ.get("OSDHUMAN_WEIGHTS") or None,
        "base_model": args.base_model or os.environ.get("OSDHUMAN_BASE_MODEL") or None,
        "hfie_encoder": args.hfie_encoder or os.environ.get("OSDHUMAN_HFIE_ENCODER") or None,
        "tile_size": args.tile, "tile_overlap": args.tile_overlap, "vae_tile_size": args.vae_tile,
        "color_fix": args.color_fix, "precision": args.precision, "device": args.device,
        "batch_size": args.batch_size, "ext": args.ext, "suffix": args.suffix,
        "recursive": True if args.recursive else None, "fuse": False if args.no_fuse else None,
        "timestep": args.timestep, "prompt_source": args.prompt_source,
        "dape": args.dape, "ram_tag_list": args.ram_tag_list, "ram_tag_thresholds": args.ram_tag_thresholds,
        "dape_prompt": args.dape_prompt, "latent_mode": args.latent,
        "guidance_scale": args.guidance_scale, "bit_depth": args.bit_depth, "latent_blend": args.latent_blend,
        "overwrite": True if getattr(args, "overwrite", False) else None,
        "backend": args.backend,
    }

    return [f"{k}={json.dumps(v)}" for k, v in pairs.items() if v is not None] + people_overrides(args)


def _check_backend(cfg) -> None:
    """The OpenVINO backend's weights and package, before any work (one line, exit 2)."""
    from osdhuman.models import WeightsError
    from osdhuman.models.openvino_export import import_openvino, read_openvino_config
    from osdhuman.pipelines.restore import use_openvino

    try:
        if cfg.backend == "openvino":
            import_openvino()  # the missing extra first: it is what the user must fix
        if use_openvino(cfg):
            import_openvino()
            read_openvino_config(cfg.weights)
            if cfg.device not in ("auto", "cpu"):
                raise UsageError(f"--device {cfg.device}: the OpenVINO backend runs on the CPU; use --backend torch "
                                 f"with the PyTorch weights for a GPU")
    except WeightsError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from osdhuman.cli.weights_env import HOW_TO
    from osdhuman.models import WeightsError
    from osdhuman.pipelines import OutputCollisionError, RestoreConfig, restore_paths
    from osdhuman.pipelines.restore import collect_inputs

    cfg = resolve_config(RestoreConfig, args, _flag_overrides(args))

    if (problem := output_name_problem(cfg.suffix)) is not None:  # before any work: names stay in OUTDIR
        raise UsageError(f"--suffix {cfg.suffix!r}: {problem}")
    if cfg.bit_depth == 16 and (cfg.ext == "jpg" or cfg.people):
        raise UsageError("--bit-depth 16 writes 16-bit PNG: it cannot go with --ext jpg or --people")
    if cfg.weights is None and cfg.base_model is None:
        raise UsageError("no weights configured.\n" + HOW_TO + "\n(--base-model tiny runs an untrained toy model for smoke tests)")
    # with --recursive an output inside a folder input would be restored again on the next run
    check_output_dir(args.output, args.inputs if cfg.recursive else ())
    check_device(cfg.device)
    _check_backend(cfg)
    files, missing = collect_inputs(args.inputs, cfg.recursive)
    if not files:  # nothing to do: say why before loading a model
        given = {str(Path(a)) for a in args.inputs}  # an argument's own problem first; then listing skips
        named = [(f, why) for f, why in missing if f in given]
        if named:
            f, why = named[0]
            raise UsageError(f"{f}: " + ("no such file or folder" if why == "missing_file" else why))
        where = ", ".join(args.inputs)
        raise UsageError(f"{where}: no image files found" + ("" if cfg.recursive else " (--recursive descends into sub-folders)"))

    detector, boxes = check_people_args(cfg, args, files)
    logged: list[str] = []

    def log(msg: str) -> None:
        logged.append(msg)
        print(msg, file=sys.stderr)

    try:
        report = restore_paths(args.inputs, args.output, cfg, progress=not args.no_progress, log=log,
                               detector=detector, boxes=boxes)
    except OutputCollisionError as exc:
        raise UsageError(str(exc)) from None
    except WeightsError as exc:
        print(f"osdhuman restore: weights error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad pipeline settings (tile sizes, ...)
        raise UsageError(str(exc)) from None
    n_ok, n_bad = len(report.restored), len(report.failed)
    print(f"restored {n_ok} image(s) into {args.output} in {report.seconds:.1f} s"
          + (f"; kept {len(report.kept)} unchanged from an earlier run" if report.kept else "")
          + (f"; {n_bad} skipped (see {args.output}/restore_report.json)" if n_bad else "")
          + (" [UNTRAINED model: not real restorations]" if report.untrained else ""))
    for path, reason in report.failed:
        if not any(path in m for m in logged):  # unreadable images were already logged as they came
            print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 0 if n_ok + len(report.kept) > 0 else 1
