"""`osdhuman export` and `osdhuman export-encoder`: weights out of osdhuman.

    osdhuman export WEIGHTS -o OUT [--format diffusers] [--merge] [--base-model PATH_OR_ID]
    osdhuman export-encoder ram_swin_large_14m.pth -o encoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from osdhuman.cli import UsageError
from osdhuman.cli._common import output_lock

# osdhuman.models is imported inside the run functions: torch and diffusers load only for an export.


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write trained weights as a diffusers / peft LoRA folder with a model card",
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
        "  osdhuman export runs/osdhuman/final -o release/\n"
        "  osdhuman export runs/osdhuman/final -o release/ --merge   # also fused unet/ and vae/ folders\n"
        "  osdhuman export runs/osdhuman/final -o model_openvino/ --format openvino   # restore on a CPU\n")
    p.add_argument("weights", metavar="WEIGHTS", help="weights in any format `restore --weights` reads")
    p.add_argument("-o", "--output", "--out", "--output-dir", dest="output", required=True, metavar="OUT")
    p.add_argument("--format", choices=["diffusers", "openvino"], default="diffusers",
                   help="openvino: OpenVINO IR of the fused generator and HFIE, for `restore` on a CPU")
    p.add_argument("--precision", choices=["fp32", "bf16", "int8w"],
                   help="--format openvino: weights / compute precision (default: bf16 where the CPU computes it "
                        "natively, else fp32; int8w: 8-bit weights via nncf)")
    p.add_argument("--merge", action="store_true", help="also write fused diffusers folders OUT/merged/{unet,vae}")
    p.add_argument("--base-model", metavar="PATH_OR_ID", help="SD-2.1-base the weights were trained on "
                   "(default: the one they record; env OSDHUMAN_BASE_MODEL)")
    p.add_argument("--hfie-encoder", metavar="FILE", help="RAM checkpoint, only if the weights need one to build")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT")
    p.set_defaults(func=run)

    e = subparsers.add_parser(
        "export-encoder", help="keep only the image encoder of RAM's checkpoint (5.6 GB -> 0.8 GB safetensors)",
        description="Reads ram_swin_large_14m.pth (torch.load weights_only) and writes its Swin-L encoder and "
                    "image_proj as safetensors, which --hfie-encoder accepts.")
    e.add_argument("ram", metavar="RAM_CHECKPOINT")
    e.add_argument("-o", "--output", "--out", dest="output", required=True, metavar="FILE.safetensors")
    e.set_defaults(func=run_encoder)


def _card_facts(weights: Path) -> dict:
    """Training data and the last validation metrics, when the run folder records them."""
    facts: dict = {}
    for cand in (weights.parent / "config.yaml", weights.parent.parent / "config.yaml"):
        if cand.is_file():
            try:
                data = (yaml.safe_load(cand.read_text()) or {}).get("data", {})
            except yaml.YAMLError:
                data = {}
            if isinstance(data, dict) and data.get("source"):
                facts["training_data"] = str(data["source"])
            break
    for cand in (weights.parent / "metrics.jsonl", weights.parent.parent / "metrics.jsonl"):
        if cand.is_file():
            rows = []
            for line in cand.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            vals = [r for r in rows if any(str(k).startswith("val") for k in r)]
            if vals:
                facts["metrics"] = {k: v for k, v in vals[-1].items() if str(k).startswith("val") or k == "step"}
            break
    return facts


def run(args: argparse.Namespace) -> int:
    from osdhuman.models import WeightsError
    from osdhuman.models.export import export_diffusers
    from osdhuman.models.pretrained import load_pretrained

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"{out}: not empty; choose an empty folder or pass --overwrite")
    src = Path(args.weights)
    if src.exists() and out.resolve() == src.resolve():
        raise UsageError(f"{out}: the output folder must not be the weights folder")
    base = args.base_model or os.environ.get("OSDHUMAN_BASE_MODEL") or None
    if args.format == "openvino":
        return _run_openvino(args, out, base)
    if args.precision:
        raise UsageError("--precision applies to --format openvino only")
    try:
        model, summary = load_pretrained(args.weights, base_model=base, hfie_encoder_path=args.hfie_encoder)
        print(f"osdhuman export: {summary}", file=sys.stderr)
        facts = _card_facts(src) if src.exists() else {}

        with output_lock(out):  # a second export into this folder stops here
            export_diffusers(model, out, card=facts, merge=args.merge)
    except WeightsError as exc:
        print(f"osdhuman export: weights error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.weights} to {out} (diffusers LoRA + osdhuman side files + README.md)")
    return 0


def _run_openvino(args: argparse.Namespace, out: Path, base: str | None) -> int:
    """``--format openvino``: models/openvino_export.py."""
    from osdhuman.models import WeightsError
    from osdhuman.models.openvino_export import (
        OpenVINOMissing,
        default_precision,
        export_openvino,
        import_openvino,
    )
    from osdhuman.models.pretrained import load_pretrained

    if args.merge:
        raise UsageError("--merge applies to --format diffusers; an OpenVINO export is always fused")
    try:
        import_openvino(nncf=args.precision == "int8w")
    except OpenVINOMissing as exc:
        raise UsageError(str(exc)) from None
    precision = args.precision or default_precision()
    try:
        model, summary = load_pretrained(args.weights, base_model=base, hfie_encoder_path=args.hfie_encoder)
        print(f"osdhuman export: {summary}", file=sys.stderr)
        export_openvino(model, out, precision=precision, log=lambda m: print(f"osdhuman export: {m}", file=sys.stderr))
    except WeightsError as exc:
        print(f"osdhuman export: weights error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.weights} to {out} (OpenVINO IR, {precision}); restore with "
          f"`osdhuman restore PHOTOS -o OUT --weights {out}`")
    return 0


def run_encoder(args: argparse.Namespace) -> int:
    from osdhuman.models import WeightsError
    from osdhuman.models.hfie import export_ram_encoder

    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise UsageError(f"{out}: the output must end in .safetensors")
    if out.exists():
        raise UsageError(f"{out}: exists; choose another file name")
    try:
        path, n = export_ram_encoder(args.ram, out)
    except WeightsError as exc:
        print(f"osdhuman export-encoder: weights error: {exc}", file=sys.stderr)
        return 2
    size = path.stat().st_size / 2**30
    print(f"wrote {n} encoder tensors to {path} ({size:.2f} GiB); pass it with --hfie-encoder")
    return 0
