"""Fixed prompts (paper Table 4 ablations: a text prompt, the null prompt " ").

SD-2.1's CLIP text encoder is run ONCE at build time; the result is kept as a tensor (and
saved with the weights), so no text encoder is needed at inference. The tiny preset builds a
byte-level CLIP tokenizer in memory (vocabulary: the 256 byte symbols, their word-final
forms and the two special tokens; no merges), so it needs no download.
"""

from __future__ import annotations

import torch
from torch import nn

# transformers is imported inside the tokenizer builder (~1 s).

__all__ = ["FixedPrompt", "build_tiny_tokenizer", "encode_text"]


class FixedPrompt(nn.Module):
    """A prompt extractor that returns the same embedding for every image.

    embeds: (1, L, D). forward(lq (B,3,H,W), hq=None) -> (B, L, D).
    """

    def __init__(self, embeds: torch.Tensor, text: str = ""):
        super().__init__()
        if embeds.ndim != 3 or embeds.shape[0] != 1:
            raise ValueError(f"FixedPrompt expects (1, L, D) embeddings, got {tuple(embeds.shape)}")
        self.register_buffer("embeds", embeds.detach().clone())  # (1, L, D)
        self.text = text

    def forward(self, lq: torch.Tensor, hq: torch.Tensor | None = None) -> torch.Tensor:
        return self.embeds.expand(lq.shape[0], -1, -1).to(lq.device)  # (B, L, D)

    def extra_repr(self) -> str:
        return f"text={self.text!r}, shape={tuple(self.embeds.shape)}"


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP reversible byte -> printable unicode table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def build_tiny_tokenizer():
    """A real ``transformers.CLIPTokenizer`` with a 514-token byte-level vocabulary (no merges).

    Ids: 0..255 byte symbols, 256..511 word-final symbols, 512 <|startoftext|>, 513 <|endoftext|>.
    Deterministic and offline; for the random presets only (SD's vocabulary has 49408 tokens).
    """
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


@torch.no_grad()
def encode_text(text_encoder: nn.Module, tokenizer, text: str, max_length: int = 77) -> torch.Tensor:
    """CLIP text embedding as SD-2.1 uses it (last hidden state): (1, max_length, D) float32."""
    ids = tokenizer(
        [text], padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    ).input_ids  # (1, 77)
    dev = next(text_encoder.parameters()).device
    out = text_encoder(ids.to(dev))[0]  # (1, 77, D)
    return out.float().cpu()
