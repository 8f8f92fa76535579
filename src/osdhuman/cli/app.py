"""``osdhuman app``: the local web app (Restore, Dataset, Results tabs)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from osdhuman.app.config import AppConfig
from osdhuman.cli import UsageError
from osdhuman.cli._common import check_device

# osdhuman.app.server is imported inside run: it needs the optional gradio (osdhuman[app]).


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app", help="local web app: restore photos, browse a dataset and evaluation results",
        description="Serve the OSDHuman web app on 127.0.0.1 (no share links, no analytics, nothing fetched "
                    "from the internet). Weights as for `osdhuman restore` (flags or OSDHUMAN_* variables); "
                    "without them only the UNTRAINED tiny preset is offered.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others warn)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--weights", metavar="DIR", help="trained OSDHuman weights folder (env OSDHUMAN_WEIGHTS)")
    p.add_argument("--base-model", metavar="PATH_OR_ID", help="SD-2.1-base diffusers folder (env OSDHUMAN_BASE_MODEL)")
    p.add_argument("--hfie-encoder", metavar="FILE", help="RAM ram_swin_large_14m.pth (env OSDHUMAN_HFIE_ENCODER)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--dataset", metavar="DIR", help="a build-dataset output folder to open in the Dataset tab")
    p.add_argument("--results", metavar="DIR", help="an evaluate output folder to open in the Results tab")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_device(args.device)

    if importlib.util.find_spec("gradio") is None:
        raise UsageError("the web app needs gradio: pip install 'osdhuman[app]'")
    for flag, d, marker in (("--dataset", args.dataset, "manifest.parquet"), ("--results", args.results, "per_image.csv")):
        if d and not (Path(d) / marker).is_file():
            raise UsageError(f"{flag} {d}: no {marker} there")
    from osdhuman.app.server import AppStartError, launch

    cfg = AppConfig(host=args.host, port=args.port, weights=args.weights, base_model=args.base_model,
                    hfie_encoder=args.hfie_encoder, device=args.device, dataset_dir=args.dataset, results_dir=args.results)
    try:
        from osdhuman.app.server import check_port

        check_port(cfg.host, cfg.port)
    except AppStartError as exc:
        raise UsageError(str(exc)) from None
    print(f"osdhuman app: serving on http://{cfg.host}:{cfg.port} (Ctrl+C stops)", file=sys.stderr)
    try:
        launch(cfg)
    except KeyboardInterrupt:
        return 0
    except AppStartError as exc:
        print(f"osdhuman app: error: {exc}", file=sys.stderr)
        return 1
    return 0
