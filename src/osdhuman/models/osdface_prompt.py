"""OSDFace's prompt: a VQ-VAE encoder's codebook entries, widened to the UNet's context.

    enc = load_osdface_encoder(Path("pretrained/associate_2.ckpt"), Path("pretrained/embedding_change_weights.pth"))
    p = enc(lq)             # lq (B,3,H,W) in [-1,1] -> (B,77,1024)

Steps (docs/reference.md §released):
  1. resize to 512x512 bilinearly and apply (x - 0.5) / 0.5 once more (OSDFace feeds its
     already [-1,1] image through that normalisation, so the encoder sees [-3,1]);
  2. the VQ-VAE encoder (conv_in, resolution levels of ResNet blocks with attention at the
     16x16 level, stride-2 convs with (0,1,0,1) zero padding, a middle block, GroupNorm + swish
     + conv_out) and ``quant_conv`` -> a (B, e, 16, 16) map;
  3. each of the 256 positions takes its nearest codebook entry (squared distance); positions
     are ordered by that distance and the first 77 DISTINCT entries are kept (rows of zeros if
     fewer) -> (B, 77, e);
  4. "embedding change": two 1x1 Conv1d (e -> e/2 -> 1024), each followed by SiLU.

The architecture is read from the tensors' shapes (channel widths, levels, blocks per level,
where attention sits); OSDFace hard-codes it, so the file alone describes it. The codebook file
holds a whole training checkpoint: only ``state_dict`` entries under ``vqvae_LQ.`` outside the
decoder are used, as OSDFace's own loader does; the rest is counted in ``ignored``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from osdhuman.models.errors import WeightsError
from osdhuman.models.tensor_files import load_tensor_file, state_dict_mismatch

__all__ = ["OSDFACE_CODEBOOK_FILE", "OSDFACE_EMBED_FILE", "OSDFacePrompt", "load_osdface_encoder"]

OSDFACE_CODEBOOK_FILE = "associate_2.ckpt"
OSDFACE_EMBED_FILE = "embedding_change_weights.pth"
PREFIX = "vqvae_LQ."
N_TOKENS = 77
INPUT_SIZE = 512


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 convs (``norm2`` is kept for the file's sake)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm1, self.norm2 = _norm(c), _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        h = self.norm1(x)
        q = self.q(h).reshape(b, c, -1).transpose(1, 2) * c ** -0.5  # (b,hw,c)
        k = self.k(h).reshape(b, c, -1)  # (b,c,hw)
        v = self.v(h).reshape(b, c, -1).transpose(1, 2)  # (b,hw,c)
        w = torch.softmax(q @ k, dim=-1) @ v  # (b,hw,c)
        return x + self.proj_out(w.transpose(1, 2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Level(nn.Module):
    def __init__(self, blocks: list[nn.Module], attn: list[nn.Module], down: bool, c: int):
        super().__init__()
        self.block, self.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
        if down:
            self.downsample = Downsample(c)


class _Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResBlock(c, c), AttnBlock(c), ResBlock(c, c)


class VQEncoder(nn.Module):
    """(B,3,512,512) -> (B, z, 16, 16) for OSDFace's six levels (mults 1,2,2,2,4,8 at ch 64)."""

    def __init__(self, ch: int, mults: list[int], blocks: int, attn_levels: set[int], z: int, mid: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        cin, levels = ch, []
        for i, m in enumerate(mults):
            cout = ch * m
            res = [ResBlock(cin if j == 0 else cout, cout) for j in range(blocks)]
            att = [AttnBlock(cout) for _ in range(blocks)] if i in attn_levels else []
            levels.append(_Level(res, att, i != len(mults) - 1, cout))
            cin = cout
        self.down = nn.ModuleList(levels)
        if mid:
            self.mid = _Mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, z, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for j, blk in enumerate(level.block):
                h = blk(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        if hasattr(self, "mid"):
            h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class _Codebook(nn.Module):
    def __init__(self, n: int, e: int):
        super().__init__()
        self.embedding = nn.Embedding(n, e)


class _EmbeddingChange(nn.Module):
    def __init__(self, e: int, out: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(e, e // 2, 1), nn.Conv1d(e // 2, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,77,e) -> (B,77,out)
        x = F.silu(self.conv2(F.silu(self.conv1(x.transpose(1, 2)))))
        return x.transpose(1, 2)


def distinct_nearest_codes(h: torch.Tensor, codebook: torch.Tensor, n: int = N_TOKENS) -> torch.Tensor:
    """h (B,e,H,W), codebook (K,e) -> (B,n,e): the first ``n`` distinct nearest entries, positions
    taken in order of increasing distance; zero rows when fewer than ``n`` are distinct."""
    B, e = h.shape[:2]
    z = h.permute(0, 2, 3, 1).reshape(B, -1, e)  # (B,HW,e)
    d = (z ** 2).sum(-1, keepdim=True) + (codebook ** 2).sum(1) - 2 * z @ codebook.t()  # (B,HW,K)
    out = torch.zeros(B, n, e, dtype=h.dtype, device=h.device)
    for b in range(B):
        dist, idx = d[b].min(dim=1)  # (HW,)
        order = torch.sort(dist).indices
        chosen: list[int] = []
        for i in idx[order].tolist():
            if i not in chosen:
                chosen.append(i)
                if len(chosen) == n:
                    break
        out[b, :len(chosen)] = codebook[chosen]
    return out


class OSDFacePrompt(nn.Module):
    """lq (B,3,H,W) in [-1,1] -> (B, 77, context width)."""

    dual = False

    def __init__(self, encoder: VQEncoder, n_codes: int, e: int, z: int, out: int):
        super().__init__()
        self.encoder = encoder
        self.quant_conv = nn.Conv2d(z, e, 1)
        self.quantize = _Codebook(n_codes, e)
        self.embedding_change = _EmbeddingChange(e, out)
        self.ignored: list[str] = []

    def forward(self, lq: torch.Tensor, hq: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(lq, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        h = self.quant_conv(self.encoder((x - 0.5) / 0.5))  # (B,e,16,16)
        codes = distinct_nearest_codes(h, self.quantize.embedding.weight)  # (B,77,e)
        return self.embedding_change(codes)


# ------------------------------------------------------------------------------ loading
def _arch(sd: dict, where: Path) -> dict:
    """The encoder's widths and layout from its tensor shapes."""
    try:
        ch = int(sd["encoder.conv_in.weight"].shape[0])
        levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
        blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
        mults = [int(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) // ch for i in levels]
        attn = {i for i in levels if f"encoder.down.{i}.attn.0.q.weight" in sd}
        return {"ch": ch, "mults": mults, "blocks": blocks, "attn_levels": attn,
                "z": int(sd["encoder.conv_out.weight"].shape[0]), "mid": "encoder.mid.block_1.conv1.weight" in sd,
                "e": int(sd["quant_conv.weight"].shape[0]), "n": int(sd["quantize.embedding.weight"].shape[0])}
    except KeyError as exc:
        raise WeightsError(f"{where}: no {PREFIX}{exc.args[0]} (a VQ-VAE encoder with quant_conv and "
                           f"quantize.embedding is expected under state_dict/{PREFIX})") from None


def load_osdface_encoder(codebook_file: Path, embed_file: Path) -> OSDFacePrompt:
    data = load_tensor_file(codebook_file)[0]
    state = data.get("state_dict")
    if not isinstance(state, dict) or not any(str(k).startswith(PREFIX) for k in state):
        raise WeightsError(f"{codebook_file}: not OSDFace's codebook checkpoint: expected state_dict with "
                           f"{PREFIX}* tensors; it holds: {', '.join(map(str, list(data)[:8]))}")
    sd, ignored = {}, []
    for k, v in state.items():
        if not torch.is_tensor(v):
            continue
        if k.startswith(PREFIX) and not k.startswith(PREFIX + "decoder.") and k[len(PREFIX):].startswith(
                ("encoder.", "quant_conv.", "quantize.embedding.")):
            sd[k[len(PREFIX):]] = v
        else:
            ignored.append(k)
    a = _arch(sd, codebook_file)
    emb = {k: v for k, v in load_tensor_file(embed_file)[0].items() if torch.is_tensor(v)}
    w1 = emb.get("conv1.weight")
    w2 = emb.get("conv2.weight")
    if w1 is None or w2 is None or set(emb) != {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"}:
        raise WeightsError(f"{embed_file}: expected the embedding change's conv1.weight/bias and conv2.weight/bias; "
                           f"it holds: {', '.join(list(emb)[:8]) or 'no tensors'}")
    if w1.shape[1] != a["e"]:
        raise WeightsError(f"{embed_file}: conv1 takes {w1.shape[1]} channels but the codebook in "
                           f"{codebook_file.name} has entries of width {a['e']}")
    enc = VQEncoder(a["ch"], a["mults"], a["blocks"], a["attn_levels"], a["z"], a["mid"])
    model = OSDFacePrompt(enc, a["n"], a["e"], a["z"], int(w2.shape[0]))
    tensors = {**sd, **{f"embedding_change.{k}": v for k, v in emb.items()}}
    if (problem := state_dict_mismatch(tensors, model.state_dict())) is not None:
        raise WeightsError(f"{codebook_file}: the encoder tensors do not fit a VQ-VAE encoder: {problem}")
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    model.ignored = ignored
    return model.eval().requires_grad_(False)
