"""A job's settings as its one JSON argument: a settings dataclass (``actpat.settings``) encoded by
the rule that starts the job and decoded by the job.

The encoding is compact and key-sorted: Snakemake reruns a job when this argument changes, so the
same settings must always give the same text.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any


def encode(obj) -> str:
    """Compact, key-sorted JSON of a settings dataclass (stable: it is a rerun trigger). Its types
    are checked first (``check_types``): rules encode while Snakemake plans, so settings that would
    fail a job stop the run before Snakemake removes any output."""
    check_types(obj)
    return json.dumps(dataclasses.asdict(obj), sort_keys=True, separators=(",", ":"))


def decode(cls, data):
    """A ``cls`` instance from JSON text or a parsed dict (nested dataclasses, tuples, dicts), its
    types checked (a job refuses ``"seed": 1.0`` in one line instead of failing inside numpy)."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)
    obj = _build(cls, data)
    check_types(obj)
    return obj


class SettingsTypeError(TypeError):
    """A settings field holds a value of another type than it declares."""


def check_types(obj, where: str | None = None) -> None:
    """Raise SettingsTypeError naming the first field of a settings dataclass (nested ones
    included) whose value is not of its declared type. Strict: a bool is not an int and an int not
    a float, since a job fails on ``4.0`` windows and its JSON, the rerun trigger, spells ``1`` and
    ``1.0`` differently. ``Any`` (a source's config entry) is the schema's to check."""
    _check(type(obj), obj, where or type(obj).__name__)


def _check(tp, value, where: str) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or (value is None and type(None) in args):
        return
    if origin in (typing.Union, types.UnionType):
        return _check(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(tp) and isinstance(value, tp):
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            _check(hints[f.name], getattr(value, f.name), f"{where}.{f.name}")
    elif origin is tuple and isinstance(value, tuple):
        inner = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(inner) != len(value):
            raise SettingsTypeError(f"{where}: {value!r} has {len(value)} items, not {len(inner)}")
        for i, (a, v) in enumerate(zip(inner, value)):
            _check(a, v, f"{where}[{i}]")
    elif origin is dict and isinstance(value, dict):
        for k, v in value.items():
            _check(args[0], k, f"{where} key {k!r}")
            _check(args[1], v, f"{where}[{k!r}]")
    elif origin is None and isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
        return
    else:
        raise SettingsTypeError(f"{where}: {value!r} is of type {type(value).__name__}, not {getattr(tp, '__name__', tp)}")


def _build(tp, value):
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner[0], value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{tp.__name__}: unknown setting(s) {sorted(unknown)}")
        return tp(**{k: _build(hints[k], v) for k, v in value.items()})
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in value)
        return tuple(_build(a, v) for a, v in zip(args, value))
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        return {k: _build(val_tp, v) for k, v in value.items()}
    if tp is float:
        return float(value)
    return value
