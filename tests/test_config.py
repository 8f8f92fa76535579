from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from osdhuman.config import ConfigError, Rule, apply_overrides, check_values, load_config, rule, save_config, to_dict


@dataclass
class Inner:
    rate: float = 0.5
    names: tuple[str, ...] = ("person",)


@dataclass
class Outer:
    steps: int = 10
    mode: Literal["fast", "exact"] = "fast"
    path: str | None = None
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


@dataclass
class Ruled:
    size: int = rule(512, ge=64, multiple_of=8)
    lr: float = rule(1e-4, gt=0)
    fraction: float = rule(0.5, ge=0, le=1)
    span: tuple[float, float] = rule((0.2, 3.0), ge=0, ordered=True)
    sizes: list[int] = rule(factory=lambda: [7, 9], ge=1)
    offset: float = -3.0  # no rule: any finite number


@pytest.mark.parametrize("override, fragment", [
    ("size=32", "size: must be >= 64, got 32"),
    ("size=100", "size: must be a multiple of 8, got 100"),
    ("lr=0", "lr: must be > 0, got 0"),
    ("fraction=1.5", "fraction: must be <= 1, got 1.5"),
    ("span=[3, 1]", r"span: must be \(lo, hi\) with lo <= hi, got \(3.0, 1.0\)"),
    ("span=[-1, 1]", "span: must be >= 0, got -1"),
    ("sizes=[7, 0]", "sizes: must be >= 1, got 0"),
    ("offset=nan", "offset: must be a finite number, got nan"),
    ("fraction=inf", "fraction: must be a finite number, got inf"),
])
def test_each_field_states_its_rule(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(Ruled(), [override])


def test_rules_live_on_the_fields_and_a_field_without_one_only_needs_finite_numbers(tmp_path):
    import dataclasses

    rules = {f.name: f.metadata.get("rule") for f in dataclasses.fields(Ruled)}
    assert rules["size"] == Rule(ge=64, multiple_of=8) and rules["offset"] is None
    cfg = apply_overrides(Ruled(), ["offset=-1e6", "size=1024", "span=[1, 1]"])
    assert cfg.offset == -1e6 and cfg.size == 1024 and cfg.span == (1.0, 1.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: -1\n")
    with pytest.raises(ConfigError, match="lr: must be > 0, got -1"):
        load_config(Ruled, bad)
    check_values(Ruled())  # the defaults keep their own rules
    with pytest.raises(ConfigError, match="fraction"):
        check_values(dataclasses.replace(Ruled(), fraction=2.0))


def test_no_rule_is_keyed_by_a_field_name():
    """Every number rule of every config lives on its field: the config module holds no table
    of field names (the design this replaced applied rules to any field called ``size``)."""
    import osdhuman.config as config

    tables = [k for k, v in vars(config).items() if isinstance(v, (set, frozenset, dict, tuple))
              and not k.startswith("__") and any(isinstance(x, str) for x in v)]
    assert tables == []
