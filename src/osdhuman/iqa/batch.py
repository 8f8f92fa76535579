"""One batch of RGB images as the offline metrics read it, each derived plane made once.

The offline metrics (NIQE, BRISQUE, PIQE, PSNR-Y, SSIM-Y, Laplacian variance) run in numpy /
numba on the CPU and never import torch. Their input is an :class:`ImageBatch`, built from

  - numpy (N, H, W, 3) uint8, or float in [0, 1] (what image files decode to), or
  - torch (N, 3, H, W) float in [0, 1] (training validation and other torch callers; torch is
    imported only because the caller already holds a tensor).

The planes are the ones each metric's reference definition starts from:

  - ``rgb``: float32 (N, H, W, 3) in [0, 1]; 8-bit input is ``float32(u) / 255``, the values
    of ``torch.from_numpy(u).float() / 255``;
  - ``yiq``: the Y of YIQ in float32, ``R*0.299 + G*0.587 + B*0.114`` left to right with no
    fused multiply-add, as pyiqa's ``to_y_channel`` (NIQE, PIQE);
  - ``gray``: scikit-image's ``rgb2gray`` in float64 of those float32 values (BRISQUE, whose
    SVR was trained on it);
  - ``u8``: the 8-bit image (given, or ``round(255 * clip(rgb, 0, 1))``; Laplacian variance).

For 8-bit input one pass over the crop (numba, per-level tables) writes ``yiq`` and ``gray``
without making the float RGB array at all; curation's scoring of 512 crops relies on it.

    b = ImageBatch.of(crops)   # crops (N, H, W, 3) uint8
    b.yiq()                    # (N, H, W) float32, computed on first use, then kept
    b.tensor("cuda")           # (N, 3, H, W) float32 for torch metrics (imports torch)
"""

from __future__ import annotations

import numba
import numpy as np

# torch is imported only when a caller hands in a tensor: offline metrics on arrays never load it.

__all__ = ["ImageBatch"]

_YIQ = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SKIMAGE = np.array([0.2125, 0.7154, 0.0721], dtype=np.float64)


class ImageBatch:
    """(N, H, W, 3) RGB images; :meth:`rgb`, :meth:`yiq`, :meth:`gray`, :meth:`u8` cached."""

    def __init__(self, u8: np.ndarray | None = None, rgb: np.ndarray | None = None, tensor=None):
        if sum(a is not None for a in (u8, rgb, tensor)) != 1:
            raise ValueError("ImageBatch needs exactly one of u8 / rgb / tensor")
        self._u8, self._rgb = u8, rgb
        self._exact_u8 = u8 is not None  # 8-bit input: the planes come from the pixels' levels
        self._tensor = tensor  # torch (N, 3, H, W) float, read on first use (see :meth:`tensor`)
        self._yiq: np.ndarray | None = None
        self._gray: np.ndarray | None = None

    @classmethod
    def of(cls, images, what: str = "images") -> ImageBatch:
        """An ImageBatch of numpy (N, H, W, 3) uint8 / float [0, 1], torch (N, 3, H, W) float
        [0, 1], or an ImageBatch (returned as it is). ValueError names ``what`` and the shape."""
        if isinstance(images, ImageBatch):
            return images
        if type(images).__module__.split(".")[0] == "torch":  # a tensor: torch is loaded already
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"{what}: expected a tensor (N, 3, H, W), got {tuple(images.shape)}")
            return cls(tensor=images.detach())
        a = np.asarray(images)
        if a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"{what}: expected an array (N, H, W, 3), got {a.shape}")
        if a.dtype == np.uint8:
            return cls(u8=np.ascontiguousarray(a))
        if a.dtype.kind != "f":
            raise ValueError(f"{what}: expected uint8 or float in [0, 1], got {a.dtype}")
        return cls(rgb=np.ascontiguousarray(a, dtype=np.float32))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, H, W)."""
        if self._tensor is not None:
            n, _, h, w = self._tensor.shape
            return int(n), int(h), int(w)
        a = self._u8 if self._u8 is not None else self._rgb
        return a.shape[0], a.shape[1], a.shape[2]

    def __len__(self) -> int:
        return self.shape[0]

    def rgb(self) -> np.ndarray:
        """(N, H, W, 3) float32 in [0, 1]."""
        if self._rgb is None and self._u8 is not None:
            self._rgb = self._u8.astype(np.float32) / np.float32(255.0)
        elif self._rgb is None:  # a tensor: torch is loaded already
            import torch

            self._rgb = self._tensor.to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
        return self._rgb

    def u8(self) -> np.ndarray:
        """(N, H, W, 3) uint8."""
        if self._u8 is None:
            self._u8 = np.rint(np.clip(self.rgb(), 0, 1) * np.float32(255.0)).astype(np.uint8)
        return self._u8

    def yiq(self) -> np.ndarray:
        """(N, H, W) float32, the Y of YIQ in [0, 1] (pyiqa's arithmetic)."""
        if self._yiq is None:
            self._planes()
        return self._yiq

    def gray(self) -> np.ndarray:
        """(N, H, W) float64, scikit-image ``rgb2gray`` in [0, 1]."""
        if self._gray is None:
            self._planes()
        return self._gray

    def tensor(self, device):
        """(N, 3, H, W) float32 torch tensor on ``device`` (pyiqa's input; imports torch). A batch
        made from a tensor hands that tensor on, without a round trip through the CPU."""
        import torch

        if self._tensor is not None:
            return self._tensor.to(device, torch.float32)
        return torch.from_numpy(self.rgb()).permute(0, 3, 1, 2).to(device)

    def _planes(self) -> None:
        n, h, w = self.shape
        yiq, gray = np.empty((n, h, w), np.float32), np.empty((n, h, w), np.float64)
        if self._exact_u8:
            _planes_u8(self._u8, *_tables(), yiq, gray)
        else:
            _planes_f32(self.rgb(), _YIQ, _SKIMAGE, yiq, gray)
        self._yiq, self._gray = yiq, gray


_LUT: tuple[np.ndarray, np.ndarray] | None = None


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-bit level: the products of ``float32(u) / 255`` with each channel's weight, as
    float32 (luma) and float64 (gray) - the exact values the per-pixel arithmetic gives."""
    global _LUT
    if _LUT is None:
        x = np.arange(256, dtype=np.float32) / np.float32(255.0)  # (256,) float32, as u8 / 255
        _LUT = (np.stack([x * w for w in _YIQ]), np.stack([w * x.astype(np.float64) for w in _SKIMAGE]))
    return _LUT


@numba.njit(cache=True, nogil=True)
def _planes_u8(u, ty, tg, yiq, gray):  # u (N, H, W, 3) uint8 -> yiq (N, H, W) f32, gray f64
    n, h, w, _ = u.shape  # ty (3, 256) f32, tg (3, 256) f64: weight * (u / 255) per level
    for b in range(n):
        for i in range(h):
            for j in range(w):
                r, g, bl = u[b, i, j, 0], u[b, i, j, 1], u[b, i, j, 2]
                yiq[b, i, j] = ty[0, r] + ty[1, g] + ty[2, bl]
                gray[b, i, j] = tg[0, r] + tg[1, g] + tg[2, bl]


@numba.njit(cache=True, nogil=True)
def _planes_f32(x, wy, wg, yiq, gray):  # x (N, H, W, 3) float32
    n, h, w, _ = x.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                r, g, bl = x[b, i, j, 0], x[b, i, j, 1], x[b, i, j, 2]
                yiq[b, i, j] = r * wy[0] + g * wy[1] + bl * wy[2]
                gray[b, i, j] = wg[0] * np.float64(r) + wg[1] * np.float64(g) + wg[2] * np.float64(bl)
