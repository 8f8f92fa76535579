"""Ragged batches: B images of different sizes in one zero-padded canvas.

After a random resize every image of a batch has its own size. We keep them in one tensor
``x`` of shape (B, C, Hc, Wc) with image b in ``x[b, :, :h_b, :w_b]`` and zeros elsewhere, plus
``sizes`` (a list of (h_b, w_b)). Every operation reads only an image's own pixels and computes
each output pixel by the same arithmetic whatever the canvas, so an image's result does not
depend on the other images of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["crop_list", "gather_rows_cols", "paste_list", "reflect_index", "valid_mask"]


def valid_mask(sizes: Sequence[tuple[int, int]], hc: int, wc: int, device) -> torch.Tensor:
    """(B, 1, Hc, Wc) bool: True inside each image."""
    h = torch.tensor([s[0] for s in sizes], device=device).view(-1, 1, 1, 1)
    w = torch.tensor([s[1] for s in sizes], device=device).view(-1, 1, 1, 1)
    rows = torch.arange(hc, device=device).view(1, 1, -1, 1)
    cols = torch.arange(wc, device=device).view(1, 1, 1, -1)
    return (rows < h) & (cols < w)


def reflect_index(n_out: int, length: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index (B, n_out) of a reflect-padded axis and its validity mask (CPU).

    Position j of the padded axis shows source position j - pad mirrored at the edges
    without repeating them (numpy/torch "reflect"), for j < length + 2 pad; beyond that the
    mask is False (zeros). ``length``: (B,) long, the image's own size along the axis.
    """
    j = np.arange(n_out).reshape(1, -1) - pad  # (1, n_out)
    L = np.asarray(length).reshape(-1, 1)
    period = np.maximum(2 * (L - 1), 1)
    m = np.mod(j, period)
    idx = np.where(m <= L - 1, m, period - m)
    idx = np.where(L == 1, 0, idx)
    valid = j < L + pad
    return torch.from_numpy(np.where(valid, idx, 0).astype(np.int64)), torch.from_numpy(valid)


def gather_rows_cols(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]]. x (B,C,H,W), rows (B,I), cols (B,J)."""
    B, C, _H, W = x.shape
    I, J = rows.shape[1], cols.shape[1]
    y = x.gather(2, rows.view(B, 1, I, 1).expand(B, C, I, W))  # (B, C, I, W)
    return y.gather(3, cols.view(B, 1, 1, J).expand(B, C, I, J))  # (B, C, I, J)


def crop_list(x: torch.Tensor, sizes: Sequence[tuple[int, int]], index: Sequence[int]) -> list[torch.Tensor]:
    """Views x[b, :, :h_b, :w_b] for b in ``index``."""
    return [x[b, :, : sizes[b][0], : sizes[b][1]] for b in index]


def paste_list(x: torch.Tensor, images: Sequence[torch.Tensor], index: Sequence[int]) -> torch.Tensor:
    """Write images[k] (C, h, w) into x[index[k], :, :h, :w] (in place; returns x)."""
    for b, im in zip(index, images):
        x[b, :, : im.shape[-2], : im.shape[-1]] = im
    return x
