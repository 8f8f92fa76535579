"""HAODiff's multi-branch SwinIR feature extractor (the trunk of its prompt encoder).

    feats = SwinIRFeatures(SwinIRFeaturesConfig(...))(x)   # x (B,3,512,512) -> [(B, 128*128, C)] * branches

SwinIR (Liang et al. 2021) with a convolutional 4x downsampler in front and, after the first
half of its residual Swin stages (RSTB), one copy of the second half per branch; every branch
ends in the shared LayerNorm. The layout is docs/reference.md §released.

Why our own and not timm's Swin: SwinIR's blocks run at one resolution with a residual
convolution around each stage (RSTB), a patch "embedding" that is a flatten plus LayerNorm, and
keep the relative-position index and the shifted-window mask as saved buffers; timm's
SwinTransformer has patch merging between stages and other key names, so its pieces would need a
key map and still not hold the buffers the released files carry. The parameter names here are
the released file's, so its state dict loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["SwinIRFeatures", "SwinIRFeaturesConfig"]

SWINIR_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # subtracted from the input before the first conv


@dataclass
class SwinIRFeaturesConfig:
    """The released ``swinir_kwargs``; missing keys take the values HAODiff's class assumes."""

    img_size: int = 64
    patch_size: int = 1
    in_chans: int = 3
    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [6, 6, 6, 6])
    num_heads: list[int] = field(default_factory=lambda: [6, 6, 6, 6])
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    ape: bool = False
    patch_norm: bool = True
    upscale: int = 2
    downsample: bool = True
    img_range: float = 1.0
    resi_connection: str = "1conv"
    branch_num: int = 3
    skip_branch: list[int] = field(default_factory=list)

    @property
    def downscale(self) -> int:
        return self.upscale if self.downsample else 1

    @property
    def grid(self) -> int:
        """Token grid side the blocks were built for (img_size / downscale / patch_size)."""
        return self.img_size // self.downscale // self.patch_size

    @property
    def kept_branches(self) -> list[int]:
        return [i for i in range(self.branch_num) if i not in self.skip_branch]


def _windows(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B,H,W,C) -> (B*nW, w*w, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, C)


def _unwindows(x: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    """(B*nW, w, w, C) -> (B,H,W,C)."""
    B = x.shape[0] // ((H // w) * (W // w))
    x = x.view(B, H // w, W // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, -1)


def _relative_index(w: int) -> torch.Tensor:
    """(w*w, w*w) index into the (2w-1)^2 relative-position table."""
    yy, xx = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    flat = torch.stack([yy.flatten(), xx.flatten()])  # (2, w*w)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (w - 1)  # (w*w, w*w, 2)
    return rel[..., 0] * (2 * w - 1) + rel[..., 1]


def _shift_mask(size: int, w: int, s: int) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask (0 / -100) for windows shifted by ``s``."""
    region = torch.zeros(1, size, size, 1)
    cuts = (slice(0, -w), slice(-w, -s), slice(-s, None))
    n = 0
    for hs in cuts:
        for ws in cuts:
            region[:, hs, ws, :] = n
            n += 1
    ids = _windows(region, w).squeeze(-1)  # (nW, w*w)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, w: int, heads: int, qkv_bias: bool, qk_scale: float | None):
        super().__init__()
        self.heads, self.w = heads, w
        self.scale = qk_scale or (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, heads))
        self.register_buffer("relative_position_index", _relative_index(w))  # saved in the release
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        Bw, N, C = x.shape  # (B*nW, w*w, C)
        qkv = self.qkv(x).reshape(Bw, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]  # (B*nW, h, N, d)
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(Bw // nW, nW, self.heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, N, N)
        x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(Bw, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted) window attention + MLP at a fixed ``size`` x ``size`` grid."""

    def __init__(self, dim: int, size: int, heads: int, w: int, shift: int, c: SwinIRFeaturesConfig):
        super().__init__()
        if size <= w:  # one window covers the grid: no shift (as SwinIR does)
            w, shift = size, 0
        self.w, self.shift, self.size = w, shift, size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, w, heads, c.qkv_bias, c.qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * c.mlp_ratio))
        self.register_buffer("attn_mask", _shift_mask(size, w, shift) if shift else None)  # saved when shifted

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        H, W = hw
        B, L, C = x.shape
        y = self.norm1(x).view(B, H, W, C)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        mask = self.attn_mask if (H, W) == (self.size, self.size) or not self.shift else \
            _shift_mask(H, self.w, self.shift).to(x.device)
        y = self.attn(_windows(y, self.w), mask)  # (B*nW, w*w, C)
        y = _unwindows(y.view(-1, self.w, self.w, C), self.w, H, W)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(B, H * W, C)
        return x + self.mlp(self.norm2(x))


class _Blocks(nn.Module):
    def __init__(self, blocks: list[SwinBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class RSTB(nn.Module):
    """Residual Swin stage: x + conv(blocks(x)) on the token grid."""

    def __init__(self, dim: int, depth: int, heads: int, c: SwinIRFeaturesConfig):
        super().__init__()
        w = c.window_size
        self.residual_group = _Blocks([SwinBlock(dim, c.grid, heads, w, 0 if i % 2 == 0 else w // 2, c)
                                       for i in range(depth)])
        if c.resi_connection == "1conv":
            self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        elif c.resi_connection == "3conv":
            self.conv = nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                                      nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
                                      nn.Conv2d(dim // 4, dim, 3, 1, 1))
        else:
            raise ValueError(f"resi_connection must be '1conv' or '3conv', got {c.resi_connection!r}")

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        y = x
        for blk in self.residual_group.blocks:
            y = blk(y, hw)
        B, L, C = y.shape
        y = self.conv(y.transpose(1, 2).reshape(B, C, *hw))  # (B,C,H,W)
        return y.flatten(2).transpose(1, 2) + x


class ConvDownsampler(nn.Module):
    """conv3x3 + LeakyReLU(0.01), then one (x2) or two (x4) stride-2 convs, then conv3x3."""

    def __init__(self, cin: int, dim: int, downscale: int):
        super().__init__()
        self.downscale = downscale
        self.conv_before_downsample = nn.Sequential(nn.Conv2d(cin, dim, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.conv_down1 = nn.Conv2d(dim, dim, 3, 2, 1)
        if downscale == 4:
            self.conv_down2 = nn.Conv2d(dim, dim, 3, 2, 1)
        self.conv_last = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_down1(self.conv_before_downsample(x))
        if self.downscale == 4:
            x = self.conv_down2(x)
        return self.conv_last(x)


class _PatchNorm(nn.Module):
    """SwinIR's patch "embedding": (B,C,H,W) -> (B,H*W,C), then LayerNorm if patch_norm."""

    def __init__(self, dim: int, norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class SwinIRFeatures(nn.Module):
    """x (B,3,H,W) -> one (B, H/ds * W/ds, C) token tensor per kept branch."""

    def __init__(self, c: SwinIRFeaturesConfig):
        super().__init__()
        self.c = c
        C = c.embed_dim
        self.register_buffer("mean", torch.tensor(SWINIR_RGB_MEAN if c.in_chans == 3 else (0.0,)).view(1, -1, 1, 1),
                             persistent=False)
        self.conv_first = ConvDownsampler(c.in_chans, C, c.upscale) if c.downsample else nn.Conv2d(c.in_chans, C, 3, 1, 1)
        self.patch_embed = _PatchNorm(C, c.patch_norm)
        if c.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, c.grid * c.grid, C))
        half = len(c.depths) // 2
        self.layers = nn.ModuleList(RSTB(C, c.depths[i], c.num_heads[i], c) for i in range(half))
        self.branches = nn.ModuleList(
            nn.ModuleList(RSTB(C, c.depths[i], c.num_heads[i], c) for i in range(half, len(c.depths)))
            for _ in c.kept_branches)
        self.norm = nn.LayerNorm(C)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.conv_first((x - self.mean.to(x.dtype)) * self.c.img_range)  # (B,C,h,w)
        hw = (x.shape[2], x.shape[3])
        tokens = self.patch_embed(x)  # (B,h*w,C)
        t = tokens + self.absolute_pos_embed if self.c.ape else tokens
        for layer in self.layers:
            t = layer(t, hw)
        mid = t + tokens  # the trunk's skip: the normed patch tokens again (without the position embedding)
        outs = []
        for branch in self.branches:
            b = mid
            for layer in branch:
                b = layer(b, hw)
            outs.append(self.norm(b))
        return outs
