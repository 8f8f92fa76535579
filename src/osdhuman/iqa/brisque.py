"""BRISQUE (Mittal, Moorthy & Bovik, IEEE TIP 2012), offline.

36 natural-scene-statistics features (MSCN coefficients and their 4 neighbour products at two
scales, each fitted by an asymmetric generalised Gaussian), scaled to [-1, 1] and regressed by
an RBF epsilon-SVR. The SVR is the model shipped by the ``brisque`` PyPI package (Apache-2.0),
read at run time from the installed package (never vendored, never unpickled with code
execution): ``models/svm.txt`` (libsvm text format) and ``models/normalize.pickle`` (feature
ranges, read with an unpickler that refuses every global). The features follow that package's
definition, the one its SVR was trained on: skimage gray in [0, 1], zero-padded 7x7 Gaussian
(sigma 7/6), C = 1/255, non-circular neighbour products, continuous AGGD shape solve, and a
bicubic (OpenCV) half-size second scale. Scores are therefore on that package's scale, not on
pyiqa's (LIVE-trained) BRISQUE scale used by the paper's Table 1.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path

import cv2
import numba
import numpy as np

from osdhuman.iqa.batch import ImageBatch
from osdhuman.iqa.filters import gaussian_window, lgamma
from osdhuman.iqa.moments import image_pair_sums
from osdhuman.iqa.weights import MetricUnavailable

__all__ = ["SVRModel", "brisque_features", "brisque_features_from_gray", "brisque_fn", "load_brisque_package_model"]


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):  # plain dict / list / float only
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


class SVRModel:
    """RBF epsilon-SVR: f(x) = sum_i coef_i exp(-gamma |x - sv_i|^2) - rho."""

    def __init__(self, sv: np.ndarray, coef: np.ndarray, gamma: float, rho: float, lo: np.ndarray, hi: np.ndarray):
        self.sv, self.coef = sv, coef  # (S, D), (S,)
        self.gamma, self.rho = gamma, rho
        self.lo, self.hi = lo, hi  # (D,)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        f = np.asarray(feats, dtype=np.float64)
        x = -1.0 + 2.0 * (f - self.lo) / (self.hi - self.lo)  # (N, D)
        d2 = ((x[:, None, :] - self.sv[None]) ** 2).sum(-1)  # (N, S)
        return np.exp(-self.gamma * d2) @ self.coef - self.rho


def _parse_libsvm(path: Path, dims: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    header, coefs, rows = {}, [], []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines) and lines[i].strip() != "SV":
        k, _, v = lines[i].partition(" ")
        header[k] = v.strip()
        i += 1
    for line in lines[i + 1:]:
        parts = line.split()
        if not parts:
            continue
        coefs.append(float(parts[0]))
        row = np.zeros(dims)
        for item in parts[1:]:
            j, _, v = item.partition(":")
            row[int(j) - 1] = float(v)
        rows.append(row)
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ValueError(f"{path}: expected an RBF epsilon-SVR, got {header.get('svm_type')}/{header.get('kernel_type')}")
    return np.stack(rows), np.array(coefs), float(header["gamma"]), float(header["rho"])


def load_brisque_package_model() -> SVRModel:
    """The SVR of the installed ``brisque`` package (optional dependency)."""
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable("brisque", "the offline BRISQUE model comes from the `brisque` package: "
                                "pip install brisque (Apache-2.0)")
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    svm, norm = models / "svm.txt", models / "normalize.pickle"
    for p in (svm, norm):
        if not p.is_file():
            raise MetricUnavailable("brisque", f"missing {p} (reinstall the `brisque` package)")
    with open(norm, "rb") as fh:
        ranges = _NoGlobals(fh).load()
    lo = np.asarray(ranges["min_"], dtype=np.float64)
    hi = np.asarray(ranges["max_"], dtype=np.float64)
    sv, coef, gamma, rho = _parse_libsvm(svm, lo.size)
    return SVRModel(sv, coef, gamma, rho, lo, hi)


def _aggd_continuous(sums: np.ndarray) -> np.ndarray:
    """(alpha, mean, sigma_l^2, sigma_r^2) per row of moment sums (..., 6) (see
    :mod:`osdhuman.iqa.moments`); alpha solves phi(alpha) = R_hat exactly (bisection on the
    monotone phi, :func:`_bisect`), sigma_r over x >= 0."""
    s_neg, n_neg, s_pos, n_pos, n_zero, s_abs = np.moveaxis(sums, -1, 0)
    m = n_neg + n_pos + n_zero
    with np.errstate(divide="ignore", invalid="ignore"):  # a flat image: NaN features, as the reference
        ls = s_neg / n_neg
        rs = s_pos / (n_pos + n_zero)
        g = np.sqrt(ls) / np.sqrt(rs)
        rhat = (s_abs / m) ** 2 / ((s_neg + s_pos) / m)
        target = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = np.empty(target.size)
    _bisect(np.ascontiguousarray(target.reshape(-1)), alpha)
    alpha = alpha.reshape(target.shape)
    k = np.exp(0.5 * (lgamma(1 / alpha) - lgamma(3 / alpha)))
    mean = (np.sqrt(rs) - np.sqrt(ls)) * k * np.exp(lgamma(2 / alpha) - lgamma(1 / alpha))
    return np.stack([alpha, mean, ls, rs], axis=-1)  # (..., 4)


def _scale_features(gray: np.ndarray, window: np.ndarray) -> np.ndarray:
    """18 features of one scale. gray: (N, H, W) float64 in [0, 1], window: the (7,) factor
    of the separable Gaussian -> (N, 18)."""
    m = np.empty_like(gray)
    _mscn(gray, window, m)  # zero-padded separable window sums and the normalisation, one pass
    # sums of the coefficients and of their horizontal, vertical, main- and secondary-diagonal
    # neighbour products, in one pass (no product image is materialised)
    fit = _aggd_continuous(image_pair_sums(m))  # (N, 5, 4): one bisection for all five distributions
    base = fit[:, 0]
    return np.concatenate([base[:, :1], (base[:, 2:3] + base[:, 3:4]) / 2, fit[:, 1:].reshape(len(m), -1)], axis=-1)


def brisque_features(images) -> np.ndarray:
    """36 BRISQUE features of the images (what :class:`~osdhuman.iqa.batch.ImageBatch` takes)
    -> (N, 36) float64."""
    return brisque_features_from_gray(ImageBatch.of(images).gray())


def brisque_features_from_gray(gray: np.ndarray) -> np.ndarray:
    """(N, H, W) float64 scikit-image gray in [0, 1] -> (N, 36): both scales."""
    gray = np.ascontiguousarray(gray, dtype=np.float64)
    g = gaussian_window(7, 7.0 / 6.0)
    window = g.sum(axis=1) / g.sum()  # 1-D factor of the Gaussian
    f1 = _scale_features(gray, window)
    g = gray.transpose(1, 2, 0)  # (H, W, N): OpenCV resizes channels together
    halves = []
    for i in range(0, g.shape[2], 256):
        h = cv2.resize(np.ascontiguousarray(g[:, :, i:i + 256]), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        halves.append(h.reshape(h.shape[0], h.shape[1], -1))
    half = np.ascontiguousarray(np.concatenate(halves, axis=2).transpose(2, 0, 1))  # (N, H/2, W/2)
    f2 = _scale_features(half, window)
    return np.concatenate([f1, f2], axis=-1)


def brisque_fn(model: str = "brisque-package"):
    """``fn(images) -> (N,)`` scores (lower is better) with the named SVR."""
    if model != "brisque-package":
        raise ValueError(f"unknown offline BRISQUE model {model!r} (only 'brisque-package')")
    svr = load_brisque_package_model()

    def fn(images) -> np.ndarray:
        return svr(brisque_features(images))

    return fn


@numba.njit(cache=True, nogil=True)
def _mscn(g, k, out):
    """g (N, H, W) -> MSCN (N, H, W): the separable zero-padded 'same' window sums of g and g^2
    (vertical taps in order, then horizontal; a padded zero row or column adds exactly 0, so it
    is skipped), then the normalisation, one row at a time. In flat areas (saturated sky, 8x8
    JPEG blocks) I - mu is rounding noise (~1e-17) whose sign would depend on the summation
    order; it is set to exactly 0 there."""
    n, h, w = g.shape
    kn = k.shape[0]
    lo = (kn - 1) // 2
    rm = np.zeros(w + kn - 1)
    rq = np.zeros(w + kn - 1)
    hm = np.empty(w)
    hq = np.empty(w)
    c = 1.0 / 255.0
    for b in range(n):
        for i in range(h):
            rm[:] = 0.0
            rq[:] = 0.0
            for t in range(kn):
                r = i + t - lo
                if r < 0 or r >= h:
                    continue
                kt = k[t]
                src = g[b, r]
                for j in range(w):
                    v = src[j]
                    rm[lo + j] = rm[lo + j] + kt * v
                    rq[lo + j] = rq[lo + j] + kt * (v * v)
            if kn == 7:  # the horizontal taps in registers (vectorises over j), same order
                k0, k1, k2, k3, k4, k5, k6 = k[0], k[1], k[2], k[3], k[4], k[5], k[6]
                for j in range(w):
                    hm[j] = (((((k0 * rm[j] + k1 * rm[j + 1]) + k2 * rm[j + 2]) + k3 * rm[j + 3])
                              + k4 * rm[j + 4]) + k5 * rm[j + 5]) + k6 * rm[j + 6]
                    hq[j] = (((((k0 * rq[j] + k1 * rq[j + 1]) + k2 * rq[j + 2]) + k3 * rq[j + 3])
                              + k4 * rq[j + 4]) + k5 * rq[j + 5]) + k6 * rq[j + 6]
            else:
                for j in range(w):
                    mu = 0.0
                    s2 = 0.0
                    for t in range(kn):
                        mu = mu + k[t] * rm[j + t]
                        s2 = s2 + k[t] * rq[j + t]
                    hm[j], hq[j] = mu, s2
            dst, src = out[b, i], g[b, i]
            for j in range(w):
                mu = hm[j]
                sd = np.sqrt(abs(mu * mu - hq[j]))
                d = src[j] - mu
                d = 0.0 if abs(d) < 1e-10 else d
                dst[j] = d / (sd + c)

@numba.njit(cache=True, nogil=True)
def _bisect(target, alpha):  # 70 halvings of [log 0.02, log 60] per value (phi increases with alpha)
    for t in range(target.shape[0]):
        lo, hi = np.log(0.02), np.log(60.0)
        for _ in range(70):
            mid = (lo + hi) / 2
            a = np.exp(mid)
            phi = np.exp(2 * math.lgamma(2 / a) - math.lgamma(1 / a) - math.lgamma(3 / a))
            if phi < target[t]:
                lo = mid
            else:
                hi = mid
        alpha[t] = np.exp((lo + hi) / 2)
