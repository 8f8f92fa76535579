"""NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan & Bovik, IEEE SPL 2013).

Written from the published algorithm: MSCN coefficients of the luma on 96x96 blocks at two
scales, 18 AGGD features per block and scale, a multivariate Gaussian fitted to the blocks,
and the distance to the pristine model (paper Eq. 10):

    D = sqrt( (nu1 - nu2)^T ((Sigma1 + Sigma2) / 2)^-1 (nu1 - nu2) )

The pristine model (mu, Sigma, 7x7 window) are the official parameters shipped as
``osdhuman/data_files/niqe_pris_params.npz`` (from BasicSR 1.4.2, Apache-2.0).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from osdhuman.iqa.color import rgb_to_luma_yiq, rgb_to_y_bt601
from osdhuman.iqa.filters import aggd_from_sums, gaussian_window, imresize_matlab, mscn
from osdhuman.iqa.moments import block_pair_sums, tiled_pair_sums

__all__ = ["load_pristine_params", "niqe", "niqe_block_features", "niqe_from_luma", "niqe_window"]

PRISTINE_FILE = "niqe_pris_params.npz"


def niqe_window(kind: str = "pyiqa", params: dict | None = None) -> np.ndarray:
    """The 7x7 Gaussian (sigma 7/6) of the MSCN step.

    "official": the float64 window shipped with the pristine parameters (MATLAB / BasicSR).
    "pyiqa": the same Gaussian rounded to float32, as pyiqa (the paper's evaluation code)
    builds it. The choice matters: in flat areas (8x8 JPEG blocks, saturated sky) the local
    variance is ~0 and the window's rounding (its sum differs from 1 by ~1e-8 in float32)
    decides the sign of the MSCN coefficients there, moving NIQE by up to ~0.04 on JPEG images.
    """
    if kind == "official":
        return (params or load_pristine_params())["window"]
    if kind == "pyiqa":
        return gaussian_window(7, 7.0 / 6.0).astype(np.float32).astype(np.float64)
    raise ValueError(f"NIQE window must be 'pyiqa' or 'official', got {kind!r}")


def load_pristine_params(path: str | None = None) -> dict[str, np.ndarray]:
    """mu (36,), cov (36, 36), window (7, 7) of the pristine model (the bundled file by default)."""
    if path is None:
        ref = resources.files("osdhuman") / "data_files" / PRISTINE_FILE
        with resources.as_file(ref) as p, np.load(p) as d:
            data = {k: np.array(d[k]) for k in d.files}
    else:
        with np.load(path) as d:
            data = {k: np.array(d[k]) for k in d.files}
    return {
        "mu": data["mu_pris_param"].reshape(-1).astype(np.float64),
        "cov": data["cov_pris_param"].astype(np.float64),
        "window": data["gaussian_window"].astype(np.float64),
    }


def niqe_block_features(blocks: torch.Tensor) -> torch.Tensor:
    """18 features per MSCN block: AGGD (alpha, mean beta) of the coefficients, then
    (alpha, mean, beta_l, beta_r) of their products with the 4 neighbours (circular within
    the block, as the reference code's circshift). blocks: (B, h, w) -> (B, 18).

    The moment sums come from one pass over each block (:func:`moments.block_pair_sums`)."""
    return _features_from_sums(block_pair_sums(blocks).to(blocks.device))


def _features_from_sums(sums: torch.Tensor) -> torch.Tensor:
    """(B, 5, 6) moment sums of the coefficients and their 4 neighbour products -> (B, 18)."""
    alpha, sl, sr = aggd_from_sums(sums)  # (B, 5) each: all five distributions at once
    k = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))  # beta = sigma * k
    feats = [alpha[:, 0], (sl[:, 0] + sr[:, 0]) * k[:, 0] / 2]
    bl, br = sl[:, 1:] * k[:, 1:], sr[:, 1:] * k[:, 1:]  # (B, 4)
    mean = (br - bl) * torch.exp(torch.lgamma(2 / alpha[:, 1:]) - torch.lgamma(1 / alpha[:, 1:]))
    pairs = torch.stack([alpha[:, 1:], mean, bl, br], dim=-1).flatten(1)  # (B, 16): per product a, mean, bl, br
    return torch.cat([torch.stack(feats, dim=-1), pairs], dim=-1)  # (B, 18)


def niqe(
    images: torch.Tensor,
    mu: torch.Tensor,
    cov: torch.Tensor,
    window: torch.Tensor,
    block_size: int = 96,
    luma: str = "yiq",
) -> torch.Tensor:
    """NIQE of each image in (N, 3, H, W) RGB [0, 1] -> (N,) float64; lower is better.

    The luma is rounded to integer 0-255 levels (as the 8-bit reference), cropped to whole
    blocks; the second scale is MATLAB's antialiased bicubic imresize by 1/2 (unrounded).
    Images smaller than one block are NaN.
    """
    # luma rounded to 8-bit levels in the input's float32, as the reference evaluation code
    # (pyiqa) does: about 1 pixel in 2000 sits on a .5 tie that float64 would round otherwise.
    if luma == "yiq" and images.device.type == "cpu":
        from osdhuman.iqa.planes import planes_from_tensor

        return niqe_from_luma(planes_from_tensor(images).yiq, mu, cov, window, block_size)
    x = images.to(torch.float32)
    y = rgb_to_luma_yiq(x) if luma == "yiq" else rgb_to_y_bt601(x)  # (N, 1, H, W)
    return _niqe_levels(torch.round(y).to(torch.float64), mu, cov, window, block_size)


def niqe_from_luma(yiq: np.ndarray, mu: torch.Tensor, cov: torch.Tensor, window: torch.Tensor,
                   block_size: int = 96) -> torch.Tensor:
    """NIQE of (N, H, W) float32 Y-of-YIQ planes in [0, 1] (:mod:`osdhuman.iqa.planes`) -> (N,)."""
    y = torch.from_numpy(np.rint(yiq * np.float32(255.0)).astype(np.float64))[:, None]  # (N, 1, H, W)
    return _niqe_levels(y, mu, cov, window, block_size)


def _niqe_levels(y: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor, window: torch.Tensor,
                 block_size: int) -> torch.Tensor:
    """NIQE of (N, 1, H, W) float64 luma on integer 0-255 levels."""
    n, _, h, w = y.shape
    nh, nw = h // block_size, w // block_size
    if nh == 0 or nw == 0:
        return torch.full((n,), float("nan"), dtype=torch.float64)
    y = y[..., : nh * block_size, : nw * block_size]
    win = window.to(y)
    feats = []
    for scale in (1, 2):
        coeffs = mscn(y, win, c=1.0, padding="replicate")[:, 0]  # (N, H, W)
        f = _features_from_sums(tiled_pair_sums(coeffs, block_size // scale))  # (N*nb, 18), tiles in place
        feats.append(f.reshape(n, -1, 18))
        if scale == 1:
            y = imresize_matlab(y / 255.0, 0.5) * 255.0
    return _mvg_distance(torch.cat(feats, dim=-1), mu, cov)  # (N, nb, 36) -> (N,)


def _mvg_distance(f: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 10 between the MVG fitted to the blocks' features (N, nb, 36) and the
    pristine model: elementwise NaN-mean; covariance over rows without NaN."""
    n = f.shape[0]
    valid = ~torch.isnan(f)
    mu_d = torch.where(valid, f, 0).sum(1) / valid.sum(1)  # (N, 36)
    row_ok = valid.all(-1, keepdim=True).to(f.dtype)  # (N, nb, 1)
    cnt = row_ok.sum(1, keepdim=True)  # (N, 1, 1)
    fz = torch.where(row_ok.bool(), f, 0)
    m_rows = fz.sum(1, keepdim=True) / cnt  # (N, 1, 36)
    c = (fz - m_rows) * row_ok
    cov_d = c.transpose(1, 2) @ c / (cnt - 1).clamp(min=1)  # (N, 36, 36)

    inv = torch.linalg.pinv((cov.to(f) + cov_d) / 2)  # (N, 36, 36)
    d = (mu.to(f) - mu_d).unsqueeze(-1)  # (N, 36, 1)
    q = (d.transpose(1, 2) @ inv @ d).reshape(n)
    return q.sqrt()
