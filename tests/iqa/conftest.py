"""Real photo pairs for the metric tests: scikit-image's bundled photos and degraded copies
(Gaussian blur, then JPEG), as float tensors (N, 3, H, W) in [0, 1]."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

skdata = pytest.importorskip("skimage.data")


def degrade(img: np.ndarray, blur: float = 1.5, quality: int = 40) -> np.ndarray:
    im = Image.fromarray(img)
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return np.array(Image.open(buf).convert("RGB"))


def to_tensor(*imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Three real photos cropped to 384x384 (whole NIQE blocks, whole PIQE blocks)."""
    return {
        "astronaut": skdata.astronaut()[:384, 64:448],
        "chelsea": skdata.chelsea()[:288, :448],
        "coffee": skdata.coffee()[:384, :576],
    }


@pytest.fixture(scope="session")
def tools():
    """The helpers above, for tests (test modules here are not a package)."""

    class Tools:
        pass

    t = Tools()
    t.degrade = staticmethod(degrade)
    t.to_tensor = staticmethod(to_tensor)
    return t
