"""Shared test settings: never touch the network, keep runs deterministic and small."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


import pytest  # noqa: E402 - after the environment above, which must precede every import


@pytest.fixture()
def no_weights_env(monkeypatch):
    """Offline, and no real weights configured through the environment (OSDHUMAN_*)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("OSDHUMAN_WEIGHTS", "OSDHUMAN_BASE_MODEL", "OSDHUMAN_HFIE_ENCODER"):
        monkeypatch.delenv(name, raising=False)
