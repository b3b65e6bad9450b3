"""The one typed boundary: a mapping of untrusted values becomes a dataclass config here, and nowhere else.

    cfg = coerce(TrainConfig, {"lr": "1e-3", "steps": 200.0}, "train")   # TrainConfig(lr=0.001, steps=200, ...)

Every value is converted to its field's annotated type (the dataclass is the schema, as in OmegaConf's structured
configs, without the ~5 ms per merge): ints from integral numbers or their text, floats from numbers or text
(finite only: `lr: .inf` is refused), bools from true/false (yes/no, on/off, 1/0), strings from scalars, lists,
tuples and dicts element by element, nested dataclasses recursively, `X | None` with None. An unknown key, a
missing required field or a value of the wrong type is a ValueError naming the dotted field, what is allowed and
what was given (one line: the CLI prints it with exit code 2). The dataclass's own `__post_init__` then checks
ranges and cross-field rules with `check`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Union

_MISSING = dataclasses.MISSING
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def check(cond: bool, name: str, allowed: str, value: Any) -> None:
    """Raise the one-line ValueError every config uses: field, what is allowed, what was given."""
    if not cond:
        raise ValueError(f"{name}: must be {allowed} (got {value!r})")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved annotation} of a dataclass (string annotations resolved once per class)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def required_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.init and f.default is _MISSING and f.default_factory is _MISSING]


def coerce(cls: type, values: Any, where: str = ""):
    """`cls(**values)` with every value converted to its field's type; ValueError naming `where.field` otherwise."""
    if isinstance(values, cls):
        return values
    label = where or cls.__name__
    if not isinstance(values, dict):
        raise ValueError(f"{label}: must be a mapping of {cls.__name__} fields (got {values!r})")
    types_ = field_types(cls)
    unknown = sorted(str(k) for k in values if k not in types_)
    if unknown:
        raise ValueError(f"{_dotted(where, unknown[0])}: unknown key; valid: {', '.join(sorted(types_))}")
    missing = [k for k in required_fields(cls) if k not in values]
    if missing:
        raise ValueError(f"{_dotted(where, missing[0])}: required (no default)")
    return cls(**{k: convert(types_[k], v, _dotted(where, k)) for k, v in values.items()})


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def convert(tp: Any, value: Any, where: str) -> Any:
    """`value` as type `tp` (see the module docstring); ValueError naming `where` if it cannot be."""
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return convert(rest[0], value, where)
        return value
    if dataclasses.is_dataclass(tp):
        return coerce(tp, value, where)
    if tp is bool:
        return _to_bool(value, where)
    if tp is int:
        return _to_int(value, where)
    if tp is float:
        return _to_float(value, where)
    if tp is str:
        return _to_str(value, where)
    if origin in (list, tuple) or tp in (list, tuple):
        return _to_sequence(origin or tp, args, value, where)
    if origin is dict or tp is dict:
        return _to_dict(args, value, where)
    return value


def _bad(where: str, what: str, value: Any) -> ValueError:
    return ValueError(f"{where}: must be {what} (got {value!r})")


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise _bad(where, "true or false", value)


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise _bad(where, "an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                raise _bad(where, "an integer", value) from None
            if f.is_integer():
                return int(f)
    raise _bad(where, "an integer", value)


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise _bad(where, "a number", value)
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise _bad(where, "a number", value) from None
    else:
        raise _bad(where, "a number", value)
    if not math.isfinite(out):
        raise _bad(where, "a finite number", value)
    return out


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    raise _bad(where, "a string", value)


def _to_sequence(kind: type, args: tuple, value: Any, where: str):
    if not isinstance(value, (list, tuple)):
        raise _bad(where, "a list", value)
    if kind is tuple and len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],)
    elem = args[0] if len(args) == 1 else Any
    out = [convert(elem, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if kind is tuple else out


def _to_dict(args: tuple, value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _bad(where, "a mapping", value)
    vt = args[1] if len(args) == 2 else Any
    return {k: convert(vt, v, _dotted(where, str(k))) for k, v in value.items()}
