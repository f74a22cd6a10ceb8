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


def encode(obj) -> str:
    """Compact, key-sorted JSON of a settings dataclass (stable: it is a rerun trigger)."""
    return json.dumps(dataclasses.asdict(obj), sort_keys=True, separators=(",", ":"))


def decode(cls, data):
    """A ``cls`` instance from JSON text or a parsed dict (nested dataclasses, tuples, dicts)."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)
    return _build(cls, data)


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
