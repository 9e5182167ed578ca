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
        try:
            value = yaml.safe_load(raw) if raw.strip() != "" else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ConfigError(f"override {item!r}: value is not valid YAML ({problem})") from None
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
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"config file {where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (atomically: temp name, then rename)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    """One config key as `vivit config` shows it."""

    key: str
    type: str
    default: Any
    doc: str
    section: str = ""
    """Dotted path of the dataclass that owns the key ('' for top-level keys)."""


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal under each field).

    Python keeps no such docstring at run time, so they are read from the class source, as
    litgpt/jsonargparse do; a class without source (e.g. compiled) yields none.
    """
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def type_name(tp: Any) -> str:
    """A short, readable name of a field annotation (`int | None`, `full | frozen`)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is Any:
        return "Any"
    return getattr(tp, "__name__", str(tp))


def describe(cls: type, path: str = "") -> list[KeyDoc]:
    """Every leaf key of a (nested) config dataclass with type, default and docstring."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = f"{path}.{f.name}" if path else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(describe(tp, key))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append(KeyDoc(key, type_name(tp), default, docs.get(f.name, ""), path))
    return out


def format_value(value: Any) -> str:
    """A value as it would be written in YAML or a `key=value` override."""
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()
