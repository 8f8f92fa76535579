"""FID (Heusel et al. 2017) between two image sets, clean-fid style (Parmar et al. 2022).

Each image is resized to 299x299 per channel in float ("F" mode) with PIL's bicubic filter
(antialiased), clipped to [0, 255], mapped to [-1, 1] by (x - 128) / 128 and embedded by the
FID Inception-v3 (pool3, 2048-d). The Frechet distance of the two Gaussian fits:

    FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

The Inception network and its weights (``pt_inception-2015-12-05-6726825d.pth``) come from
pyiqa, used only when that file is already in pyiqa's weight cache (torch imported there).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# pyiqa (the optional, non-commercial extra) is imported inside the functions that use it.

__all__ = ["clean_resize", "frechet_distance", "pyiqa_inception"]


def clean_resize(rgb: np.ndarray, size: int = 299) -> np.ndarray:
    """(N, H, W, 3) float32 RGB [0, 1] -> (N, 3, size, size) float32 on the 0-255 scale."""
    arr = np.asarray(rgb, dtype=np.float32) * np.float32(255.0)
    out = np.empty((arr.shape[0], 3, size, size), dtype=np.float32)
    for i in range(arr.shape[0]):
        for c in range(3):
            ch = Image.fromarray(np.ascontiguousarray(arr[i, :, :, c]), mode="F").resize((size, size), resample=Image.BICUBIC)
            out[i, c] = np.asarray(ch).clip(0, 255)
    return out


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, method: str = "auto") -> float:
    """Frechet distance between Gaussians fitted to (Na, D) and (Nb, D) features.

    Tr((S1 S2)^(1/2)) is the sum of square roots of the eigenvalues of S1 S2. "eigh": of the
    symmetric S1^(1/2) S2 S1^(1/2) (two D x D eigendecompositions). "gram": with centred
    features X1, X2 the nonzero spectrum of S1 S2 is that of (X1 X2^T)^T (X1 X2^T) / ((Na-1)(Nb-1)),
    so the trace is the nuclear norm of the Na x Nb matrix X1 X2^T over sqrt((Na-1)(Nb-1)):
    cheaper when there are fewer images than feature dimensions. "auto" picks the cheaper.
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {a.shape[0]} and {b.shape[0]}")
    na, nb, d = a.shape[0], b.shape[0], a.shape[1]
    mu1, mu2 = a.mean(0), b.mean(0)
    xa, xb = a - mu1, b - mu2  # (Na, D), (Nb, D)
    tr1 = float((xa * xa).sum()) / (na - 1)
    tr2 = float((xb * xb).sum()) / (nb - 1)
    if method == "auto":
        method = "gram" if na * nb * min(na, nb) < d**3 else "eigh"
    if method == "gram":
        tr_covmean = float(np.linalg.svd(xa @ xb.T, compute_uv=False).sum()) / np.sqrt((na - 1) * (nb - 1))
    elif method == "eigh":
        s1, s2 = xa.T @ xa / (na - 1), xb.T @ xb / (nb - 1)
        w, v = np.linalg.eigh(s1)
        root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        ev = np.linalg.eigvalsh(root1 @ s2 @ root1)
        tr_covmean = float(np.sqrt(np.clip(ev, 0, None)).sum())
    else:
        raise ValueError(f"method must be auto, gram or eigh, got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean)


def pyiqa_inception(device):
    """pyiqa's FID Inception-v3 (pool3 block); its weights must be in pyiqa's cache."""
    from pyiqa.archs.inception import InceptionV3

    net = InceptionV3(output_blocks=[InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return net.eval().to(device)
