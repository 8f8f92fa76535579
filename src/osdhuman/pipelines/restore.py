"""``restore_paths``: restore image files / folders into an output folder (what
``osdhuman restore`` runs), and ``weights_from_env`` for the demo.

Environment variables (defaults for the CLI flags and the demo):
  OSDHUMAN_WEIGHTS        folder of trained OSDHuman weights (osdhuman_weights.safetensors + osdhuman_config.json)
  OSDHUMAN_BASE_MODEL     SD-2.1-base diffusers folder or hub id (stabilityai/stable-diffusion-2-1-base)
  OSDHUMAN_HFIE_ENCODER   RAM checkpoint ram_swin_large_14m.pth (HFIE's image encoder)
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from osdhuman.config import SEED_MAX, rule, save_config, to_dict
from osdhuman.imageio import (
    ImageReadError,
    entry_kind,
    read_rgb,
    scan_images,
    write_image,
)
from osdhuman.models import WeightsError
from osdhuman.models.openvino_export import is_openvino_export
from osdhuman.outputs import (
    OutputLock,
    ResumeLog,
    WriterPool,
    atomic_write_text,
    encode_image,
    input_fingerprint,
    output_name_problem,
    params_key,
    path_identity,
    sweep_temp_files,
    unique_output_path,
)
from osdhuman.pipelines.contact_sheet import contact_sheet
from osdhuman.pipelines.openvino_backend import OpenVINOPipeline
from osdhuman.pipelines.people import PeopleConfig
from osdhuman.pipelines.people_paths import InputRejected, PeopleRun, prepare_image
from osdhuman.pipelines.pipeline_restoration import RestorationPipeline
from osdhuman.pipelines.progress import WorkProgress, units_of_file

__all__ = [
    "OutputCollisionError",
    "RestoreConfig",
    "RestoreReport",
    "collect_inputs",
    "plan_outputs",
    "restore_paths",
]

CONFIG_NAME = "restore_config.yaml"
REPORT_NAME = "restore_report.json"


@dataclass
class RestoreConfig:
    """Everything ``osdhuman restore`` needs; saved as OUTDIR/restore_config.yaml."""

    weights: str | None = None  # trained weights (any supported format, or a cached hub id); None -> untrained
    base_model: str | None = None  # None -> the one saved with the weights, else SD-2.1-base
    hfie_encoder: str | None = None  # RAM checkpoint path (None -> saved path)
    fuse: bool = True  # fold the LoRA into the base weights at load (faster); False keeps it apart
    timestep: int | None = rule(None, ge=0)  # None -> recorded with the weights (999 for OSDHuman; HAODiff uses 199)
    # None -> recorded with the weights; dape_lq when ``dape`` is set
    prompt_source: Literal["hfie_lq", "hfie_hq", "text", "null", "dape_lq", "dape_hq"] | None = None
    # DAPE prompts (OSEDiff): its DAPE.pth over the RAM checkpoint ``hfie_encoder``, RAM's tag files
    dape: str | None = None
    ram_tag_list: str | None = None  # None -> beside the RAM checkpoint
    ram_tag_thresholds: str | None = None  # None -> <tag list stem>_threshold.txt beside the tag list
    dape_prompt: str | None = None  # OSEDiff's --prompt, appended: "tags, TEXT,"
    latent_mode: Literal["mode", "sample"] | None = None  # None -> recorded (OSEDiff: sample, ours: mode)
    guidance_scale: float | None = rule(None, ge=0)  # CFG with the weights' negative prompt; None -> the family's (HAODiff 3.5)
    bit_depth: Literal[8, 16] = 8  # 16: 16-bit RGB PNG outputs (values to 1/65535)
    latent_blend: Literal["smooth", "gaussian"] | None = None  # latent tiles; None -> the family's (HAODiff: gaussian)
    tile_size: int = rule(512, ge=64, multiple_of=8)
    tile_overlap: int = rule(64, ge=0, multiple_of=8)
    vae_tile_size: int | None = rule(None, ge=64, multiple_of=8)
    color_fix: Literal["adain", "wavelet", "none"] | None = None  # None -> the family's (HAODiff wavelet, OSDFace none, else adain)
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    device: str = "auto"
    batch_size: int = rule(1, ge=1)
    ext: Literal["png", "jpg", "auto"] = "auto"  # auto: keep png/jpg/webp, else png
    suffix: str = ""
    recursive: bool = False
    jpeg_quality: int = rule(95, ge=1, le=100)
    seed: int = rule(0, ge=0, le=SEED_MAX)
    # resume (default): keep an output whose recorded input + settings match, redo one that
    # differs, never replace a file restore did not write; true writes every output again
    overwrite: bool = False
    people: bool = False  # person-aware: restore HQ-ACF crops of each person, paste them back (people.py)
    person: PeopleConfig = field(default_factory=PeopleConfig)  # crop size, context margin, feather, people_only
    save_crops: bool = False  # people mode: OUTDIR/crops/<name>_people.png before/after contact sheets
    upscale: float = rule(1.0, ge=0)  # resize the input by this (bicubic) before restoring: the output is this times the input
    max_side: int | None = rule(8192, ge=1)  # refuse an output whose longer side would exceed this (memory guard)
    # auto: OpenVINO for an OpenVINO export folder (`export --format openvino`), PyTorch otherwise
    backend: Literal["auto", "torch", "openvino"] = "auto"


@dataclass
class RestoreReport:
    restored: list[tuple[str, str]] = field(default_factory=list)  # (input, output)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    untrained: bool = False
    seconds: float = 0.0
    out_dir: str = ""
    kept: list[tuple[str, str]] = field(default_factory=list)  # (input, output) left from an earlier run
    people: list[dict] = field(default_factory=list)  # people mode: boxes, crops, timings per photo
    work_units: int = 0  # UNet tile passes of the run (progress units)
    model: dict = field(default_factory=dict)  # family, timestep, guidance, latent, colour fix, overrides
    backend: str = ""  # torch | openvino
    precision: str = ""  # what the backend computes in (an OpenVINO export: its precision)

    def to_dict(self) -> dict:
        d = {"restored": [{"input": a, "output": b} for a, b in self.restored],
             "failed": [{"input": a, "reason": b} for a, b in self.failed],
             "kept": [{"input": a, "output": b} for a, b in self.kept],
             "untrained_model": self.untrained, "seconds": round(self.seconds, 3),
             "work_units": self.work_units, "backend": self.backend, "precision": self.precision}
        if self.model:
            d["model"] = self.model
        if self.people:
            d["people"] = self.people
        return d


class OutputCollisionError(ValueError):
    """An output path would overwrite an input file (nothing was written)."""


# ---------------------------------------------------------------------------------------
def collect_inputs(inputs: Sequence[str | Path], recursive: bool = False) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Files and folders -> [(file, relative output stem path)], [(missing, reason)]."""
    found: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files, skipped = scan_images(p, recursive=recursive)
            found += [(f, f.relative_to(p)) for f in files]
            missing += skipped  # not an image, dangling link, link loop, ... (named in the report)
            if not files and not skipped:  # a folder argument (even one named dir.jpg) with nothing to restore
                missing.append((str(p), "directory (no image files in it" + (
                    ")" if recursive else "; --recursive descends into sub-folders)")))
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:  # said as a folder listing says it
            kind = entry_kind(p) if os.path.lexists(p) else "missing_file"
            missing.append((str(p), kind if kind in ("dangling_link", "link_loop", "unreadable_entry", "missing_file")
                            else "not_a_regular_file"))
    return found, missing


def _out_ext(src: Path, ext: str) -> str:
    if ext != "auto":
        return "." + ext
    s = src.suffix.lower()
    return s if s in (".png", ".jpg", ".jpeg", ".webp") else ".png"


def plan_outputs(files: list[tuple[Path, Path]], out_dir: Path, ext: str, suffix: str) -> list[Path]:
    """One output path per input; refuses (OutputCollisionError) a suffix that is not part of one
    file name and any output that would overwrite an input; de-duplicates clashing names
    (``name-2.png``, osdhuman.outputs.unique_output_path)."""
    if (problem := output_name_problem(suffix)) is not None:
        raise OutputCollisionError(f"--suffix {suffix!r}: {problem}")
    inputs = {f.resolve() for f, _ in files}
    used: set[Path] = set()
    outs = []
    for src, rel in files:
        cand = unique_output_path(out_dir / rel.parent / f"{rel.stem}{suffix}{_out_ext(src, ext)}", used)
        if cand.resolve() in inputs:
            raise OutputCollisionError(
                f"{cand}: writing here would overwrite an input image; choose another output folder "
                f"(-o) or a suffix (--suffix _restored)")
        used.add(cand.resolve())
        outs.append(cand)
    return outs


MIN_FALLBACK_TILE = 128  # pixels: the smallest tile the out-of-memory fallback tries


def restore_with_fallback(pipeline, arrays: list[np.ndarray], log, tile: int | None = None) -> list[np.ndarray]:
    """``pipeline(arrays)`` as uint8 arrays; on out-of-memory, first split the batch in halves,
    then (one image left) halve the latent and VAE tile sizes down to ``MIN_FALLBACK_TILE``
    before giving up. Results are the same images the pipeline would give at that tiling."""

    c = pipeline.config
    kwargs = {}
    if tile is not None:
        overlap = c.tile_overlap if c.tile_overlap < tile // 2 else tile // 4 // 8 * 8
        kwargs = {"tile_size": tile, "vae_tile_size": min(tile, c.vae_tile_size or c.tile_size),
                  "tile_overlap": overlap}
    try:
        out_type = getattr(pipeline, "output_type", "np")  # "np16" for 16-bit outputs
        return list(pipeline(arrays, batch_size=len(arrays), output_type=out_type, **kwargs).images)
    except torch.OutOfMemoryError:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(arrays) > 1:
            half = (len(arrays) + 1) // 2
            log(f"osdhuman restore: out of memory at batch {len(arrays)}; retrying with batch {half}")
            return (restore_with_fallback(pipeline, arrays[:half], log, tile)
                    + restore_with_fallback(pipeline, arrays[half:], log, tile))
        current = tile or c.tile_size
        smaller = current // 2 // 8 * 8
        if smaller < MIN_FALLBACK_TILE:
            raise
        log(f"osdhuman restore: out of memory with {current}px tiles; retrying with {smaller}px tiles")
        return restore_with_fallback(pipeline, arrays, log, smaller)


def restore_paths(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    cfg: RestoreConfig | None = None,
    *,
    pipeline: RestorationPipeline | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    detector: Callable[[np.ndarray], np.ndarray] | None = None,
    boxes: dict[str, np.ndarray] | None = None,
) -> RestoreReport:
    """Restore every image in ``inputs`` (files or folders) into ``out_dir``, under its lock.

    Unreadable files are skipped and listed in the report (and OUTDIR/restore_report.json);
    the resolved config is saved as OUTDIR/restore_config.yaml. Never writes over an input.
    With ``cfg.people``, person boxes come from ``detector`` (RGB uint8 -> (N, 4) boxes) or
    ``boxes`` ({input path: (N, 4) boxes}, e.g. from ``box_file.load_box_file``).
    """
    cfg = cfg or RestoreConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    files, failed = collect_inputs(inputs, cfg.recursive)
    outs = plan_outputs(files, out_dir, "png" if cfg.bit_depth == 16 else cfg.ext, cfg.suffix)
    report = RestoreReport(failed=list(failed), out_dir=str(out_dir))
    t0 = time.perf_counter()
    pipeline = pipeline if pipeline is not None else _load_pipeline(cfg, log)
    if getattr(pipeline, "weights_summary", ""):
        log(f"osdhuman restore: {pipeline.weights_summary}")
    report.untrained = bool(pipeline.untrained)
    report.model = pipeline.settings() if hasattr(pipeline, "settings") else {}
    for note in report.model.get("overrides", []):
        log(f"osdhuman restore: WARNING: {note}")
    report.backend = getattr(pipeline, "backend_name", "torch")
    report.precision = getattr(pipeline, "precision_name", "") or cfg.precision
    out_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(out_dir):
        _restore_locked(files, outs, out_dir, cfg, pipeline, report, progress, log, detector, boxes)
        report.seconds = time.perf_counter() - t0
        atomic_write_text(out_dir / REPORT_NAME, json.dumps(report.to_dict(), indent=2))  # last
    return report


def _restore_locked(files: list[tuple[Path, Path]], outs: list[Path], out_dir: Path, cfg: RestoreConfig,
                    pipeline: RestorationPipeline, report: RestoreReport, progress: bool,
                    log: Callable[[str], None], detector, boxes) -> None:
    """The run inside the folder's lock: resume records, the batches, the writer pool."""
    records = _open_records(out_dir, cfg)  # sweep temp files, resume records
    files, outs = _skip_done(files, outs, records, _settings_key(cfg), report, log)
    pool = WriterPool()
    save_config(cfg, out_dir / CONFIG_NAME)
    if report.untrained:
        _warn_untrained(pipeline, log)
    bar = WorkProgress(sum(units_of_file(f, cfg.upscale, cfg.tile_size, cfg.tile_overlap) for f, _ in files), progress)
    target = getattr(getattr(pipeline, "backend", None), "progress_target", None)
    if target is not None:
        bar.watch(target)
    people = PeopleRun(cfg.person, lambda arrs: restore_with_fallback(pipeline, arrs, log), cfg.batch_size,
                       cfg.save_crops, cfg.tile_size, cfg.tile_overlap, log, bar) if cfg.people else None
    batch = _Batch(pipeline, people, pool, records, report, cfg, out_dir, log)
    for (src, _), dst in zip(files, outs):
        item = _read_and_prepare(src, cfg, detector, boxes, report, log)
        if item is not None:
            batch.add(src, dst, item)
    batch.flush()
    pool.drain()
    pool.close()
    report.work_units = bar.done
    bar.close()
    records.finish()


def use_openvino(cfg: RestoreConfig) -> bool:
    """Does this config restore with the OpenVINO backend? (WeightsError for a forced backend
    that does not fit the weights.)"""

    ov_folder = cfg.weights is not None and is_openvino_export(cfg.weights)
    if cfg.backend == "openvino" and not ov_folder:
        raise WeightsError(f"{cfg.weights}: --backend openvino needs an OpenVINO export folder; write one with "
                           f"`osdhuman export WEIGHTS -o OUT --format openvino`")
    if cfg.backend == "torch" and ov_folder:
        raise WeightsError(f"{cfg.weights}: an OpenVINO export runs with --backend openvino (or auto), not torch; "
                           f"pass the PyTorch weights it was exported from for --backend torch")
    return ov_folder


def _load_pipeline(cfg: RestoreConfig, log=None):
    if use_openvino(cfg):
        return OpenVINOPipeline.from_export(cfg.weights, log=log, tile_size=cfg.tile_size, tile_overlap=cfg.tile_overlap,
                                            vae_tile_size=cfg.vae_tile_size, color_fix=cfg.color_fix, seed=cfg.seed)
    if cfg.weights is None and cfg.base_model is None:
        raise WeightsError("no weights configured: RestoreConfig.weights and .base_model are both unset")
    pipe = RestorationPipeline.from_pretrained(
        cfg.weights, base_model=cfg.base_model, guidance_scale=cfg.guidance_scale,
        hfie_encoder=cfg.hfie_encoder, tile_size=cfg.tile_size, tile_overlap=cfg.tile_overlap,
        vae_tile_size=cfg.vae_tile_size, color_fix=cfg.color_fix, precision=cfg.precision, latent_blend=cfg.latent_blend,
        device=cfg.device, seed=cfg.seed, fuse=cfg.fuse, timestep=cfg.timestep,
        prompt_source=cfg.prompt_source or ("dape_lq" if cfg.dape else None),
        model_overrides=_model_overrides(cfg))
    pipe.output_type = "np16" if cfg.bit_depth == 16 else "np"
    return pipe


def _warn_untrained(pipeline, log) -> None:
    mc = pipeline.model_config
    base = mc.base_model
    why = (f"an untrained random preset ({base!r})" if mc.is_random else
           f"the base model {base!r} with NO trained OSDHuman weights (plain SD at t="
           f"{mc.timestep} with an untrained prompt head; pass --weights)")
    log(f"osdhuman restore: WARNING: the model is {why}; outputs are NOT restorations")


def _read_and_prepare(src: Path, cfg: RestoreConfig, detector, boxes, report: RestoreReport, log):
    """The input decoded and prepared (upscaled, person boxes found), or None (recorded, said)."""

    try:
        arr = read_rgb(src)
    except ImageReadError as exc:
        report.failed.append((str(src), exc.reason))
        log(f"osdhuman restore: skipped {exc}")
        return None
    try:
        return prepare_image(src, arr, cfg.upscale, cfg.max_side, cfg.people, detector, boxes)
    except InputRejected as exc:
        report.failed.append((str(src), str(exc)))
        log(f"osdhuman restore: skipped {src}: {exc}")
        return None


class _Batch:
    """Images waiting to be restored together (same size, at most ``batch_size``); each result
    goes to the writer pool. A failed batch is recorded per image and the run goes on."""

    def __init__(self, pipeline, people, pool, records, report, cfg, out_dir: Path, log):
        self.pipeline, self.people, self.pool, self.records = pipeline, people, pool, records
        self.report, self.cfg, self.out_dir, self.log = report, cfg, out_dir, log
        self.pending: list[tuple[Path, Path, np.ndarray]] = []
        self.prepared: list = []

    def add(self, src: Path, dst: Path, item) -> None:
        arr = item.image
        if self.people is not None:
            self.people.expect(item)
        full = len(self.pending) >= self.cfg.batch_size
        if self.pending and (full or (self.people is None and self.pending[0][2].shape != arr.shape)):
            self.flush()
        self.pending.append((src, dst, arr))
        self.prepared.append(item)

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            results = None
            if self.people is not None:
                results = self.people.run(self.prepared)
                res = [r.image for r in results]
            else:
                res = restore_with_fallback(self.pipeline, [a for _, _, a in self.pending], self.log)
        except Exception as exc:  # noqa: BLE001 - one failed batch is recorded; the job goes on
            for src, _, _ in self.pending:
                self.report.failed.append((str(src), f"restore_failed: {type(exc).__name__}: {exc}"))
        else:
            for k, ((src, dst, _), arr) in enumerate(zip(self.pending, res)):
                _submit_write(self.pool, self.records, self.report, src, dst, arr, self.cfg, self.out_dir)
                if results is not None:
                    _people_record(self.people, self.prepared[k], results[k], dst, self.out_dir, self.cfg, self.report)
        self.pending.clear()
        self.prepared.clear()


RECORDS_NAME = "restore_records.jsonl"


def _open_records(out_dir: Path, cfg: RestoreConfig) -> ResumeLog:
    sweep_temp_files(out_dir)
    return ResumeLog(out_dir, RECORDS_NAME, overwrite=cfg.overwrite).load()


def _model_overrides(cfg: RestoreConfig) -> dict:
    """RestoreConfig fields that override the model's configuration (None: as recorded)."""
    return {"dape_path": cfg.dape, "ram_tag_list": cfg.ram_tag_list, "ram_tag_thresholds": cfg.ram_tag_thresholds,
            "dape_prompt_suffix": cfg.dape_prompt, "latent_mode_infer": cfg.latent_mode}


def _settings_key(cfg: RestoreConfig) -> str:
    """What decides an output's pixels and format (not device / batch size / overwrite)."""

    # backend: decided by the weights (an OpenVINO export or not), which the key holds
    d = {k: v for k, v in to_dict(cfg).items() if k not in ("device", "batch_size", "recursive", "overwrite", "backend")}
    # the same path with new contents (retrained weights) must not keep the old outputs
    d["file_identities"] = {k: path_identity(v) for k, v in d.items() if isinstance(v, str) and k in _PATH_FIELDS}
    return params_key(d)


_PATH_FIELDS = ("weights", "base_model", "hfie_encoder", "dape", "ram_tag_list", "ram_tag_thresholds")


def _skip_done(files, outs, records: ResumeLog, key: str, report: RestoreReport, log):
    """Drop the images whose output is done (same input + settings); refuse to replace a stranger's file."""
    keep_files, keep_outs = [], []
    for (src, rel), dst in zip(files, outs):
        rel_out = dst.relative_to(records.folder).as_posix()
        try:
            fp = input_fingerprint(src)
        except OSError as exc:  # permission denied, I/O error: recorded like a file that does not decode
            report.failed.append((str(src), f"unreadable_file ({exc.strerror or exc})"))
            log(f"osdhuman restore: skipped {src}: unreadable_file ({exc.strerror or exc})")
            continue
        d = records.decide(rel_out, fp, key)
        if d.action == "skip":
            report.kept.append((str(src), str(dst)))
            continue
        if d.action == "refuse":
            report.failed.append((str(src), f"output_exists ({dst} was not written by restore; --overwrite replaces it)"))
            continue
        if d.action == "redo":
            log(f"osdhuman restore: redoing {dst}: {d.why}")
        keep_files.append((src, rel))
        keep_outs.append(dst)
    return keep_files, keep_outs


def _submit_write(pool: WriterPool, records: ResumeLog, report: RestoreReport, src: Path, dst: Path,
                  arr: np.ndarray, cfg: RestoreConfig, out_dir: Path) -> None:
    """Encode + write ``arr`` on a writer thread; the report lists it once it is on disk."""
    rec = {"input_file": str(src), "output": dst.relative_to(out_dir).as_posix(),
           "input": input_fingerprint(src), "run_key": _settings_key(cfg)}

    def job() -> str:
        return records.write(rec, encode_image(arr, dst.suffix, cfg.jpeg_quality))

    pool.submit(job, then=lambda _digest: report.restored.append((str(src), str(dst))))


def _people_record(people, item, result, dst: Path, out_dir: Path, cfg: RestoreConfig, report: RestoreReport) -> None:
    """The report record of one person-aware photo, and its contact sheet (--save-crops)."""
    sheet = None
    if cfg.save_crops and result.crops_before:
        sheet_path = out_dir / "crops" / dst.relative_to(out_dir).parent / f"{dst.stem}_people.png"
        labels = [f"person {p.rank + 1}" for p in result.plan.people]
        write_image(contact_sheet(result.crops_before[::-1], result.crops_after[::-1], labels=labels[::-1]), sheet_path)
        sheet = str(sheet_path)
    report.people.append(people.record(item, result, str(dst), sheet, cfg.upscale))
