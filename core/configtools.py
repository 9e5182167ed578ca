"""Typed YAML configs: nested dataclasses built from dicts, with `a.b=value` overrides.

Unknown keys are errors that name the nearest valid key; values are converted to the
field's annotated type and a bad value names its key. Each component owns its dataclass
(and checks itself in ``__post_init__``); this module only knows how to fill them.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from common.atomic import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key (and a suggestion)."""


def _nearest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    return f"; did you mean '{match[0]}'?" if match else ""


def _unknown_key(path: str, name: str, options: list[str]) -> ConfigError:
    full = f"{path}.{name}" if path else name
    valid = ", ".join(sorted(options))
    return ConfigError(
        f"unknown config key '{full}'{_nearest(name, options)} (valid here: {valid})"
    )


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to annotation `tp`, or raise naming `key`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"config key '{key}': bad value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(
            f"config key '{key}': value {value!r} is not one of {list(allowed)}"
            f"{_nearest(str(value), [str(a) for a in allowed])}"
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        items = [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected {tp.__name__}, got {value!r}")
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value) if not isinstance(value, str) else tp(yaml.safe_load(value))
        except (TypeError, ValueError):
            raise ConfigError(
                f"config key '{key}': expected {tp.__name__}, got {value!r}"
            ) from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            raise _unknown_key(path, name, list(fields))
        key = f"{path}.{name}" if path else name
        kwargs[name] = _convert(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path or 'config'}: {err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (for YAML, MLflow params and checkpoints)."""
    return dataclasses.asdict(cfg)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{'a': {'b': 1}}` -> `{'a.b': 1}` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str], cls: type | None = None) -> None:
    """Apply `a.b=value` strings to a nested dict in place (values parsed as YAML scalars).

    With `cls`, the dotted path is checked against the dataclass tree first so that a
    misspelt key is reported with its nearest valid name rather than silently added.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        if cls is not None:
            _check_path(cls, parts)
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
        node[parts[-1]] = value


def _check_path(cls: type, parts: list[str]) -> None:
    node: Any = cls
    walked: list[str] = []
    for part in parts:
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return  # inside a free-form dict field
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            raise _unknown_key(".".join(walked), part, list(fields))
        walked.append(part)
        node = typing.get_type_hints(node)[part]
        args = [a for a in typing.get_args(node) if a is not type(None)]
        if typing.get_origin(node) in (Union, types.UnionType) and len(args) == 1:
            node = args[0]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or non-mapping is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (atomically: temp name, then rename)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
