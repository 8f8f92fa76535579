"""Argument helpers shared by the subcommands: config file + KEY=VALUE overrides, and the
checks every command makes on its command line before any work starts."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from osdhuman.cli import UsageError
from osdhuman.config import ConfigError, load_config
from osdhuman.outputs import OutputLock

# torch is imported inside check_device, and only for a device other than the CPU.

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file (defaults are used for missing keys)")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
        help="override one config value, e.g. --set selection.keep_fraction=0.5 (repeatable)",
    )


def resolve_config(cls: type[T], args: argparse.Namespace, extra: list[str] = ()) -> T:
    """Defaults <- --config FILE <- explicit flags (``extra``) <- --set overrides.

    A bad value that came from a flag is reported under the flag's name (``--batch-size``).
    """

    try:
        return load_config(cls, getattr(args, "config", None), [*extra, *getattr(args, "overrides", [])])
    except ConfigError as exc:
        msg = str(exc)
        for item in extra:
            key = item.split("=", 1)[0]
            for prefix in (f"{key}:", f"override.{key}:"):
                if msg.startswith(prefix):
                    raise ConfigError(f"--{key.replace('_', '-')}{msg[len(prefix) - 1:]}") from None
        raise


def check_output_dir(out: str | Path, inputs: Iterable[str | Path] = ()) -> None:
    """UsageError if ``out`` is an existing non-folder, or is one of the input folders or inside one."""

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder; choose another output folder")
    for d in inputs:
        d = Path(d)
        if d.is_dir() and out.resolve().is_relative_to(d.resolve()):
            raise UsageError(f"{out}: the output folder must not be the input folder {d} or inside it")


def output_lock(folder: str | Path, main_process_only: bool = False):
    """The output folder's lock (osdhuman.outputs.OutputLock) for the length of a ``with`` block:
    a second run into the same folder stops with 'another osdhuman run is writing here (pid N)'.
    ``main_process_only``: under a multi-process launch (RANK set) only process 0 takes it."""

    if main_process_only and int(os.environ.get("RANK", "0") or 0) != 0:
        return contextlib.nullcontext()
    return OutputLock(folder)


def check_device(device: str | None, flag: str = "--device") -> None:
    """UsageError for a device string torch cannot parse or whose backend is absent ('auto'/None pass).
    'cpu' needs no check, so the torch-free CPU paths (degrade, offline metrics) never import torch."""

    if device is None or device in ("auto", "cpu"):
        return
    import torch  # deferred: heavy, and not needed for a CPU run

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"{flag} {device!r}: not a device name; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{flag} {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{flag} {device}: MPS is not available on this machine")


def check_min(value: int | None, flag: str, minimum: int, maximum: int | None = None) -> None:
    """UsageError unless ``value`` is None or in [``minimum``, ``maximum``]."""

    if value is not None and value < minimum:
        raise UsageError(f"{flag} must be >= {minimum}, got {value}")
    if value is not None and maximum is not None and value > maximum:
        raise UsageError(f"{flag} must be <= {maximum}, got {value}")
