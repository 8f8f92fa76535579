"""Fixtures for the training tests: small crops of real photos (scikit-image's sample data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """Five real photos downscaled to about 56 px on the long side (PNG)."""
    data = pytest.importorskip("skimage.data")
    out = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        arr = np.asarray(getattr(data, name)())
        img = Image.fromarray(arr).convert("RGB")
        img.thumbnail((56, 56), Image.LANCZOS)
        img.save(out / f"{name}.png")
    return out


def _photo(name: str, size: int) -> Image.Image:
    data = pytest.importorskip("skimage.data")
    return Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB").resize((size, size), Image.LANCZOS)


@pytest.fixture(scope="session")
def one_photo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_photo")
    _photo("astronaut", 32).save(out / "astronaut.png")
    return out


AE_PHOTOS = ("astronaut", "coffee", "chelsea")


@pytest.fixture(scope="session")
def fitted_tiny_base(tmp_path_factory) -> Path:
    """A diffusers base-model folder (vae/, unet/, text_encoder/, tokenizer/) with the tiny
    preset's architecture whose VAE is FITTED, not random: a stand-in for SD-2.1's pretrained
    autoencoder, so that the frozen decoder can actually represent a photo.

    The tiny AutoencoderKL is trained as SD's VAE is (reconstruction MSE + a 1e-6 KL term on
    posterior samples) on three 32 px photos for 200 full-batch Adam steps (a few seconds on
    one CPU thread). So short a fit reconstructs the photos it saw (about 23 dB each) but does
    not generalise; the over-fit target (the 32 px astronaut) is therefore one of them.
    ``scaling_factor`` is 1 / std of the fitted latents, as SD's 0.18215 is. The UNet and the
    CLIP text encoder stay random (seeded): the generator learns through them with LoRA.
    Product code loads it like any local SD folder (``model.base_model=<folder>``).
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from osdhuman.models import config as C
    from osdhuman.models.loading import seeded
    from osdhuman.models.prompt import build_tiny_tokenizer

    photos = [torch.from_numpy(np.array(_photo(n, 32))).permute(2, 0, 1) for n in AE_PHOTOS]
    x = torch.stack(photos).float() / 127.5 - 1  # (3, 3, 32, 32) in [-1, 1]
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with seeded(0):
            vae = AutoencoderKL(**C.TINY_VAE_CONFIG)
            unet = UNet2DConditionModel(**C.TINY_UNET_CONFIG)
            text_encoder = CLIPTextModel(CLIPTextConfig(**C.TINY_TEXT_ENCODER_CONFIG))
        steps, gen = 200, torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps, pct_start=0.1)
        for _ in range(steps):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(generator=gen)).sample  # (3, 3, 32, 32)
            loss = (rec - x).pow(2).mean() + 1e-6 * post.kl().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()  # (3, 4, 4, 4)
            rec = vae.decode(z).sample.clamp(-1, 1)
    finally:
        torch.set_num_threads(n_threads)
    psnr = 10 * torch.log10(4 / (rec - x).pow(2).mean(dim=(1, 2, 3)))  # (3,) dB, RGB
    # the precondition the over-fit test relies on: the frozen decoder CAN show these photos
    assert psnr.min() > 20, f"tiny VAE fit too weak: reconstruction PSNR {psnr.tolist()} dB"
    vae.register_to_config(scaling_factor=float(1 / z.std()))
    out = tmp_path_factory.mktemp("fitted_tiny_base")
    vae.save_pretrained(out / "vae")
    unet.save_pretrained(out / "unet")
    text_encoder.save_pretrained(out / "text_encoder")
    build_tiny_tokenizer().save_pretrained(out / "tokenizer")
    return out


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on a shared 2-core machine run many times faster on one thread (no
    OpenMP oversubscription); restored after each test."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
