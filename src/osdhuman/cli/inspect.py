"""``osdhuman inspect WEIGHTS``: what a weights folder / file holds and what else it needs."""

from __future__ import annotations

import argparse
import json
import sys

# osdhuman.models is imported inside run: torch loads only when a file is inspected.


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect", help="describe a weights folder or file (family, parts, ranks, timestep, guidance, needs)",
        description="Read WEIGHTS as `restore --weights` would (every tensor checked) and print its family "
                    "(osdhuman, osediff, haodiff, osdface, lora), its parts, LoRA ranks and alpha, the timestep, "
                    "guidance, latent mode, colour fix and prompt it restores with, the files read and what else "
                    "a restore needs. No base model is loaded.")
    p.add_argument("weights", metavar="WEIGHTS", help="a weights folder or file")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from osdhuman.models import WeightsError
    from osdhuman.models.describe import describe_weights

    try:
        info = describe_weights(args.weights)
    except WeightsError as exc:
        print(f"osdhuman inspect: weights error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, False))
        elif isinstance(value, list):
            value = "; ".join(map(str, value)) or "nothing else"
        print(f"{key:>15}: {value}")
    return 0
