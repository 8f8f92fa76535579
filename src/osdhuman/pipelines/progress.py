"""Progress of ``osdhuman restore`` in work units: one unit is one UNet pass over one latent
tile of one image (a whole-photo background tile or a person crop), counted across the run
with tqdm's ETA. The count comes from a forward hook on the model's UNet (PyTorch's public
``register_forward_hook``), so the bar moves inside a long tiled photo without the pipeline
knowing about progress. ``enabled=False`` (``--no-progress``) shows nothing; on a non-TTY
stderr tqdm stays silent too, so logs stay clean.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from osdhuman.pipelines.tiling import tile_starts

__all__ = ["WorkProgress", "image_units", "units_of_file"]


def image_units(h: int, w: int, tile_size: int, tile_overlap: int) -> int:
    """Latent tiles the tiled path runs for an h x w image (1 when it fits one tile)."""
    gh, gw, tile, ov = -(-h // 8), -(-w // 8), tile_size // 8, tile_overlap // 8
    if gh <= tile and gw <= tile:
        return 1
    return len(tile_starts(gh, tile, min(ov, tile - 1))) * len(tile_starts(gw, tile, min(ov, tile - 1)))


def units_of_file(path: str | Path, scale: float, tile_size: int, tile_overlap: int) -> int:
    """Work units of one image file from its header (0 if unreadable: it will be skipped)."""

    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception:  # noqa: BLE001 - a bad file is reported by the reader later
        return 0
    return image_units(round(h * scale), round(w * scale), tile_size, tile_overlap)


class WorkProgress:
    """A tqdm bar over work units; ``watch(unet)`` counts every UNet forward by its batch size."""

    def __init__(self, total: int, enabled: bool = True, desc: str = "restore"):
        # disable=None: tqdm turns itself off when stderr is not a terminal (clean logs)
        self.bar = tqdm(total=total, desc=desc, unit="tile", disable=None if enabled else True, dynamic_ncols=True)
        self.done = 0
        self._hook = None
        self._closed = False

    @property
    def total(self) -> int:
        return int(self.bar.total or 0)

    def add(self, units: int) -> None:
        """More work found during the run (person crops once a photo's people are known)."""
        if units:
            self.bar.total = self.total + units
            self.bar.refresh()

    def advance(self, units: int) -> None:
        units = max(0, min(units, self.total - self.done))  # retries after out-of-memory do not overshoot
        self.done += units
        self.bar.update(units)

    def watch(self, module) -> None:
        """Count each forward of ``module`` (the UNet) as its batch size in units."""

        def hook(_mod, args, _out):
            if self._closed:  # a run that ended by an exception: the hook takes itself off
                handle.remove()
                return
            x = args[0] if args else None
            self.advance(int(x.shape[0]) if hasattr(x, "shape") and len(x.shape) > 0 else 1)

        handle = module.register_forward_hook(hook)
        self._hook = handle

    def close(self) -> None:
        self._closed = True
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.bar.close()
