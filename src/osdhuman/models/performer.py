"""A non-causal Performer encoder (FAVOR+ softmax-kernel attention), inference only.

    enc = Performer(dim=180, depth=4, heads=6, dim_head=128, nb_features=621, ff_mult=4)
    y = enc(x)          # (B, N, dim) -> (B, N, dim)

Each layer: x + Attn(LN(x)), then x + FF(LN(x)) with FF = Linear, GELU, Linear. Attention
maps queries and keys through positive random features exp(w.x - |x|^2/2) of a saved projection
matrix (nb_features x dim_head), with the query stabiliser taken per token and the key
stabiliser per head, and then runs linear attention (Choromanski et al. 2021).

Why our own and not the ``performer-pytorch`` package HAODiff uses (1.1.4): it runs with
torch 2.14 on Python 3.11 only when installed without its dependencies' current versions
(``local-attention`` 1.4.4 and ``axial-positional-embedding`` 0.2.1 pinned; we used it so for
the equality check in docs/reference.md §released), it imports ``distutils`` (gone
from Python 3.12), and it redraws the projection matrices every 1000 calls when a module is
left in training mode. Here the projection matrix
is a buffer loaded from the weights file and is never redrawn, so a restore is the same on
every call. Parameter names follow that package's state dict, so a released file loads as is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Performer", "default_nb_features"]


def default_nb_features(dim_head: int) -> int:
    """The random-feature count the package defaults to: int(d * ln d)."""
    return int(dim_head * math.log(dim_head))


def _features(x: torch.Tensor, proj: torch.Tensor, is_query: bool, eps: float = 1e-4) -> torch.Tensor:
    """Positive random features of x (B,h,N,d) -> (B,h,N,m)."""
    d = x.shape[-1]
    norm = d ** -0.25
    ratio = proj.shape[0] ** -0.5
    dash = torch.einsum("bhnd,md->bhnm", norm * x, proj.to(x.dtype))
    diag = (x ** 2).sum(-1, keepdim=True) / 2.0 * norm ** 2  # (B,h,N,1)
    stab = dash.amax(-1, keepdim=True) if is_query else dash.amax((-1, -2), keepdim=True)
    return ratio * (torch.exp(dash - diag - stab) + eps)


def _linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k (B,h,N,m), v (B,h,N,e) -> (B,h,N,e)."""
    d_inv = 1.0 / torch.einsum("bhnm,bhm->bhn", q, k.sum(-2))
    context = torch.einsum("bhnm,bhne->bhme", k, v)
    return torch.einsum("bhme,bhnm,bhn->bhne", context, q, d_inv)


class _FastAttention(nn.Module):
    def __init__(self, dim_head: int, nb_features: int):
        super().__init__()
        # filled from the weights file; never redrawn at inference
        self.register_buffer("projection_matrix", torch.zeros(nb_features, dim_head))


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, nb_features: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.fast_attention = _FastAttention(dim_head, nb_features)
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, inner) for _ in range(3))
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = (f(x).view(B, N, self.heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        proj = self.fast_attention.projection_matrix
        out = _linear_attention(_features(q, proj, True), _features(k, proj, False), v)  # (B,h,N,d)
        return self.to_out(out.transpose(1, 2).reshape(B, N, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.w1, self.act, self.w2 = nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)))


class _Wrap(nn.Module):
    """Holds ``fn`` under the name the package's state dict uses (``.fn``)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(dim), fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class _Layers(nn.Module):
    def __init__(self, layers: nn.ModuleList):
        super().__init__()
        self.layers = layers


class Performer(nn.Module):
    """Pre-norm Performer encoder; keys ``net.layers.{i}.0`` (attention) / ``.1`` (feed-forward)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, nb_features: int, ff_mult: int = 4):
        super().__init__()
        self.net = _Layers(nn.ModuleList(
            nn.ModuleList([_PreNorm(dim, _SelfAttention(dim, heads, dim_head, nb_features)),
                           _PreNorm(dim, _Wrap(_FeedForward(dim, ff_mult)))])
            for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.net.layers:
            x = x + attn(x)
            x = x + ff(x)
        return x
