"""Typed configs: dataclasses whose defaults are the paper's values, with checked overrides.

Every field of a model config carries a one-line source in its metadata (``src(...)``); overrides come
from suites and the command line as flat ``{"field": value}`` dicts (nested configs use dotted names)
and unknown fields are errors with a did-you-mean suggestion.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config field is unknown or has a value of the wrong type."""


def src(default: Any, source: str, *, keyed_when_set: bool = False) -> Any:
    """A dataclass field with a default and a one-line source (paper section, table or repo file).

    ``keyed_when_set``: a field added after jobs and stored stages existed; :func:`to_dict` leaves it out
    while it holds its default, so every config hash (job ids, stage reuse keys) made before it stays the
    same, and a changed value enters them."""
    if isinstance(default, list | dict | set):
        raise TypeError("use tuples for sequence defaults so configs stay frozen and hashable")
    return dataclasses.field(default=default, metadata={"source": source, "keyed_when_set": keyed_when_set})


def did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def field_sources(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("source", "") for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, str):
            if value.lower() in {"1", "true", "yes", "on"}:
                return True
            if value.lower() in {"0", "false", "no", "off"}:
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected a boolean, got {value!r}")
    if annotation in (int, float, str):
        try:
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected {annotation.__name__}, got {value!r}") from None
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, name) for v in value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        for arg in args:
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: {value!r} does not fit {annotation}")
    if typing.get_origin(annotation) is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{name}: {value!r} is not one of {typing.get_args(annotation)}")
        return value
    return value


def apply_overrides(config: T, overrides: Mapping[str, Any]) -> T:
    """Return a copy of a dataclass ``config`` with ``overrides`` applied (types coerced and checked)."""
    if not overrides:
        return config
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ConfigError(
                f"unknown config field {key!r} for {type(config).__name__}.{did_you_mean(head, names)} "
                f"Known fields: {', '.join(names)}."
            )
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif dataclasses.is_dataclass(getattr(config, head)) and isinstance(value, Mapping):
            nested.setdefault(head, {}).update(value)
        else:
            changes[head] = _coerce(value, hints[head], f"{type(config).__name__}.{key}")
    for head, sub in nested.items():
        changes[head] = apply_overrides(getattr(config, head), sub)
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-able data (tuples become lists), without the ``keyed_when_set`` fields
    that hold their defaults (so adding such a field changes no existing hash)."""
    return _plain(_without_unset(config, dataclasses.asdict(config)))


def _without_unset(config: Any, data: dict[str, Any]) -> dict[str, Any]:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("keyed_when_set") and value == f.default:
            data.pop(f.name)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            data[f.name] = _without_unset(value, data[f.name])
    return data


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to ``a/b/c`` keys (MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` items as overrides; each VALUE is a Python literal (``2``, ``0.5``, ``'dreg'``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise ValueError(
                f"--set {key}: {text!r} is not a Python literal; quote strings, e.g. --set \"{key}='{text}'\""
            ) from None
    return out
