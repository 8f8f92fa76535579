"""The per-pixel noise draws of torch's CPU generator, reproduced without torch.

The degradation's noise of an image comes from a generator seeded with the image's noise seed
(params.py). On a CPU that was ``torch.Generator().manual_seed(seed)`` followed by
``torch.rand`` / ``torch.randn`` in float32; ``osdhuman degrade`` must not import torch (~2 s
of a 4 s run), so we draw the same numbers here (docs/reference.md §degradation, "noise stream"):

* the generator is MT19937 initialised from the low 32 bits of the seed exactly as numpy's
  legacy ``RandomState(seed)`` initialises it, so ``RandomState`` yields the same 32-bit words;
* a float32 uniform is the low 24 bits of one word times 2^-24;
* float32 normals (n >= 16 values) are Box-Muller over blocks of 16 uniforms: u1 = 1 - block[j],
  u2 = block[j + 8], radius sqrt(-2 log u1), angle float32(2 pi) u2, cos into j and sin into
  j + 8; a ragged tail (n not a multiple of 16) is redone from 16 fresh uniforms drawn after
  the n, written over the last 16 values. On x86 (AVX2 / AVX-512) torch evaluates log, sin and
  cos with Cephes-style float32 polynomials (range reduction by three parts of pi / 4, a
  degree-8 log polynomial in the mantissa), its compiler fusing some multiply-adds; we
  evaluate the same polynomials with the same fused operations (an LLVM fma), so the
  normals are bit-identical to torch's on such machines (checked in tests/degradation).
  Other CPUs (ARM, no AVX2) made torch use libm instead: there the stream differs by an ulp.
* fewer than 16 normals come from the scalar float64 Box-Muller (two 64-bit uniforms of two
  words each, cos first, its sin cached for the next value).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["normal", "uniform", "words"]


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (float32)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return sig, codegen


def words(seed: int, n: int) -> np.ndarray:
    """The first n 32-bit outputs (uint32) of the generator seeded with ``seed``."""
    return np.random.RandomState(int(seed) & 0xFFFFFFFF).randint(0, 2**32, size=n, dtype=np.uint32)


def uniform(seed: int, n: int) -> np.ndarray:
    """n float32 uniforms in [0, 1): torch.rand(n, generator=seeded) on a CPU."""
    return _uniform24(words(seed, n))


@numba.njit(cache=True, nogil=True)
def _uniform24(w):
    out = np.empty(w.shape[0], np.float32)
    scale = np.float32(2.0**-24)
    for i in range(w.shape[0]):
        out[i] = np.float32(w[i] & 0xFFFFFF) * scale
    return out


def normal(seed: int, n: int) -> np.ndarray:
    """n float32 standard normals: torch.randn(n, generator=seeded) on an x86 CPU."""
    if n < 16:
        return _normal_scalar(seed, n)
    u = uniform(seed, n + (16 if n % 16 else 0))
    out = np.empty(n, np.float32)
    _box_muller(u, n, out)
    return out


def _normal_scalar(seed: int, n: int) -> np.ndarray:
    w = words(seed, 4 * ((n + 1) // 2)).astype(np.uint64)
    out = np.empty(n, np.float32)
    for i in range(0, n, 2):
        a = ((w[4 * (i // 2)] << 32) | w[4 * (i // 2) + 1]) & ((1 << 53) - 1)
        b = ((w[4 * (i // 2) + 2] << 32) | w[4 * (i // 2) + 3]) & ((1 << 53) - 1)
        u1, u2 = float(a) * 2.0**-53, float(b) * 2.0**-53
        r = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        out[i] = r * math.cos(theta)
        if i + 1 < n:
            out[i + 1] = r * math.sin(theta)
    return out


@numba.njit(cache=True, nogil=True)
def _box_muller(u, n, out):
    """out[:n] from uniforms u (n, or n + 16 with a ragged tail), blocks of 16."""
    for start in range(0, n - 15, 16):
        _block(u, start, out, start)
    if n % 16:
        _block(u, n, out, n - 16)


@numba.njit(cache=True, nogil=True)
def _block(u, src, out, dst):
    two_pi = np.float32(2.0 * math.pi)
    for j in range(8):
        radius = np.sqrt(np.float32(-2.0) * _log(np.float32(1.0) - u[src + j]))
        s, c = _sincos(two_pi * u[src + j + 8])
        out[dst + j] = radius * c
        out[dst + j + 8] = radius * s


@numba.njit(cache=True, nogil=True)
def _log(x):
    """Natural log of a float32 x in (0, 1] by the Cephes float32 polynomial (see the docstring)."""
    mant, ex = math.frexp(np.float64(x))  # x = mant 2^ex, mant in [0.5, 1): exact
    m = np.float32(mant)
    e = np.float32(ex)
    if m < np.float32(0.707106781186547524):
        e -= np.float32(1.0)
        x = (m - np.float32(1.0)) + m
    else:
        x = m - np.float32(1.0)
    z = x * x
    y = np.float32(7.0376836292e-2)
    y = _fma(y, x, np.float32(-1.1514610310e-1))
    y = _fma(y, x, np.float32(1.1676998740e-1))
    y = _fma(y, x, np.float32(-1.2420140846e-1))
    y = _fma(y, x, np.float32(1.4249322787e-1))
    y = _fma(y, x, np.float32(-1.6668057665e-1))
    y = _fma(y, x, np.float32(2.0000714765e-1))
    y = _fma(y, x, np.float32(-2.4999993993e-1))
    y = _fma(y, x, np.float32(3.3333331174e-1))
    y = y * x
    y = _fma(y, z, e * np.float32(-2.12194440e-4))
    y = y - z * np.float32(0.5)
    x = x + y
    return x + e * np.float32(0.693359375)


@numba.njit(cache=True, nogil=True)
def _sincos(x):
    """(sin x, cos x) of a float32 x >= 0 by the Cephes float32 polynomials."""
    j = np.int32(x * np.float32(1.27323954473516))  # x * 4 / pi, truncated
    j = (j + 1) & np.int32(~1)
    y = np.float32(j)
    x = _fma(y, np.float32(-0.78515625), x)
    x = _fma(y, np.float32(-2.4187564849853515625e-4), x)
    x = _fma(y, np.float32(-3.77489497744594108e-8), x)
    z = x * x
    c = _fma(np.float32(2.443315711809948e-5), z, np.float32(-1.388731625493765e-3))
    c = _fma(c, z, np.float32(4.166664568298827e-2))
    c = _fma(c * z, z, -(z * np.float32(0.5))) + np.float32(1.0)
    s = _fma(np.float32(-1.9515295891e-4), z, np.float32(8.3321608736e-3))
    s = _fma(s, z, np.float32(-1.6666654611e-1))
    s = _fma(s * z, x, x)
    if j & 2:
        s, c = c, s
    if j & 4:
        s = -s
    if ((j - 2) & 4) == 0:
        c = -c
    return s, c
