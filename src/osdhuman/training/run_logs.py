"""What a training run writes beside its checkpoints: ``metrics.jsonl``, TensorBoard events,
``skipped.jsonl`` (every training image left out, and why) and the interval means it logs.

After a resume each continues from the checkpoint's step: metrics after it are dropped, and
TensorBoard's ``purge_step`` hides the killed run's later events, so no step is repeated.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from osdhuman.outputs import atomic_write_text

# TensorBoard is imported inside tensorboard() (~1 s, only when logging.tensorboard is on).

__all__ = ["IntervalMean", "JsonlLog", "SkippedLog", "tensorboard", "truncate_metrics"]


class JsonlLog:
    """One JSON record per line, flushed each time (process 0 only: ``enabled``)."""

    def __init__(self, path: Path, enabled: bool):
        self.f = open(path, "a") if enabled else None

    def write(self, rec: dict) -> None:
        if self.f:
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.close()


class SkippedLog:
    """Training images left out: one stderr line per file (the first time any process meets it)
    and one record in ``skipped.jsonl``; files already recorded there (a resumed run) stay quiet."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: set[str] = set()
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    self.seen.add(json.loads(line)["file"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def add(self, file: str, reason: str, detail: str = "") -> None:
        if file in self.seen:
            return
        self.seen.add(file)
        print(f"osdhuman train: skipped {file}: {reason}" + (f" ({detail})" if detail else ""), file=sys.stderr)
        rec = {"file": file, "reason": reason, **({"detail": detail} if detail else {})}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:  # one short line per append: whole lines under any process count
            f.write(json.dumps(rec) + "\n")

    def add_batch(self, batch: dict) -> None:
        """Records a DataLoader batch carries in ``skipped`` ("file\\treason\\tdetail" lines per item)."""
        for text in batch.get("skipped", ()) or ():
            for line in str(text).splitlines():
                file, reason, detail = (line.split("\t") + ["", ""])[:3]
                if file:
                    self.add(file, reason, detail)


class IntervalMean:
    """Running sums of the finite metrics since the last log record."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v) and not k.startswith("val/"):
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
                self.counts[k] = self.counts.get(k, 0) + 1

    def reduce(self, accelerator, device) -> dict[str, float]:
        """Interval means, averaged over processes (every rank calls this at the same step)."""
        keys = sorted(self.sums)
        local = torch.tensor([[self.sums[k], self.counts[k]] for k in keys], dtype=torch.float64, device=device)
        if accelerator.num_processes > 1 and keys:
            local = accelerator.reduce(local.float(), reduction="sum").double()
        self.sums, self.counts = {}, {}
        return {k: float(s / max(c, 1)) for k, (s, c) in zip(keys, local.tolist())}


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records after ``step`` (written by a run killed after its last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by the kill
        if int(rec.get("step", 0)) <= step:
            keep.append(line + "\n")
    atomic_write_text(path, "".join(keep))


def tensorboard(out: Path, enabled: bool, purge_step: int | None = None):
    """SummaryWriter on out/tb; after a resume ``purge_step`` makes TensorBoard drop the killed
    run's events after the checkpoint, so the curves continue without repeated steps."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: metrics.jsonl still records everything
        return None
    return SummaryWriter(log_dir=str(out / "tb"), purge_step=purge_step)
