"""Settings of ``osdhuman app`` (typed; the command line fills them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AppConfig:
    host: str = "127.0.0.1"  # loopback by default; anything else is reachable from the network
    port: int = 7860
    weights: str | None = None  # trained OSDHuman weights folder (else OSDHUMAN_WEIGHTS)
    base_model: str | None = None
    hfie_encoder: str | None = None
    device: str = "auto"
    dataset_dir: str | None = None  # a build-dataset output folder to open in the Dataset tab
    results_dir: str | None = None  # an evaluate output folder to open in the Results tab
    work_dir: str | None = None  # where uploads are restored (default: a temporary folder)
    max_side: int = 4096  # largest output side the Restore tab accepts
