"""The `osdhuman` command. The only code in the package that knows the command line.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed namespace, returns the exit code). The
list below is explicit: no module scanning. Subcommand modules import heavy libraries
inside their ``run`` functions so that ``osdhuman --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings

from osdhuman import __version__
from osdhuman.config import ConfigError
from osdhuman.outputs import OutputLockedError

# module name in osdhuman.cli -> one per subcommand group (a module may register several)
COMMAND_MODULES = [
    "build_dataset",
    "degrade",
    "train",
    "restore",
    "evaluate",
    "export",
    "inspect",
    "app",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osdhuman",
        description="Human body restoration with one-step diffusion (OSDHuman), the HQ-ACF dataset pipeline and the PERSONA benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"osdhuman {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"osdhuman.cli.{name}").register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"osdhuman: {category.__name__}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; every failure a user can meet ends as one stderr line and an exit code.

    2: bad command line / config value (before any work); 1: a failure during the work (an
    OSError names the path and the problem: disk full, permission, read-only, ...). ^C
    (KeyboardInterrupt) is not caught here: callers and tests rely on it propagating.
    ``OSDHUMAN_DEBUG=1`` re-raises instead, for a traceback.
    """
    # warnings on the command line read as one line each, without file:line and source
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if os.environ.get("OSDHUMAN_DEBUG"):
            raise
        code, line = describe_error(exc)
        print(f"osdhuman {args.command}: {line}", file=sys.stderr)
        return code


def describe_error(exc: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception that ended a command."""

    if isinstance(exc, ConfigError):
        return 2, f"config error: {_one_line(exc)}"
    if isinstance(exc, UsageError):
        return 2, f"error: {_one_line(exc)}"
    if isinstance(exc, OutputLockedError):
        return 1, f"error: {_one_line(exc)}"
    if isinstance(exc, OSError):
        return 1, f"error: {os_error_line(exc)}"
    if isinstance(exc, MemoryError):
        return 1, "error: out of memory; use a smaller --batch-size (or tiles)"
    # a bug: still one line, with the way to the traceback
    return 1, f"internal error: {type(exc).__name__}: {_one_line(exc)} (run with OSDHUMAN_DEBUG=1 for the traceback)"


def os_error_line(exc: OSError) -> str:
    """'PATH: problem' for an OSError; the problem in words (errno name for the uncommon ones)."""
    problem = exc.strerror or _one_line(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        problem = "no space left on device (free some space or choose another output folder)"
    elif exc.errno == errno.EROFS:
        problem = "read-only file system"
    where = exc.filename if exc.filename is not None else None
    if where is None:
        return problem
    extra = f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
    return f"{where}{extra}: {problem}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class UsageError(Exception):
    """Bad command-line input found before any work started (printed, exit code 2)."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
