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

from osdhuman.iqa.batch import ImageBatch
from osdhuman.iqa.color import y_bt601
from osdhuman.iqa.filters import aggd_from_sums, gaussian_window, imresize_matlab, lgamma, mscn
from osdhuman.iqa.moments import block_pair_sums, tiled_pair_sums

__all__ = ["load_pristine_params", "niqe", "niqe_block_features", "niqe_from_levels", "niqe_window"]

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


def niqe_block_features(blocks: np.ndarray) -> np.ndarray:
    """18 features per MSCN block: AGGD (alpha, mean beta) of the coefficients, then
    (alpha, mean, beta_l, beta_r) of their products with the 4 neighbours (circular within
    the block, as the reference code's circshift). blocks: (B, h, w) -> (B, 18).

    The moment sums come from one pass over each block (:func:`moments.block_pair_sums`)."""
    return _features_from_sums(block_pair_sums(blocks))


def _features_from_sums(sums: np.ndarray) -> np.ndarray:
    """(B, 5, 6) moment sums of the coefficients and their 4 neighbour products -> (B, 18)."""
    alpha, sl, sr = aggd_from_sums(sums)  # (B, 5) each: all five distributions at once
    k = np.exp(0.5 * (lgamma(1 / alpha) - lgamma(3 / alpha)))  # beta = sigma * k
    feats = [alpha[:, 0], (sl[:, 0] + sr[:, 0]) * k[:, 0] / 2]
    bl, br = sl[:, 1:] * k[:, 1:], sr[:, 1:] * k[:, 1:]  # (B, 4)
    mean = (br - bl) * np.exp(lgamma(2 / alpha[:, 1:]) - lgamma(1 / alpha[:, 1:]))
    pairs = np.stack([alpha[:, 1:], mean, bl, br], axis=-1).reshape(len(sums), 16)  # per product a, mean, bl, br
    return np.concatenate([np.stack(feats, axis=-1), pairs], axis=-1)  # (B, 18)


def niqe(images, mu: np.ndarray, cov: np.ndarray, window: np.ndarray, block_size: int = 96,
         luma: str = "yiq") -> np.ndarray:
    """NIQE of each image (see :class:`~osdhuman.iqa.batch.ImageBatch` for the inputs taken)
    -> (N,) float64; lower is better.

    The luma is rounded to integer 0-255 levels (as the 8-bit reference), cropped to whole
    blocks; the second scale is MATLAB's antialiased bicubic imresize by 1/2 (unrounded).
    Images smaller than one block are NaN.
    """
    b = ImageBatch.of(images)
    # luma rounded to 8-bit levels from its float32 value, as the reference evaluation code
    # (pyiqa) does: about 1 pixel in 2000 sits on a .5 tie that float64 would round otherwise.
    if luma == "yiq":
        y = np.rint(b.yiq() * np.float32(255.0))
    elif luma == "bt601":
        y = np.rint(y_bt601(b.rgb()))
    else:
        raise ValueError(f"NIQE luma must be 'yiq' or 'bt601', got {luma!r}")
    return niqe_from_levels(y.astype(np.float64), mu, cov, window, block_size)


def niqe_from_levels(y: np.ndarray, mu: np.ndarray, cov: np.ndarray, window: np.ndarray,
                     block_size: int = 96) -> np.ndarray:
    """NIQE of (N, H, W) float64 luma on integer 0-255 levels -> (N,)."""
    n, h, w = y.shape
    nh, nw = h // block_size, w // block_size
    if nh == 0 or nw == 0:
        return np.full(n, np.nan)
    y = np.ascontiguousarray(y[:, : nh * block_size, : nw * block_size])
    feats = []
    for scale in (1, 2):
        coeffs = mscn(y, window, c=1.0)  # (N, H, W)
        f = _features_from_sums(tiled_pair_sums(coeffs, block_size // scale))  # (N*nb, 18)
        feats.append(f.reshape(n, -1, 18))
        if scale == 1:
            y = imresize_matlab(y / 255.0, 0.5) * 255.0
    return _mvg_distance(np.concatenate(feats, axis=-1), mu, cov)  # (N, nb, 36) -> (N,)


def _mvg_distance(f: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Paper Eq. 10 between the MVG fitted to the blocks' features (N, nb, 36) and the
    pristine model: elementwise NaN-mean; covariance over rows without NaN."""
    n = f.shape[0]
    valid = ~np.isnan(f)
    mu_d = np.where(valid, f, 0).sum(1) / valid.sum(1)  # (N, 36)
    row_ok = valid.all(-1, keepdims=True).astype(f.dtype)  # (N, nb, 1)
    cnt = row_ok.sum(1, keepdims=True)  # (N, 1, 1)
    fz = np.where(row_ok.astype(bool), f, 0)
    m_rows = fz.sum(1, keepdims=True) / cnt  # (N, 1, 36)
    c = (fz - m_rows) * row_ok
    cov_d = c.transpose(0, 2, 1) @ c / np.maximum(cnt - 1, 1)  # (N, 36, 36)

    inv = np.linalg.pinv((cov + cov_d) / 2, rcond=36 * np.finfo(np.float64).eps)  # (N, 36, 36), torch's default cut-off
    d = (mu - mu_d)[..., None]  # (N, 36, 1)
    q = (d.transpose(0, 2, 1) @ inv @ d).reshape(n)
    return np.sqrt(q)
