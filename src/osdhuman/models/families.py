"""What each family of one-step restorers runs at by default (docs/reference.md §released).

    FAMILIES["haodiff"].timestep      # 199

A weights folder's family fixes its timestep, guidance, LQ-latent mode and colour fix; a user
may override each (the restore report records it), never silently.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILIES", "Family"]


@dataclass(frozen=True)
class Family:
    name: str
    timestep: int
    guidance_scale: float  # classifier-free guidance with the negative prompt; 1 = none
    latent: str  # "sample" | "mode": how the LQ latent is taken from the VAE posterior
    color_fix: str  # "wavelet" | "adain" | "none"
    prompt: str  # what gives the UNet its context, in words
    x0_float64: bool  # x0 = (z - sqrt(1-a) eps) / sqrt(a) in float64 (their code) or float32 (ours)


FAMILIES: dict[str, Family] = {
    "osdhuman": Family("osdhuman", 999, 1.0, "mode", "adain", "HFIE (RAM Swin-L tokens -> 77 queries)", False),
    "osediff": Family("osediff", 999, 1.0, "sample", "adain", "DAPE tags through CLIP, or the null prompt", False),
    "haodiff": Family("haodiff", 199, 3.5, "sample", "wavelet",
                      "dual SwinIR + Performer encoder: positive and negative prompt (CFG)", True),
    "osdface": Family("osdface", 399, 1.0, "sample", "none",
                      "VQ-VAE encoder -> 77 distinct codebook entries -> embedding change", True),
    "lora": Family("lora", 999, 1.0, "mode", "adain", "as chosen (--prompt-source)", False),
}
