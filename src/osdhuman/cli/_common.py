"""Argument helpers shared by the subcommands: config file + KEY=VALUE overrides."""

from __future__ import annotations

import argparse
from typing import TypeVar

from osdhuman.config import load_config

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file (defaults are used for missing keys)")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
        help="override one config value, e.g. --set selection.keep_fraction=0.5 (repeatable)",
    )


def resolve_config(cls: type[T], args: argparse.Namespace, extra: list[str] = ()) -> T:
    """Defaults <- --config FILE <- explicit flags (``extra``) <- --set overrides."""
    return load_config(cls, getattr(args, "config", None), [*extra, *getattr(args, "overrides", [])])
