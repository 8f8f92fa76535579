"""``--backend ray``: the shard phase on Ray Data (``RAY_ADDRESS``, or a local instance).

The dataset the driver builds holds only shard descriptors (key, records part file, row
range): each actor opens the parquet records itself (``records.read_items``), so the driver
never materialises the source images and Ray never copies them through its object store. We
do not use ``ray.data.read_parquet``: on a one-CPU cluster, read_parquet feeding an actor pool
of one actor (num_cpus=1) never finishes (reproduced with ray 2.60 on a 100-row file; the read
tasks wait for the CPU slot the actor holds: the hang of the earlier attempt), and one shard
is a row range of one file, not a file.

Two shapes:
  * one stage (default on CPU): ``_ShardUDF`` actors prepare and score whole shards, exactly
    ``worker.run_shard`` of the local backend;
  * two stages (``exec.ray_score_actors``: "auto" = when ``iqa.device`` is cuda): CPU actors
    (``_PrepareUDF``) decode, filter and crop, then scoring actors (``_ScoreUDF``, reserving
    ``num_gpus``) score the crops of ``ray_score_shards`` shards per call in ``iqa.batch_size``
    batches on the device. Both call the same ShardWorker phases, so the rows are the same;
    scores of network metrics (float32) may differ in their last bits from the local run's,
    since a crop's score depends slightly on the batch it is scored in.

An actor that cannot load its metrics or detector (a node without the weight files the
driver found) does not raise: Ray would hand the driver its traceback as text. It returns
its batch with the message in an ``error`` column, and the driver stops with that one line
(:func:`raise_worker_error`), as for the same problem on the driver.
"""

from __future__ import annotations

import json
import os
from typing import ClassVar

import numpy as np

from osdhuman.config import to_dict
from osdhuman.curation import records, worker
from osdhuman.curation.config import CurationConfig
from osdhuman.curation.detect import DetectorUnavailable
from osdhuman.curation.scoring import ScoringUnavailable
from osdhuman.curation.store import inputs_digest

# ray (the optional osdhuman[ray] extra) is imported inside the function that starts it.


def _setup_errors() -> tuple[type, ...]:
    """The errors of a worker that cannot run at all (what it needs is missing on its node)."""
    return ScoringUnavailable, DetectorUnavailable


def _error_batch(batch: dict, errors: list[str], empty: dict[str, object]) -> dict:
    """The batch's keys with their ``errors`` and the other output columns filled with ``empty``."""
    n = len(batch["key"])
    out = {"key": np.array(list(batch["key"]), dtype=object), "error": np.array(errors, dtype=object)}
    for name, value in empty.items():
        out[name] = np.array([value] * n, dtype=object if isinstance(value, (bytes, str)) else np.int64)
    return out


def raise_worker_error(batch: dict) -> None:
    """Raise the first error a worker returned in ``batch`` as the driver would have raised it."""
    errors = [str(e) for e in batch.get("error", []) if e]
    if not errors:
        return
    kind, _, msg = errors[0].partition(": ")
    classes = {c.__name__: c for c in _setup_errors()}
    raise classes.get(kind, classes["ScoringUnavailable"])(f"on a Ray worker: {msg}")


class _Actor:
    """What every actor does around its ``_run``: an ``error`` column on its output, empty when
    it ran; an error passed on from the stage before, or its own setup error, as error rows."""

    EMPTY: ClassVar[dict[str, object]] = {"cand": b"", "rej": b"", "kept": 0, "nrej": 0}  # what the driver reads

    def __init__(self, cfg_dict: dict):
        self.worker = worker.init_process(cfg_dict)

    def __call__(self, batch: dict) -> dict:
        passed = [str(e) for e in batch.get("error", [])]
        if any(passed):  # a preparing actor could not run: pass its message on
            return _error_batch(batch, passed, self.EMPTY)
        try:
            out = self._run(batch)
        except _setup_errors() as exc:
            return _error_batch(batch, [f"{type(exc).__name__}: {exc}"] * len(batch["key"]), self.EMPTY)
        out["error"] = np.array([""] * len(out["key"]), dtype=object)
        return out

    def _run(self, batch: dict) -> dict:
        raise NotImplementedError


class _ShardUDF(_Actor):
    """One-stage actor: holds one ShardWorker (detector + metrics loaded once)."""

    def _run(self, batch: dict) -> dict:
        keys, cands, rejs, kept, nrej = [], [], [], [], []
        for key, part, start, stop, group in zip(batch["key"], batch["part"], batch["start"], batch["stop"],
                                                 batch["group"]):
            c, r, k, n = worker.run_shard((str(part), int(start), int(stop), int(group)))
            keys.append(key)
            cands.append(c)
            rejs.append(r)
            kept.append(k)
            nrej.append(n)
        return {"key": np.array(keys, dtype=object), "cand": np.array(cands, dtype=object),
                "rej": np.array(rejs, dtype=object), "kept": np.array(kept), "nrej": np.array(nrej)}


class _PrepareUDF(_Actor):
    """Stage 1 (CPU): a shard's images -> its rows, rejects and crops (uint8 bytes)."""

    EMPTY: ClassVar[dict[str, object]] = {"prepared": b"", "crops": b"", "n_crops": 0, "inputs": ""}

    def _run(self, batch: dict) -> dict:
        out: dict[str, list] = {k: [] for k in ("key", "prepared", "crops", "n_crops", "inputs")}
        for key, part, start, stop, group in zip(batch["key"], batch["part"], batch["start"], batch["stop"],
                                                 batch["group"]):
            items = records.read_items(str(part), int(start), int(stop), int(group))
            inputs = inputs_digest([it.path for it in items])
            rows, rejects, crops = self.worker.prepare(items)
            out["key"].append(key)
            out["prepared"].append(_dumps((rows, rejects)))
            out["crops"].append(np.stack(crops).tobytes() if crops else b"")
            out["n_crops"].append(len(crops))
            out["inputs"].append(inputs)
        return {k: np.array(v, dtype=object if k != "n_crops" else np.int64) for k, v in out.items()}


class _ScoreUDF(_Actor):
    """Stage 2 (GPU when reserved): the crops of several shards scored in device batches."""

    def __init__(self, cfg_dict: dict):
        super().__init__(cfg_dict)
        self.size = int(cfg_dict["crop"]["size"])

    def _run(self, batch: dict) -> dict:
        shard_worker = self.worker
        counts = [int(n) for n in batch["n_crops"]]
        crops = [np.frombuffer(b, np.uint8).reshape(n, self.size, self.size, 3) for b, n in zip(batch["crops"], counts)
                 if n]
        allc = np.concatenate(crops) if crops else np.zeros((0, self.size, self.size, 3), np.uint8)  # (N, S, S, 3)
        scores = shard_worker.score_crops(allc)  # {metric: (N,)}
        names = [m.info.name for m in shard_worker.metrics]
        out: dict[str, list] = {k: [] for k in ("key", "cand", "rej", "kept", "nrej")}
        at = 0
        for key, prepared, n, inputs in zip(batch["key"], batch["prepared"], counts, batch["inputs"]):
            rows, rejects = _loads(prepared)
            shard_worker.attach_scores(rows, {m: v[at:at + n] for m, v in scores.items()})
            at += n
            cand_b, rej_b, kept, nrej = worker.shard_bytes(rows, rejects, names, str(inputs))
            out["key"].append(key)
            out["cand"].append(cand_b)
            out["rej"].append(rej_b)
            out["kept"].append(kept)
            out["nrej"].append(nrej)
        return {k: np.array(v, dtype=object if k in ("key", "cand", "rej") else np.int64) for k, v in out.items()}


def _dumps(obj) -> bytes:
    return json.dumps(obj).encode()


def _loads(b) -> object:
    return json.loads(bytes(b))


def two_stage(cfg: CurationConfig) -> bool:
    mode = cfg.exec.ray_score_actors
    return mode == "always" or (mode == "auto" and str(cfg.iqa.device).startswith("cuda"))


def _gpus_per_scorer(cfg: CurationConfig) -> float:
    if not str(cfg.iqa.device).startswith("cuda"):
        return 0.0
    return cfg.exec.ray_num_gpus or 1.0


def ray_shards(cfg: CurationConfig, jobs: list):
    """Yield (key, (cand bytes, rej bytes, crops kept, rejects)) as Ray finishes shards."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs ray: pip install 'osdhuman[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n = min(cfg.exec.workers or cpus, max(1, len(jobs)))
    cfg_dict = to_dict(cfg)
    ds = ray.data.from_items([{"key": j.key, "part": j.part, "start": j.start, "stop": j.stop, "group": j.group_rows}
                              for j in jobs])
    if not two_stage(cfg):
        ds = ds.map_batches(_ShardUDF, fn_constructor_kwargs={"cfg_dict": cfg_dict}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=n), num_cpus=1,
                            num_gpus=cfg.exec.ray_num_gpus, batch_format="numpy")
    else:
        gpus = _gpus_per_scorer(cfg)
        have = float(ray.cluster_resources().get("GPU", 0))
        if gpus and have < gpus:  # the actors could never be scheduled: Ray would wait forever
            raise ScoringUnavailable(f"iqa.device={cfg.iqa.device}: Ray scoring actors need {gpus:g} GPU(s) each, the "
                                     f"Ray cluster has {have:g}; use a GPU cluster (RAY_ADDRESS) or --device cpu")
        scorers = cfg.exec.ray_score_concurrency or (
            max(1, int(ray.cluster_resources().get("GPU", 0) / gpus)) if gpus else 1)
        # the scoring actors hold a CPU each too; on a small CPU cluster they share with preparers
        prep = max(1, min(n, cpus - scorers)) if cpus > scorers else 1
        ds = ds.map_batches(_PrepareUDF, fn_constructor_kwargs={"cfg_dict": cfg_dict}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=prep), num_cpus=1 if cpus > scorers else 0.5,
                            batch_format="numpy")
        ds = ds.map_batches(_ScoreUDF, fn_constructor_kwargs={"cfg_dict": cfg_dict},
                            batch_size=max(1, cfg.exec.ray_score_shards),
                            compute=ray.data.ActorPoolStrategy(size=scorers), num_gpus=gpus,
                            num_cpus=1 if cpus > scorers else 0.5, batch_format="numpy")
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        raise_worker_error(batch)
        for key, c, r, k, nrej in zip(batch["key"], batch["cand"], batch["rej"], batch["kept"], batch["nrej"]):
            yield str(key), (bytes(c), bytes(r), int(k), int(nrej))
