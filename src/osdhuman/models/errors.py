"""Errors raised while building or loading OSDHuman weights."""

from __future__ import annotations

__all__ = ["WeightsError"]


class WeightsError(RuntimeError):
    """Missing or mismatched weights. The message names the file, the expected layout and
    where to obtain it."""
