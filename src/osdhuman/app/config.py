"""Settings of ``osdhuman app`` (typed; the command line fills them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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


class FolderNotAllowed(ValueError):
    """A folder typed into the Dataset or Results tab outside the ones the app may read."""


def allowed_roots(cfg: AppConfig) -> list[Path]:
    """The folders the Dataset and Results tabs may read (with everything under them): the ones
    given at start (--dataset, --results) and the folder the app was started in."""
    return [Path(p).expanduser().resolve() for p in (cfg.dataset_dir, cfg.results_dir, os.getcwd()) if p]


def allowed_folder(path: str, roots: list[Path]) -> Path:
    """``path`` (relative ones: to the start folder) resolved, if it lies under one of ``roots``;
    FolderNotAllowed otherwise, so that a browser cannot make the server read any folder."""
    p = Path(path).expanduser()
    p = (p if p.is_absolute() else roots[-1] / p).resolve()
    if not any(p.is_relative_to(r) for r in roots):
        shown = ", ".join(str(r) for r in roots)
        raise FolderNotAllowed(f"{path}: the app reads only the folders given at start and the folder it was "
                               f"started in, and what is under them ({shown})")
    return p
