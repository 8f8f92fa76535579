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

A file that is there is also checked against what its publisher states before it is used
(:meth:`WeightFile.problem`): the sha256 prefix in torch-hub style names
(``alexnet-owt-7be5be79.pth``, pyiqa's ``*-df73285e.pth``), the full sha256 in OpenAI CLIP's
URL (read from pyiqa's own table), the sha256 a Hugging Face cache blob is named by. A
mismatch reads ``corrupt: FILE, expected sha256 ...`` and the metric is n/a, exactly as for a
missing file; a file with no published digest must at least not be empty.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# pyiqa (optional) is imported inside the function that reads its CLIP table.

__all__ = ["MetricUnavailable", "WeightFile", "expected_sha256", "hub_dir", "weight_problems"]

_HUB_HASH = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin|ckpt)$")
_SHA_CACHE: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


class MetricUnavailable(RuntimeError):
    """A metric that cannot run here (missing package or weight file); the message says what
    to install or which file to put where."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"metric {name!r} unavailable: {reason}")


def hub_dir() -> Path:
    """torch.hub's folder (``torch.hub.get_dir()``), found without importing torch when it is not
    loaded yet: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``
    (torch's own rule; a folder set by ``torch.hub.set_dir`` needs torch loaded, and is then read)."""

    if "torch.hub" in sys.modules:
        return Path(sys.modules["torch.hub"].get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


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

    def problem(self) -> str | None:
        """None when the file is there and matches its published digest; else what is wrong."""
        path = self.find()
        if path is None:
            return f"needs {self.describe()}"
        try:
            size = path.stat().st_size
        except OSError as exc:
            return f"unreadable: {path} ({exc.strerror})"
        want = expected_sha256(self, path)
        if size == 0:
            return f"corrupt: {path}, expected a weight file, found 0 bytes"
        if want is None:
            return None
        got = _sha256(path)
        if not got.startswith(want):
            return f"corrupt: {path}, expected sha256 {want[:16]}..., found {got[:16]}... (replace the file)"
        return None

    def describe(self) -> str:
        """'FILE (put it in FOLDER)', the wording of MetricUnavailable messages."""
        if self.place.startswith("hf:"):
            return f"{self.filename} of Hugging Face repo {self.place[3:]} (the hub cache: {self.folder()})"
        return f"{self.filename} (put it in {self.folder()}/)"


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def expected_sha256(wf: WeightFile, path: Path | None = None) -> str | None:
    """The sha256 (or its prefix) the file's publisher states, or None when none is known."""
    if wf.place == "clip":
        url = _clip_urls().get(wf.filename)
        return url.split("/")[-2] if url else None
    if wf.place.startswith("hf:"):
        if path is not None and path.is_symlink():  # snapshot file -> blobs/<sha256> for LFS files
            blob = Path(os.readlink(path)).name
            return blob if re.fullmatch(r"[0-9a-f]{64}", blob) else None
        return None
    m = _HUB_HASH.search(wf.filename)
    return m.group(1) if m else None


def _clip_urls() -> dict[str, str]:
    """file name -> URL of the OpenAI CLIP models, from pyiqa's own table (the sha256 is in the URL)."""
    try:
        from pyiqa.archs.clip_model import _MODELS
    except Exception:  # noqa: BLE001 - pyiqa absent or changed: no digest known
        return {}
    return {os.path.basename(u): u for u in _MODELS.values()}


def weight_problems(files) -> list[str]:
    """One line per missing or damaged file of ``files`` (empty: all present and intact)."""
    return [p for f in files if (p := f.problem()) is not None]
