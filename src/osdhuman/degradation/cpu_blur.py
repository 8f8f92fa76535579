"""The blur of one image on a CPU, in numpy / OpenCV: Real-ESRGAN's ``filter2D`` (reflect padding
by half the kernel, cross-correlation) by the cheapest exact route for the image's kernel.

Why not the batched torch blur (blur.py): ``osdhuman degrade`` on a CPU must not import torch,
and one image at a time these routes are faster (measured on one thread at 512 x 512; OpenCV's
BORDER_REFLECT_101 is torch's "reflect"):
  * the kernel is cropped to its support (kernels.crop_kernel): all-zero outer rings exactly,
    and rings whose total |weight| is at most ``NEGLIGIBLE`` (far below float32 rounding); the
    reflect padding shrinks with it (same values: reflection is nested);
  * a separable kernel (isotropic Gaussian, identity, ...) runs as two 1-D passes
    (cv2.sepFilter2D, 0.5-2 ms);
  * a small one (at most 11 x 11 after cropping) as direct correlation (cv2.filter2D,
    1.1-2.8 ms: OpenCV's direct route below 130 taps);
  * anything larger by FFT of the reflect-padded image (scipy.fft, per channel plane, ~5.5 ms),
    as is an image smaller than the padding (mirrored several times over, as torch's ragged
    path does).
All routes compute the same correlation, differ from one another by float rounding (< 1e-6),
are deterministic and single-threaded, and an image's route depends on its kernel alone.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.fft

from osdhuman.degradation.kernels import crop_kernel, separable_factors

__all__ = ["blur_image", "fft_length"]

_DIRECT_TAPS = 130  # below this many taps cv2.filter2D correlates directly (above: its own DFT)
_BORDER = cv2.BORDER_REFLECT_101


def _smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def fft_length(n: int, multiple: int = 32) -> int:
    """Smallest 5-smooth multiple of ``multiple`` that is >= n."""
    m = max(1, int(multiple))
    k = max(1, -(-n // m))
    while not _smooth(k * m):
        k += 1
    return k * m


def blur_image(x: np.ndarray, kernel: np.ndarray, size_multiple: int = 4) -> np.ndarray:
    """x (C, h, w) float32 planes correlated with kernel (M, M) (float64, M odd), reflect padding.

    Returns new (C, h, w) float32 planes (each plane filtered on its own: OpenCV's
    interleaved-channel routes round differently). ``size_multiple``: FFT lengths are 5-smooth
    multiples of it (the FFT route only).
    """
    k = crop_kernel(kernel)
    m = k.shape[0]
    pad = m // 2
    _C, h, w = x.shape
    sep = separable_factors(k) if h > pad and w > pad else None
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, np.float32)
    if sep is not None:
        ky, kx = (np.ascontiguousarray(v, dtype=np.float32) for v in sep)
        for c in range(x.shape[0]):
            cv2.sepFilter2D(x[c], -1, kx, ky, dst=out[c], borderType=_BORDER)
        return out
    if h > pad and w > pad and m * m < _DIRECT_TAPS:
        k32 = np.ascontiguousarray(k, dtype=np.float32)
        for c in range(x.shape[0]):
            cv2.filter2D(x[c], -1, k32, dst=out[c], borderType=_BORDER)
        return out
    return _fft_correlate(x, k, size_multiple)


def _fft_correlate(x: np.ndarray, k: np.ndarray, size_multiple: int) -> np.ndarray:
    """Correlation by FFT of the reflect-padded planes (np.pad "reflect" mirrors repeatedly
    when the padding exceeds the image: torch's ragged path does the same)."""
    _C, h, w = x.shape
    pad = k.shape[0] // 2
    planes = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")  # (C, h + 2 pad, w + 2 pad)
    nh, nw = fft_length(h + 2 * pad, size_multiple), fft_length(w + 2 * pad, size_multiple)
    spec = scipy.fft.rfft2(planes, s=(nh, nw))  # complex64
    spec *= np.conj(scipy.fft.rfft2(k.astype(np.float32), s=(nh, nw)))  # correlation
    return np.ascontiguousarray(scipy.fft.irfft2(spec, s=(nh, nw))[:, :h, :w], dtype=np.float32)  # (C, h, w)
