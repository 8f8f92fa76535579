"""Reading one file of tensors safely: safetensors, or a torch checkpoint through
``torch.load(weights_only=True)`` (a pickle that needs code to load is refused, never run).

Its own module (below ``formats`` and the prompt encoders that both read files) so that the
readers of each layout import it without importing one another.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from osdhuman.models.errors import WeightsError

__all__ = ["load_tensor_file", "state_dict_mismatch"]


def load_tensor_file(path: Path) -> tuple[dict, dict[str, str]]:
    """(dict, safetensors metadata) from a safetensors file or a torch pickle (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None and not _looks_pickled(path):  # random or damaged bytes, not a refused pickle
            raise WeightsError(f"{path}: not a weights file: neither a torch checkpoint (zip or pickle) nor "
                               "safetensors (damaged, or another kind of file)") from None
        what = f" (it names {found.group(1)})" if found else ""
        raise WeightsError(f"{path}: refused: a pickle that needs code to load{what}; osdhuman never "
                           "executes pickled code. Save its tensors as a plain dict or safetensors.") from None
    except KeyError:  # the legacy reader's magic-number lookup on text or other non-pickle bytes
        raise WeightsError(f"{path}: not a weights file: neither a torch checkpoint (zip or pickle) nor "
                           "safetensors (damaged, or another kind of file)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj, {}


def _looks_pickled(path: Path) -> bool:
    """Whether the file starts as torch checkpoints do: a zip archive or a pickle stream (PROTO 2-5)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def state_dict_mismatch(tensors: dict, own: dict, what: str = "model") -> str | None:
    """How a file's ``tensors`` fail to fit a module's state dict ``own`` (the first three of each:
    unmatched names, wrong shapes, missing names), or None when they fit exactly."""
    unmatched = [k for k in tensors if k not in own]
    missing = [k for k in own if k not in tensors]
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs {what} {tuple(own[k].shape)}"
             for k in tensors if k in own and tensors[k].shape != own[k].shape]
    if not (unmatched or missing or wrong):
        return None
    bits = [f"unmatched {k}" for k in unmatched[:3]] + wrong[:3] + [f"missing {k}" for k in missing[:3]]
    return f"{len(unmatched)} unmatched, {len(missing)} missing, {len(wrong)} of another shape: {'; '.join(bits)}"
