"""Training checkpoints: everything needed to resume exactly, no pickles, atomic on disk.

Layout of one checkpoint (``OUTPUT/checkpoints/step-00000100/``)::

    weights/                          model.save_weights(): what `osdhuman restore --weights` reads
    trainable.safetensors             every trainable tensor (generator + regularizer), exact
    optimizer-<name>.safetensors      optimizer state tensors, keyed "<param name>/<state key>"
    optimizer-<name>.json             param groups (hyper-parameters + param names), scalar state
    rng.safetensors                   torch CPU / CUDA and numpy RNG arrays
    state.json                        step, data position, python RNG, counters, config
    COMPLETE                          written last: {"step", "files": {relpath: {size, sha256}}};
                                      a folder without it is ignored

A checkpoint is assembled in ``.tmp-step-...`` beside the others and renamed into place, so
a run killed while saving leaves either the previous complete checkpoints or the new one,
never a half-written one that loads. ``latest`` is the highest complete step whose files
all match the sizes and sha256 sums in its ``COMPLETE``; a damaged newer checkpoint is
skipped (with the file and the reason) in favour of the newest intact one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from osdhuman.outputs import named_os_error, os_error_at_final, replace_dir, save_safetensors

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint_state",
    "find_latest",
    "resolve_resume",
    "resolve_resume_verified",
    "verify_checkpoint",
    "list_checkpoints",
    "rotate_checkpoints",
    "optimizer_state_to_files",
    "optimizer_state_from_files",
    "capture_rng",
    "restore_rng",
    "save_tensors",
    "sweep_stale_temp",
]

FORMAT_VERSION = 1
_STEP_RE = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, incomplete, or not matching the run)."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    try:
        with open(path, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # a full disk raises from write() with no file name
        raise named_os_error(exc, path) from None


def save_tensors(tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors file of contiguous CPU copies (shared storage is fine: each is cloned)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_safetensors(flat, path, metadata, fsync=True)  # metadata sorted: same bytes in every process


# --- optimizer state: tensors to safetensors, structure to JSON ---------------------------

def optimizer_state_to_files(opt: torch.optim.Optimizer, names: Mapping[int, str], stem: Path) -> None:
    """Write ``stem.safetensors`` + ``stem.json``. ``names``: id(param) -> stable parameter name."""
    sd = opt.state_dict()
    index_to_name: dict[int, str] = {}
    flat_params = [p for g in opt.param_groups for p in g["params"]]
    for idx, p in enumerate(flat_params):
        if id(p) not in names:
            raise CheckpointError("optimizer holds a parameter without a name (not a model parameter?)")
        index_to_name[idx] = names[id(p)]
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        pname = index_to_name[int(idx)]
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{pname}/{key}"] = val
            else:
                scalars.setdefault(pname, {})[key] = val
    groups = []
    for g in sd["param_groups"]:
        hp = {k: v for k, v in g.items() if k != "params"}
        for k, v in list(hp.items()):
            if isinstance(v, torch.Tensor):
                hp[k] = v.tolist()
            elif isinstance(v, tuple):
                hp[k] = list(v)
        groups.append({"hyper": hp, "params": [index_to_name[int(i)] for i in g["params"]]})
    save_tensors(tensors, stem.with_suffix(".safetensors"))
    _write_json(stem.with_suffix(".json"), {"format": FORMAT_VERSION, "type": type(opt).__name__,
                                            "param_groups": groups, "scalar_state": scalars})


def optimizer_state_from_files(opt: torch.optim.Optimizer, names: Mapping[int, str], stem: Path) -> None:
    """Load what :func:`optimizer_state_to_files` wrote into ``opt`` (same parameters by name)."""
    meta = json.loads(stem.with_suffix(".json").read_text())
    tensors = load_file(str(stem.with_suffix(".safetensors")))
    if meta.get("type") != type(opt).__name__:
        raise CheckpointError(f"{stem}.json: optimizer type {meta.get('type')} != {type(opt).__name__}")
    flat_params = [p for g in opt.param_groups for p in g["params"]]
    name_to_index = {names[id(p)]: i for i, p in enumerate(flat_params)}
    if len(meta["param_groups"]) != len(opt.param_groups):
        raise CheckpointError(f"{stem}.json: {len(meta['param_groups'])} param groups, optimizer has {len(opt.param_groups)}")
    groups = []
    for saved, live in zip(meta["param_groups"], opt.param_groups):
        live_names = [names[id(p)] for p in live["params"]]
        if saved["params"] != live_names:
            missing = sorted(set(live_names) ^ set(saved["params"]))[:3]
            raise CheckpointError(f"{stem}.json: parameters differ from the model's (e.g. {missing})")
        hp = dict(saved["hyper"])
        for k, v in hp.items():  # lists back to the tuples torch uses (betas)
            if isinstance(live.get(k), tuple):
                hp[k] = tuple(v)
        groups.append({**hp, "params": [name_to_index[n] for n in saved["params"]]})
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        pname, skey = key.rsplit("/", 1)
        state.setdefault(name_to_index[pname], {})[skey] = val
    for pname, sc in meta.get("scalar_state", {}).items():
        state.setdefault(name_to_index[pname], {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": groups})


# --- RNG -----------------------------------------------------------------------------------

def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) of the torch CPU / CUDA, numpy and python RNG states."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    js = {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [py[0], list(py[1]), py[2]]}
    return tensors, js


def restore_rng(tensors: Mapping[str, torch.Tensor], js: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8))
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k].to(torch.uint8) for k in cuda]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    name, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    v, st, g = js["python"]
    random.setstate((v, tuple(st), g))


# --- checkpoints ---------------------------------------------------------------------------

def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, sorted by step."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_RE.match(d.name)
        if m and d.is_dir() and (d / "COMPLETE").is_file() and (d / "state.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def find_latest(root: Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _file_sums(folder: Path) -> dict[str, dict[str, Any]]:
    """relative path -> {size, sha256} of every file under ``folder`` (COMPLETE excluded)."""
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "COMPLETE"
    }


def verify_checkpoint(path: Path) -> None:
    """CheckpointError naming the first damaged file of checkpoint ``path`` (and what is wrong)."""
    path = Path(path)
    try:
        complete = json.loads((path / "COMPLETE").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path / 'COMPLETE'}: missing (the checkpoint was not finished)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / 'COMPLETE'}: unreadable ({exc})") from None
    files = complete.get("files") if isinstance(complete, dict) else None
    if files is None:  # written before checksums existed: cannot be verified, trusted as before
        return
    for rel, want in files.items():
        f = path / rel
        try:
            size = f.stat().st_size
        except OSError:
            raise CheckpointError(f"{f}: missing") from None
        if size != want["size"]:
            raise CheckpointError(f"corrupt: {f}, expected {want['size']} bytes, found {size}")
        if _sha256(f) != want["sha256"]:
            raise CheckpointError(f"corrupt: {f}, expected sha256 {want['sha256'][:12]}..., the file differs")


def resolve_resume_verified(resume: str, ckpt_root: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """Like :func:`resolve_resume`, checking checksums: (checkpoint, [(skipped newer checkpoint, why)]).

    ``latest`` (or a run / checkpoints folder) falls back to the newest intact checkpoint;
    an explicit checkpoint folder that is damaged is an error.
    """
    path = Path(resume)
    roots = [ckpt_root] if resume == "latest" else (
        [path / "checkpoints", path] if path.is_dir() and not (path / "state.json").exists() else [])
    if not roots:
        chosen = resolve_resume(resume, ckpt_root)
        if chosen is not None:
            verify_checkpoint(chosen)
        return chosen, []
    skipped: list[tuple[Path, str]] = []
    for root in roots:
        for _, d in reversed(list_checkpoints(root)):
            try:
                verify_checkpoint(d)
            except CheckpointError as exc:
                skipped.append((d, str(exc)))
                continue
            return d, skipped
    if skipped:
        raise CheckpointError(f"no intact checkpoint in {roots[0]}: " + "; ".join(f"{d.name}: {why}" for d, why in skipped))
    if resume != "latest":
        raise CheckpointError(f"{path}: no complete training checkpoint there")
    return None, []


def resolve_resume(resume: str, ckpt_root: Path) -> Path | None:
    """``latest`` -> newest complete checkpoint under ckpt_root (None if there is none yet);
    a path -> that checkpoint folder (error if it is not a complete checkpoint)."""
    if resume == "latest":
        return find_latest(ckpt_root)
    path = Path(resume)
    if path.is_dir() and not (path / "state.json").exists():
        # an output dir or its checkpoints/ folder
        for cand in (path / "checkpoints", path):
            latest = find_latest(cand)
            if latest is not None:
                return latest
    if not (path / "COMPLETE").is_file() or not (path / "state.json").is_file():
        raise CheckpointError(f"{path}: not a complete training checkpoint (no COMPLETE / state.json)")
    return path


def save_checkpoint(
    root: Path,
    step: int,
    *,
    write_weights: Callable[[Path], Any],
    trainable: Mapping[str, torch.Tensor],
    optimizers: Mapping[str, torch.optim.Optimizer],
    param_names: Mapping[int, str],
    state: dict[str, Any],
) -> Path:
    """Atomically write checkpoint ``root/step-XXXXXXXX`` and return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        write_weights(tmp / "weights")
        save_tensors(trainable, tmp / "trainable.safetensors")
        for name, opt in optimizers.items():
            optimizer_state_to_files(opt, param_names, tmp / f"optimizer-{name}")
        rng_t, rng_js = capture_rng()
        save_tensors(rng_t, tmp / "rng.safetensors")
        _write_json(tmp / "state.json", {"format": FORMAT_VERSION, "step": step, **state, "rng": rng_js})
        _write_json(tmp / "COMPLETE", {"step": step, "files": _file_sums(tmp)})
        _fsync_dir(tmp)
    except Exception as exc:  # a full disk, ...: no half checkpoint stays (a kill leaves it: the next run sweeps it)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise os_error_at_final(exc, tmp, final) from None
        raise
    replace_dir(tmp, final)  # the same step saved again (end of a resumed run with nothing left) replaces it
    _fsync_dir(root)
    return final


def load_checkpoint_state(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state.json, trainable tensors, rng tensors) of checkpoint ``path``."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        trainable = load_file(str(path / "trainable.safetensors"))
        rng = load_file(str(path / "rng.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format')} (this version reads {FORMAT_VERSION})")
    return state, trainable, rng


def sweep_stale_temp(out: Path) -> list[Path]:
    """Remove the temp folders a killed or failed run left (``checkpoints/.tmp-step-*``,
    ``.old-step-*``, ``.tmp-final-*``, ``.old-final-*``). Only under the output folder's lock."""
    gone = []
    for root, marks in ((Path(out) / "checkpoints", (".tmp-step-", ".old-step-")), (Path(out), (".tmp-", ".old-"))):
        if not root.is_dir():
            continue
        for d in root.iterdir():
            if d.is_dir() and not d.is_symlink() and d.name.startswith(marks):
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d)
    return gone


def rotate_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints, and stale temp folders; return deleted."""
    root = Path(root)
    deleted = []
    if keep > 0:
        for _, d in list_checkpoints(root)[:-keep]:
            shutil.rmtree(d, ignore_errors=True)
            deleted.append(d)
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith((".tmp-step-", ".old-step-")) and not d.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(d, ignore_errors=True)
    return deleted
