import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny (untrained, seeded) OSDHuman in eval mode. Tests must not modify it."""
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    return build_osdhuman(OSDHumanConfig(base_model="tiny")).eval()


@pytest.fixture(scope="session")
def sd21_meta():
    """SD-2.1-base-sized OSDHuman on the meta device (shapes and counts only)."""
    from osdhuman.models import OSDHumanConfig, build_osdhuman

    return build_osdhuman(OSDHumanConfig(base_model="sd21-random"), device="meta")
