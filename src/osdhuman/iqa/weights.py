"""Where third-party metric weights live on disk, checked without ever downloading.

pyiqa (and torchvision / OpenAI CLIP / timm underneath it) fetch weights on first use. We
never let them: a metric's weight files are looked up first, and a missing one becomes a
:class:`MetricUnavailable` naming the file and the folder it must be put in.

Places (all under ``torch.hub.get_dir()``, i.e. ``$TORCH_HOME/hub``, default
``~/.cache/torch/hub``; point ``TORCH_HOME`` at a local weights folder to use another one):
  - ``pyiqa``: ``<hub>/pyiqa/FILE`` (pyiqa's own weight cache)
  - ``checkpoints``: ``<hub>/checkpoints/FILE`` (torchvision backbones)
  - ``clip``: ``<hub>/clip/FILE`` (OpenAI CLIP models, as pyiqa loads them)
  - ``hf:REPO``: the Hugging Face hub cache (``$HF_HOME/hub``) snapshot of REPO (timm backbones)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MetricUnavailable", "WeightFile", "hub_dir"]


class MetricUnavailable(RuntimeError):
    """A metric that cannot run here (missing package or weight file); the message says what
    to install or which file to put where."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"metric {name!r} unavailable: {reason}")


def hub_dir() -> Path:
    """torch.hub's folder without importing torch.hub side effects."""
    import torch.hub

    return Path(torch.hub.get_dir())


def _hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


@dataclass(frozen=True)
class WeightFile:
    """One file a metric backend needs: its name and the kind of place it is looked up in."""

    filename: str
    place: str  # "pyiqa" | "checkpoints" | "clip" | "hf:<repo_id>"

    def folder(self) -> Path:
        """The folder the file must be in."""
        if self.place.startswith("hf:"):
            repo = self.place[3:]
            return _hf_cache_dir() / ("models--" + repo.replace("/", "--")) / "snapshots" / "<revision>"
        return hub_dir() / self.place

    def find(self) -> Path | None:
        """The existing file, or None. Never downloads."""
        if self.place.startswith("hf:"):
            snaps = _hf_cache_dir() / ("models--" + self.place[3:].replace("/", "--")) / "snapshots"
            if snaps.is_dir():
                for rev in sorted(snaps.iterdir()):
                    if (rev / self.filename).is_file():
                        return rev / self.filename
            return None
        p = self.folder() / self.filename
        return p if p.is_file() else None

    def describe(self) -> str:
        """'FILE (put it in FOLDER)', the wording of MetricUnavailable messages."""
        if self.place.startswith("hf:"):
            return f"{self.filename} of Hugging Face repo {self.place[3:]} (the hub cache: {self.folder()})"
        return f"{self.filename} (put it in {self.folder()}/)"
