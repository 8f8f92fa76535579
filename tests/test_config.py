from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from osdhuman.config import ConfigError, apply_overrides, load_config, save_config, to_dict


@dataclass
class Inner:
    rate: float = 0.5
    names: tuple[str, ...] = ("person",)


@dataclass
class Outer:
    steps: int = 10
    mode: Literal["fast", "exact"] = "fast"
    path: Optional[str] = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 20\ninner:\n  rate: 0.25\n")
    cfg = load_config(Outer, f, ["inner.names=[man, woman]", "mode=exact"])
    assert cfg.steps == 20 and cfg.mode == "exact"
    assert cfg.inner.rate == 0.25  # from file
    assert cfg.inner.names == ("man", "woman")  # from override, coerced to tuple
    assert cfg.path is None


def test_round_trip_through_saved_yaml(tmp_path):
    cfg = apply_overrides(Outer(), ["steps=3", "path=/x/y"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(out.read_text())["steps"] == 3
    assert load_config(Outer, out) == cfg
    assert to_dict(cfg)["inner"] == {"rate": 0.5, "names": ["person"]}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("stepz=3", "unknown key"),
        ("steps=2.5", "expected an integer"),
        ("mode=slow", "not one of"),
        ("inner.rate=abc", "expected a number"),
        ("steps", "KEY=VALUE"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(Outer(), [override])


def test_bad_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(Outer, missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: {rate: [1, 2}\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(Outer, bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("inner:\n  rat: 1\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml.*unknown key.*rat"):
        load_config(Outer, wrong)
