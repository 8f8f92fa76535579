"""The `osdhuman` command. The only code in the package that knows the command line.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed namespace, returns the exit code). The
list below is explicit: no module scanning. Subcommand modules import heavy libraries
inside their ``run`` functions so that ``osdhuman --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import warnings
import sys

from osdhuman import __version__

# module name in osdhuman.cli -> one per subcommand group (a module may register several)
COMMAND_MODULES = [
    "build_dataset",
    "degrade",
    "train",
    "restore",
    "evaluate",
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
    # warnings on the command line read as one line each, without file:line and source
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    from osdhuman.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"osdhuman {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"osdhuman {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        if exc.filename is None:  # not about a path the user can fix: a bug, keep the traceback
            raise
        # a path problem met during the work (e.g. a folder removed or a disk gone read-only)
        print(f"osdhuman {args.command}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1


class UsageError(Exception):
    """Bad command-line input found before any work started (printed, exit code 2)."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
