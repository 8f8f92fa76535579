"""Typed configs: dataclasses loaded from YAML, overridden from the command line, saved
beside every output.

Every stage of osdhuman takes a plain dataclass (typed fields with defaults). This module
is the one place that turns YAML files and ``key.sub=value`` overrides into those
dataclasses and back:

    cfg = load_config(CurationConfig, "configs/curation.yaml", ["blur.min_laplacian_var=80"])
    save_config(cfg, out_dir / "config.yaml")

Unknown keys, wrong types and unreadable files raise :class:`ConfigError` naming the file
and the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")

__all__ = ["ConfigError", "load_config", "from_dict", "to_dict", "save_config", "apply_overrides", "check_values"]


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
    if origin in (list, tuple, typing.List, typing.Tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        items = list(value)
        if origin in (tuple, typing.Tuple):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(items))
            if args:
                if len(args) != len(items):
                    raise ConfigError(f"{where}: expected {len(args)} values, got {len(items)}")
                return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(items, args)))
            return tuple(items)
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin in (dict, typing.Dict):
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


# -- value rules that hold for every config dataclass ---------------------------------------
# A field may state its own rule with dataclasses.field(metadata={"range": (lo, hi)}) (None =
# open end) or {"signed": True}; otherwise the rules below apply by field name, and every
# other number must be finite and >= 0 (no knob of osdhuman means anything below zero).
SEED_MAX = 2**32 - 1  # numpy's and torch's seeding limit
SIGNED = {"rotation"}  # angle ranges
AT_LEAST_ONE = {
    "size", "batch_size", "scale", "grad_accum_steps", "tile_size", "lora_rank", "hfie_image_size", "hfie_heads",
    "hfie_query_len", "num_train_timesteps", "shard_size", "max_side", "kernel_max_size", "global_batch_size",
    "min_long_side", "min_short_side", "max_people", "block_size", "window_size",
}
POSITIVE = {"lr", "regularizer_lr", "eps", "normalizer_eps", "lora_alpha", "beta_start", "beta_end", "sigma"}
UNIT_INTERVAL_SUFFIXES = ("_prob", "_fraction", "_iou", "iou_threshold", "_conf", "_probs")
NAMED_RANGES = {"jpeg_quality": (1, 100), "png_compression": (0, 9), "betas": (0, 0.999999)}


def _rule(f: dataclasses.Field) -> tuple[float | None, float | None, bool]:
    """(lo, hi, lo_exclusive) of a field's numbers."""
    if "range" in f.metadata:
        lo, hi = f.metadata["range"]
        return lo, hi, False
    if f.metadata.get("signed") or f.name in SIGNED:
        return None, None, False
    name = f.name
    if name == "seed" or name.endswith("_seed"):
        return 0, SEED_MAX, False
    if name in NAMED_RANGES:
        lo, hi = NAMED_RANGES[name]
        return lo, hi, False
    if name.endswith(UNIT_INTERVAL_SUFFIXES) or name in ("keep_fraction", "probs", "kind_probs"):
        return 0, 1, False
    if name in AT_LEAST_ONE:
        return 1, None, False
    if name in POSITIVE:
        return 0, None, True
    return 0, None, False


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _numbers(item)]
    return []


def _check_number(v: float, lo, hi, lo_excl: bool, where: str) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{where}: must be a finite number, got {v}")
    if lo is not None and (v <= lo if lo_excl else v < lo):
        raise ConfigError(f"{where}: must be {'>' if lo_excl else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(f"{where}: must be <= {hi}, got {v}")


def check_values(cfg: Any, where: str = "") -> None:
    """Walk every field of ``cfg`` (nested dataclasses too): ranges and signs; ConfigError naming the key."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_values(value, key)
            continue
        lo, hi, lo_excl = _rule(f)
        for v in _numbers(value):
            _check_number(v, lo, hi, lo_excl, key)


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
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.osdtmp-{os.getpid()}")  # osdhuman.outputs.TMP_MARK: swept by reruns
    try:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or ".osdtmp-" in str(exc.filename):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    return path
