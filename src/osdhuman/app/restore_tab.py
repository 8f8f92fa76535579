"""What the Restore tab computes: uploads -> ``restore_paths`` (the function ``osdhuman
restore`` runs) into a per-run folder -> before/after pairs, person boxes drawn, timings and
the files to download. With no real weights configured only the tiny preset is offered, and
it is labelled UNTRAINED everywhere."""

from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from gradio.utils import get_upload_folder

from osdhuman.app.config import AppConfig
from osdhuman.app.draw import draw_boxes
from osdhuman.imageio import read_rgb

# osdhuman.models / osdhuman.pipelines / osdhuman.cli.weights_env (torch, diffusers) are imported inside the
# handlers, so the app's page is served before torch has loaded.

TRAINED = "trained weights"
TINY = "tiny preset (UNTRAINED)"
OPENVINO = "trained weights, OpenVINO (CPU)"  # offered when the weights folder is an OpenVINO export
MODES = {"whole image": (False, False), "people + background": (True, False), "people only": (True, True)}


def check_request(paths: list[str], tile) -> str | None:
    """Why a Restore request cannot run (one line), or None. The tab reads only files uploaded to it
    (Gradio's upload folder), never another path on the server; the tile is a pixel count the
    pipeline takes (a multiple of 8, at least 64)."""

    uploads = Path(get_upload_folder()).resolve()
    for p in paths:
        if not Path(p).resolve().is_relative_to(uploads):
            return f"{Path(p).name}: not a file uploaded to this app; upload the photo instead"
    if tile is None or isinstance(tile, bool) or not float(tile).is_integer() or int(tile) < 64 or int(tile) % 8:
        return f"tile size {tile!r}: a whole number of pixels, a multiple of 8 and at least 64"
    return None


@dataclass
class RestoredPhoto:
    name: str
    before: np.ndarray | None = None  # the input at the output's size (for the slider)
    after: np.ndarray | None = None
    boxes: np.ndarray | None = None  # the output with person boxes drawn
    output: str | None = None  # file to download
    timings: dict = field(default_factory=dict)
    error: str | None = None


class RestoreService:
    """Holds the loaded pipelines (one per model and precision) and the run folders."""

    def __init__(self, cfg: AppConfig):
        from osdhuman.cli.weights_env import weights_from_env

        self.cfg = cfg
        env = weights_from_env()
        self.weights = cfg.weights or env.weights
        self.base_model = cfg.base_model or env.base_model
        self.hfie = cfg.hfie_encoder or env.hfie_encoder
        self.trained = bool(self.weights) and (cfg.weights is not None or env.configured)
        from osdhuman.models.openvino_export import is_openvino_export

        self.openvino = self.trained and is_openvino_export(self.weights)
        self.work = Path(cfg.work_dir or tempfile.mkdtemp(prefix="osdhuman-app-"))
        self._pipes: dict = {}
        self._detector = None
        self._runs = 0
        self._lock = threading.Lock()

    # ---- what the tab shows before any run
    def models(self) -> list[str]:
        if self.openvino:
            return [OPENVINO, TINY]
        return [TRAINED, TINY] if self.trained else [TINY]

    def banner(self) -> str:
        if self.openvino:
            return f"Model: OpenVINO export of trained OSDHuman weights from `{self.weights}` (runs on the CPU)."
        if self.trained:
            return f"Model: trained OSDHuman weights from `{self.weights}`."
        return ("**No real weights configured** (set OSDHUMAN_WEIGHTS, OSDHUMAN_BASE_MODEL, OSDHUMAN_HFIE_ENCODER "
                "or pass --weights to `osdhuman app`). Offered instead: the **tiny preset, UNTRAINED** - a random toy "
                "model; its outputs are NOT restorations.")

    # ---- running
    def _pipeline(self, model: str, precision: str):
        from osdhuman.pipelines import RestorationPipeline

        key = (model, precision)
        if key not in self._pipes:
            if model == OPENVINO and self.openvino:
                from osdhuman.pipelines.openvino_backend import OpenVINOPipeline

                pipe = OpenVINOPipeline.from_export(self.weights)
            elif model == TRAINED and self.trained:
                pipe = RestorationPipeline.from_pretrained(self.weights, base_model=self.base_model,
                                                           hfie_encoder=self.hfie, precision=precision, device=self.cfg.device)
            else:
                pipe = RestorationPipeline.from_pretrained(None, base_model="tiny", precision=precision, device=self.cfg.device)
            self._pipes[key] = pipe
        return self._pipes[key]

    def _detect(self):
        if self._detector is None:
            from osdhuman.curation.config import DetectorConfig
            from osdhuman.curation.detect import make_detector

            self._detector = make_detector(DetectorConfig())
        return self._detector

    def run(self, files: list[str], model: str = TINY, mode: str = "whole image", upscale: float = 1.0,
            color_fix: str = "adain", tile: int = 512, precision: str = "fp32") -> tuple[list[RestoredPhoto], dict]:
        """Restore ``files``; returns one RestoredPhoto per file and the run's restore_report."""
        from osdhuman.pipelines.restore import RestoreConfig, restore_paths

        people, people_only = MODES.get(mode, (False, False))
        with self._lock:
            self._runs += 1
            out = self.work / f"run{self._runs:04d}"
            pipe = self._pipeline(model, precision)
            overlap = min(64, tile // 4 // 8 * 8)
            pipe.config = replace(pipe.config, tile_size=tile, tile_overlap=overlap, color_fix=color_fix)
            rc = RestoreConfig(tile_size=tile, tile_overlap=overlap, color_fix=color_fix, precision=precision,
                               people=people, upscale=float(upscale), max_side=self.cfg.max_side, ext="png",
                               base_model="tiny" if model == TINY else self.base_model, weights=None if model == TINY else self.weights)
            rc.person = replace(rc.person, people_only=people_only)
            log: list[str] = []
            report = restore_paths(files, out, rc, pipeline=pipe, progress=False, log=log.append,
                                   detector=self._detect() if people else None)
        return self._views(files, report, log), json.loads((out / "restore_report.json").read_text())

    @staticmethod
    def _views(files: list[str], report, log: list[str]) -> list[RestoredPhoto]:
        outputs = dict(report.restored)
        failed = dict(report.failed)
        people = {r["input"]: r for r in report.people}
        views = []
        for f in files:
            v = RestoredPhoto(Path(f).name)
            if f in failed or f not in outputs:
                v.error = failed.get(f, "not restored")
                views.append(v)
                continue
            after = read_rgb(outputs[f])
            before = read_rgb(f)
            if before.shape != after.shape:
                before = cv2.resize(before, (after.shape[1], after.shape[0]), interpolation=cv2.INTER_CUBIC)
            rec = people.get(f)
            v.before, v.after, v.output = before, after, outputs[f]
            if rec:
                boxes = [p["box"] for p in rec["people"]]
                v.boxes = draw_boxes(after, boxes, [f"#{p['rank'] + 1}" for p in rec["people"]],
                                     squares=[p["crop"] for p in rec["people"]])
                v.timings = dict(rec["seconds"])
                notes = [m for m in log if f in m and "whole image" in m]
                if notes:
                    v.timings["note"] = notes[0].split(": ", 2)[-1]
            else:
                v.boxes = after
                v.timings = {"total": round(report.seconds, 3)}
            views.append(v)
        return views
