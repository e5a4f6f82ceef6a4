"""Turn plain mappings (parsed YAML) into frozen, validated config dataclasses.

One generic converter serves every section: unknown keys are an error that names the key and suggests
the closest valid one, values are checked against the field's type annotation, and each dataclass checks
its own ranges in ``__post_init__`` with :func:`require`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from inflow.errors import ConfigError

T = TypeVar("T")


class _RangeError(ConfigError):
    """A range check failed for ``key`` (relative to its section); re-raised with the full path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def require(condition: bool, key: str, message: str) -> None:
    """Raise a :class:`ConfigError` for ``key`` (a field of the section being built) unless ``condition``."""
    if not condition:
        raise _RangeError(key, message)


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; missing keys take the field defaults.

    ``where`` is the dotted path of the section (``"warmup.lora"``) used in error messages.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"params.yaml: {where or 'top level'}: expected a mapping of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(fields))}"
        raise ConfigError(f"params.yaml: unknown key '{_join(where, str(key))}' ({hint})")
    hints = get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except _RangeError as exc:
        raise ConfigError(f"params.yaml: {_join(where, exc.key)}: {exc.message}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"params.yaml: {key}: {message}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"params.yaml: {key}: bad value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        _check(value in allowed, key, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        _check(isinstance(value, (list, tuple)), key, f"expected a list, got {value!r}")
        (item_tp, _ellipsis) = get_args(tp)
        return tuple(_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key)
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads "1e-3" as a string; accept it, and ints, as floats.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool), key, f"expected a number, got {value!r}"
        )
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"config field {key} has unsupported type {_type_name(tp)}")  # programming error
