import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_pipe():
    """Tiny untrained pipeline (CPU, fp32). Tests pass per-call settings instead of mutating it."""
    from osdhuman.pipelines import RestorationPipeline

    return RestorationPipeline.from_pretrained(None, base_model="tiny", device="cpu")


@pytest.fixture(scope="session")
def astronaut():
    """A real photo (skimage's astronaut) at an odd size: 333 wide x 517 high, uint8 RGB."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((333, 517), Image.BICUBIC))
