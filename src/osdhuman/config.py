"""Typed configs: dataclasses loaded from YAML, overridden from the command line, saved
beside every output.

Every stage of osdhuman takes a plain dataclass (typed fields with defaults). This module
is the one place that turns YAML files and ``key.sub=value`` overrides into those
dataclasses and back:

    cfg = load_config(CurationConfig, "configs/curation.yaml", ["blur.min_laplacian_var=80"])
    save_config(cfg, out_dir / "config.yaml")

Unknown keys, wrong types and unreadable files raise :class:`ConfigError` naming the file
and the key, before any work starts. So do values that break a field's rule, which is stated
where the field is declared (:func:`rule`)::

    size: int = rule(512, ge=64, multiple_of=8)
    keep_fraction: float = rule(1 / 3, gt=0, le=1)

A field without a rule only has to hold finite numbers. Rules that tie two fields together
stay in that dataclass's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from osdhuman.outputs import atomic_write_text

T = TypeVar("T")

__all__ = ["ConfigError", "load_config", "from_dict", "to_dict", "save_config", "apply_overrides", "check_fields", "check_values", "rule", "Rule", "SEED_MAX"]


class ConfigError(ValueError):
    """A config file, key or value that cannot be used."""


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``; raise ConfigError naming ``where``."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:  # try the next member of the union
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple, list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        items = list(value)
        if origin in (tuple, tuple):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(items))
            if args:
                if len(args) != len(items):
                    raise ConfigError(f"{where}: expected {len(args)} values, got {len(items)}")
                return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(items, args)))
            return tuple(items)
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin in (dict, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        k_tp, v_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, k_tp, where): _coerce(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if _is_dataclass_type(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not math.isfinite(f):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("+-").isdigit()):
            return int(value)  # exact: a 30-digit seed stays what it is (and the range rule names it)
        if f != int(f):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (possibly partial, nested) mapping."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(types_)}")
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}") for k, v in data.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in kwargs.items():  # each value against its field's rule, before __post_init__ sees it
        check_field(fields[k], v, f"{where}.{k}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(cfg: Any) -> Any:
    """A dataclass (recursively) as plain YAML-safe Python values."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Return a copy of ``cfg`` with ``a.b=value`` overrides applied (values parsed as YAML)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. selection.keep_fraction=0.5)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key, value)
    return from_dict(type(cfg), data, where="override")


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (if any), then ``overrides``."""
    cfg = cls()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a text (UTF-8) file: byte {exc.start} is 0x{exc.object[exc.start]:02x}; "
                              "a config file is YAML text") from None
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from exc
        merged = to_dict(cfg)
        _deep_update(merged, data, str(path))
        cfg = from_dict(cls, merged, where=str(path))
    cfg = apply_overrides(cfg, overrides)
    check_values(cfg)
    return cfg


# -- value rules, stated on each field where it is declared ----------------------------------
SEED_MAX = 2**32 - 1  # numpy's and torch's seeding limit


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a config field's numbers must satisfy (each number of a list / tuple field):
    ``ge`` / ``gt`` a lower bound, ``le`` an upper one, ``multiple_of`` a step (sizes the
    model's /8 latent grid can take); ``ordered``: a (lo, hi) pair with lo <= hi."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    multiple_of: int | None = None
    ordered: bool = False

    def check(self, value: Any, where: str) -> None:
        for v in _numbers(value):
            if self.ge is not None and v < self.ge:
                raise ConfigError(f"{where}: must be >= {self.ge}, got {v}")
            if self.gt is not None and v <= self.gt:
                raise ConfigError(f"{where}: must be > {self.gt}, got {v}")
            if self.le is not None and v > self.le:
                raise ConfigError(f"{where}: must be <= {self.le}, got {v}")
            if self.multiple_of is not None and v % self.multiple_of:
                m = self.multiple_of
                near = max(round(v / m) * m, math.ceil(max(self.ge or m, self.gt or 0) / m) * m)
                raise ConfigError(f"{where}: must be a multiple of {m}, got {v} (nearest: {near})")
        if self.ordered and value is not None and len(value) == 2 and value[1] < value[0]:
            raise ConfigError(f"{where}: must be (lo, hi) with lo <= hi, got {tuple(value)}")


def rule(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, ge: float | None = None,
         gt: float | None = None, le: float | None = None, multiple_of: int | None = None,
         ordered: bool = False) -> Any:
    """A dataclass field that states the rule its numbers obey, where the field is declared::

        size: int = rule(512, ge=1)
        lr: float = rule(5e-5, gt=0)
        keep_fraction: float = rule(0.33, ge=0, le=1)
        sigma: tuple[float, float] = rule((0.2, 3.0), gt=0, ordered=True)
        sizes: list[int] = rule(factory=lambda: [7, 9], ge=1)
        tile_size: int = rule(512, ge=64, multiple_of=8)

    A field declared without ``rule`` has no rule beyond the one for every number: finite."""
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={"rule": Rule(ge, gt, le, multiple_of, ordered)})


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _numbers(item)]
    return []


def check_field(f: dataclasses.Field, value: Any, key: str) -> None:
    """``value`` against field ``f``'s rule (every number finite, then its own rule, if any)."""
    for v in _numbers(value):
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}: must be a finite number, got {v}")
    if "rule" in f.metadata:
        f.metadata["rule"].check(value, key)


def check_fields(cfg: Any) -> None:
    """``cfg``'s own fields against their rules: for the ``__post_init__`` of a config that
    Python code builds directly (the pipeline's), as files and overrides are checked on load."""
    for f in dataclasses.fields(cfg):
        check_field(f, getattr(cfg, f.name), f.name)


def check_values(cfg: Any, where: str = "") -> None:
    """Every field's rule, nested configs included; ConfigError naming the key."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_values(value, key)
        else:
            check_field(f, value, key)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last
    silently, so a typo'd second ``lr:`` would win unseen)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:  # an unhashable key: the base loader reports it
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {seen[key]})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML parse error on one line: 'line L, column C: problem'."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _deep_update(base: dict, new: dict, where: str) -> None:
    if not isinstance(new, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(new).__name__}")
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v, f"{where}:{k}")
        else:
            base[k] = v


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); return the path."""
    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
