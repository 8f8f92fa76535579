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


@pytest.fixture(scope="session")
def one_photo_dir(tmp_path_factory) -> Path:
    data = pytest.importorskip("skimage.data")
    out = tmp_path_factory.mktemp("one_photo")
    img = Image.fromarray(np.asarray(data.astronaut())).convert("RGB").resize((32, 32), Image.LANCZOS)
    img.save(out / "astronaut.png")
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
