"""JPEG compression of a ragged batch at a per-image quality.

``jpeg_real``: the real codec (4:2:0 chroma, integer quality): libjpeg-turbo through Pillow for
CPU tensors (cpu_jpeg.py says why Pillow), nvJPEG through torchvision for CUDA tensors. Input is
clipped to [0, 1] and rounded to 8 bit first. (One image on a CPU without torch: cpu_jpeg.py.)
``jpeg_differentiable``: an in-torch approximation (BT.601 YCbCr, 4:2:0 by 2x2 mean, 8x8 DCT,
IJG-scaled Annex K tables, straight-through rounding) that keeps gradients.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from osdhuman.degradation import cpu_jpeg
from osdhuman.degradation.ragged import crop_list, paste_list

# torchvision.io (~2.5 s, it loads torch._dynamo) is imported inside the CUDA codec only.

__all__ = ["jpeg_differentiable", "jpeg_real", "quant_tables"]


def _cpu_codec():
    """encode / decode with torchvision's signatures (lists of (3, h, w) uint8 tensors in, lists
    out), through Pillow."""

    def enc(images, quality: int):
        return [cpu_jpeg.encode(u8.permute(1, 2, 0).numpy(), quality) for u8 in images]

    def dec(data, device=None):
        return [torch.from_numpy(cpu_jpeg.decode(d).copy()).permute(2, 0, 1) for d in data]

    return enc, dec


def _codec(device: torch.device | None = None):
    """The codec for tensors on ``device``: Pillow on CPU, torchvision (nvJPEG) on CUDA."""
    if device is None or device.type != "cuda":
        return _cpu_codec()
    return _torchvision_codec()


def _torchvision_codec():
    """torchvision's encode_jpeg / decode_jpeg, without the deprecation warning 0.29 emits on
    every call (the codec itself is libjpeg-turbo / nvJPEG)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import decode_jpeg, encode_jpeg

    def enc(*a, **k):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return encode_jpeg(*a, **k)

    def dec(*a, **k):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(*a, **k)

    return enc, dec


def jpeg_real(x: torch.Tensor, sizes: Sequence[tuple[int, int]], quality: Sequence[int | None]) -> torch.Tensor:
    """Encode + decode image b of canvas x (B, 3, Hc, Wc) at quality[b] (None = unchanged)."""
    encode_jpeg, decode_jpeg = _codec(x.device)

    out = x.clone()
    active = [b for b, q in enumerate(quality) if q is not None]
    if not active:
        return out
    u8 = (x.clamp(0, 1) * 255.0).round().to(torch.uint8)  # (B, 3, Hc, Wc)
    by_q: dict[int, list[int]] = defaultdict(list)
    for b in active:
        by_q[int(quality[b])].append(b)
    cuda = x.device.type == "cuda"
    Hc, Wc = x.shape[-2:]
    for q, bs in by_q.items():
        crops = [c.contiguous() for c in crop_list(u8, sizes, bs)]
        data = encode_jpeg(crops, quality=q)  # list of 1-D uint8
        if cuda:  # GPU decode_jpeg wants the encoded bytes on the CPU: one transfer for all
            lengths = [int(d.numel()) for d in data]
            data = list(torch.cat(data).cpu().split(lengths))
            dec = decode_jpeg(data, device=x.device)
        else:
            dec = decode_jpeg(data)
        if all(tuple(d.shape[-2:]) == (Hc, Wc) for d in dec):  # images fill the canvas: one copy
            out[torch.tensor(bs, device=x.device)] = torch.stack(dec).to(x.dtype) / 255.0
        else:
            paste_list(out, [d.to(x.dtype) / 255.0 for d in dec], bs)
    return out


_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def quant_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IJG-scaled luma and chroma tables (N, 8, 8) for integer qualities (N,)."""
    q = quality.to(torch.float64).clamp(1, 100).view(-1, 1, 1)
    s = torch.where(q < 50, torch.floor(5000.0 / q), 200.0 - 2.0 * q)
    base_l = torch.tensor(_LUMA, dtype=torch.float64).view(1, 8, 8)
    base_c = torch.tensor(_CHROMA, dtype=torch.float64).view(1, 8, 8)
    return ((base_l * s + 50) // 100).clamp(1, 255), ((base_c * s + 50) // 100).clamp(1, 255)


def _dct_matrix(device, dtype) -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n.view(1, -1) + 1) * n.view(-1, 1) * torch.pi / 16) * (2.0 / 8) ** 0.5
    d[0] /= 2**0.5
    return d.to(device, dtype)  # (8, 8) orthonormal DCT-II


def _code_plane(p: torch.Tensor, table: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """p (B, H, W) level-shifted, H, W multiples of 8; table (B, 8, 8)."""
    B, H, W = p.shape
    blocks = p.view(B, H // 8, 8, W // 8, 8).permute(0, 1, 3, 2, 4)  # (B, h, w, 8, 8)
    coef = D @ blocks @ D.T
    t = table.view(B, 1, 1, 8, 8)
    z = coef / t
    z = z + (torch.round(z) - z).detach()  # straight-through rounding
    rec = D.T @ (z * t) @ D
    return rec.permute(0, 1, 3, 2, 4).reshape(B, H, W)


def jpeg_differentiable(x: torch.Tensor, sizes: Sequence[tuple[int, int]], quality: Sequence[int | None]) -> torch.Tensor:
    """Differentiable JPEG approximation of image b of canvas x (B, 3, Hc, Wc) at quality[b]."""
    active = [b for b, q in enumerate(quality) if q is not None]
    out = x.clone()
    if not active:
        return out
    dev, dt = x.device, x.dtype
    idx = torch.tensor(active, device=dev)
    xs = x.index_select(0, idx).clamp(0, 1) * 255.0  # (A, 3, Hc, Wc)
    A, _, Hc, Wc = xs.shape
    Hp, Wp = -(-Hc // 16) * 16, -(-Wc // 16) * 16
    # replicate each image's own edge into the padding, as a codec does
    hs = torch.tensor([sizes[b][0] for b in active]).view(-1, 1)
    ws = torch.tensor([sizes[b][1] for b in active]).view(-1, 1)
    rows = torch.minimum(torch.arange(Hp).view(1, -1), hs - 1).to(dev)
    cols = torch.minimum(torch.arange(Wp).view(1, -1), ws - 1).to(dev)
    xs = xs.gather(2, rows.view(A, 1, Hp, 1).expand(A, 3, Hp, Wc)).gather(3, cols.view(A, 1, 1, Wp).expand(A, 3, Hp, Wp))
    r, g, b_ = xs[:, 0], xs[:, 1], xs[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b_
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b_ + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b_ + 128
    ql, qc = quant_tables(torch.tensor([quality[b] for b in active]))
    ql, qc = ql.to(dev, dt), qc.to(dev, dt)
    D = _dct_matrix(dev, dt)
    y = _code_plane(y - 128, ql, D) + 128
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)  # (A, 2, Hp/2, Wp/2)
    cb = _code_plane(chroma[:, 0] - 128, qc, D)
    cr = _code_plane(chroma[:, 1] - 128, qc, D)
    cb = F.interpolate(cb.unsqueeze(1), scale_factor=2, mode="nearest").squeeze(1)
    cr = F.interpolate(cr.unsqueeze(1), scale_factor=2, mode="nearest").squeeze(1)
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)  # (A, 3, Hp, Wp)
    rgb = (rgb / 255.0).clamp(0, 1)[:, :, :Hc, :Wc]
    mask = (torch.arange(Hc, device=dev).view(1, 1, -1, 1) < hs.to(dev).view(-1, 1, 1, 1)) & \
           (torch.arange(Wc, device=dev).view(1, 1, 1, -1) < ws.to(dev).view(-1, 1, 1, 1))
    out[idx] = rgb * mask
    return out
