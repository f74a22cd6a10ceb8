"""Config validation: defaults from the schema, one clear line for each kind of mistake."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from actpat.config import validate_config
from actpat.errors import ConfigError
from actpat.settings import from_config
from actpat.settings_json import encode
from conftest import with_value

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = yaml.safe_load((ROOT / "config.yaml").read_text())
MINIMAL = {"models": {"m": {"source": "smollm2"}}, "domains": {"code": {"source": "packaged", "name": "python-stdlib"}}}


def test_defaults_are_filled_in():
    cfg = validate_config(MINIMAL)
    assert cfg["samples"] == {"per_domain": 64, "seq_len": 128, "shard_size": 32, "holdout_fraction": 0.2}
    assert cfg["scoring"]["target"] == "max_logit"
    assert cfg["scoring"]["thresholds"] == [2e-5, 2e-6]
    assert cfg["models"]["m"]["dtype"] == "float32"
    assert cfg["domains"]["code"]["samples"] == 64 and cfg["domains"]["code"]["pack"] is False
    assert MINIMAL["domains"]["code"] == {"source": "packaged", "name": "python-stdlib"}  # input untouched


def test_shipped_configs_validate():
    cfg = validate_config(SHIPPED)
    assert len(cfg["domains"]) == 8
    assert cfg["domains"]["medical"]["pack"] is True
    assert from_config(cfg).shards_of("code") == [0, 1]
    validate_config(yaml.safe_load((ROOT / "tests/config/smoke.yaml").read_text()))


def _with(path: str, value):
    return with_value(copy.deepcopy(MINIMAL), path, value)


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (_with("scoring.target", "min_logit"), r"scoring\.target: 'min_logit' is not allowed; choose one of 'max_logit', 'mean_loglik'"),
        (_with("device", "tpu"), r"at device: 'tpu' is not allowed; choose one of 'auto', 'cpu', 'cuda'"),
        (_with("samples.seq_len", "long"), r"samples\.seq_len: 'long' is not of type 'integer'"),
        (_with("samples.per_domain", 0), r"samples\.per_domain: 0 is less than the minimum of 1"),
        (_with("samples.holdout_fraction", 1.0), r"samples\.holdout_fraction"),
        (_with("scoring.thresholds", [-1e-5]), r"scoring\.thresholds\.0: -1e-05 is less than or equal to the minimum of 0"),
        (_with("sampels", {}), r"unknown key\(s\) 'sampels'; allowed keys: .*samples"),
        (_with("domains.code", {"source": "packged", "name": "x"}), r"domains\.code\.source: 'packged' is not allowed; choose one of 'packaged', 'files', 'datasets'"),
        (_with("domains.code", {"source": "packaged", "name": "wiki"}), r"domains\.code\.name: 'wiki' is not allowed; choose one of 'python-stdlib'"),
        (_with("domains.code", {"source": "files"}), r"domains\.code: 'paths' is a required property"),
        (_with("domains.code", {"source": "files", "paths": ["a.txt"], "format": "csv"}), r"domains\.code\.format: 'csv' is not allowed; choose one of 'txt', 'jsonl', 'parquet'"),
        (_with("domains.code", {"source": "datasets", "name": "x", "feild": "text"}), r"domains\.code: unknown key\(s\) 'feild'"),
        (_with("domains.bad name", {"source": "packaged", "name": "python-stdlib"}), r"name 'bad name' is not usable in file paths"),
        (_with("models.m", {"source": "smollm2", "dtype": "int8"}), r"models\.m\.dtype: 'int8' is not allowed"),
        ({"domains": MINIMAL["domains"]}, r"'models' is a required property"),
        (_with("domains", {}), r"domains: \{\} should be non-empty"),
        (_with("pruning.sparsities", [0.5, 1.0]), r"pruning\.sparsities\.1: 1\.0 is greater than or equal to the maximum of 1"),
        (_with("pruning.sparsities", [-0.1]), r"pruning\.sparsities\.0: -0\.1 is less than the minimum of 0"),
        (_with("pruning.nm", ["4:2"]), r"pruning\.nm\.0: '4:2' needs 0 < N < M"),
        (_with("pruning.nm", ["2/4"]), r"pruning\.nm\.0: '2/4' does not match"),
        (with_value(_with("pruning.nm_methods", ["sparsegpt"]), "pruning.sparsegpt.block", 10),
         r"pruning\.sparsegpt\.block: 10 is not a multiple of M = 4"),
        (_with("pruning.methods", ["sparsegpt-owlish"]), r"pruning\.methods\.0: 'sparsegpt-owlish' is not allowed; choose one of 'magnitude'"),
        (_with("pruning.calibration.domain", "c4"), r"pruning\.calibration\.domain: 'c4' is not configured; choose one of code"),
        (_with("pruning.evaluation.general", "wikitext2"), r"pruning\.evaluation\.general: 'wikitext2' is not configured"),
        (_with("pruning.validation2.calibration_domains", ["code", "law"]), r"validation2\.calibration_domains: 'law' is not configured"),
        (_with("pruning.validation2.method", "magnitude"), r"validation2\.method: 'magnitude' uses no calibration data"),
        (_with("pruning.ratios.threshold", 3e-5), r"pruning\.ratios\.threshold: 3e-05 is not one of scoring\.thresholds"),
        (_with("pruning.evaluation.sets", {"code": {"source": "packaged", "name": "python-stdlib"}}), r"sets\.code: a domain has this name"),
    ],
)
def test_errors_name_the_field(cfg, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)


# ---- integer settings take integers only (issue 33, part 2) ------------------------------------


def _resolve(node: dict, schema: dict) -> tuple[dict, str | None]:
    if "$ref" in node:
        ref = node["$ref"]
        return schema["$defs"][ref.rsplit("/", 1)[-1]], ref
    return node, None


def _example(node: dict, schema: dict):
    """A valid value of a required key: its const, its first allowed value, or a value of its type."""
    node, _ = _resolve(node, schema)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    return {"string": "x", "array": ["x"], "object": {}}[kind]


def _required(node: dict, schema: dict, fixed: dict) -> dict:
    """The keys an object needs to validate, with ``fixed`` (e.g. its source) and, where an
    if/then branch matches them, that branch's required keys."""
    out = dict(fixed)
    for key in node.get("required", []):
        out.setdefault(key, _example(node["properties"][key], schema))
    for branch in node.get("allOf", []):
        consts = {k: v["const"] for k, v in branch.get("if", {}).get("properties", {}).items()}
        if consts and all(out.get(k) == v for k, v in consts.items()):
            for key in branch["then"].get("required", []):
                out.setdefault(key, _example(branch["then"]["properties"][key], schema))
    return out


def _fields_of_type(kind: str, node: dict, schema: dict, pointer: str = "#", path: tuple = (), needs: tuple = ()):
    """Every setting whose schema type includes ``kind``, found by walking the schema: (schema
    pointer, config path, what each enclosing object needs to validate, its schema). Maps of user-named entries
    get an entry named ``x1``, arrays an element ``*``; an if/then branch is entered with its
    condition met."""
    node, ref = _resolve(node, schema)
    pointer = ref or pointer
    types = node.get("type", [])
    if kind in (types if isinstance(types, list) else [types]):
        yield pointer, path, needs, node
    if node.get("type") == "object" or "properties" in node:
        here = needs + ((path, _required(node, schema, {})),)
        for name, sub in node.get("properties", {}).items():
            if isinstance(sub, dict):
                yield from _fields_of_type(kind, sub, schema, f"{pointer}/properties/{name}", path + (name,), here)
        for i, branch in enumerate(node.get("allOf", [])):
            consts = {k: v["const"] for k, v in branch["if"]["properties"].items()}
            inside = needs + ((path, _required(node, schema, consts)),)
            for name, sub in branch["then"].get("properties", {}).items():
                if isinstance(sub, dict):
                    yield from _fields_of_type(kind, sub, schema, f"{pointer}/allOf/{i}/then/properties/{name}",
                                               path + (name,), inside)
        if isinstance(node.get("additionalProperties"), dict):
            yield from _fields_of_type(kind, node["additionalProperties"], schema, f"{pointer}/additionalProperties",
                                       path + ("x1",), here)
    if isinstance(node.get("items"), dict):
        yield from _fields_of_type(kind, node["items"], schema, f"{pointer}/items", path + ("*",), needs)


def _config_with(path: tuple, needs: tuple, value) -> dict:
    cfg = copy.deepcopy(MINIMAL)
    for where, keys in needs:
        node = cfg
        for key in where:
            node = node.setdefault(key, {})
        for key, v in keys.items():
            node.setdefault(key, copy.deepcopy(v))
    return with_value(cfg, ".".join(path), value)


SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
INTEGER_FIELDS = {}  # config path -> (schema pointer, needs, the field's schema)
for _pointer, _path, _needs, _node in _fields_of_type("integer", SCHEMA, SCHEMA):
    INTEGER_FIELDS.setdefault(_path, (_pointer, _needs, _node))


def test_the_walk_finds_every_integer_field_of_the_schema():
    """Counted independently: each `type: integer` (or a type list with integer) in the schema file
    is one field, and the walk reaches each of them."""
    text = (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    declared = len(re.findall(r"type: (?:integer\b|\[integer\b)", text))
    reached = {pointer for pointer, _, _ in INTEGER_FIELDS.values()}
    assert declared == 28 and len(reached) == declared, sorted(reached)
    assert {("samples", "per_domain"), ("seed",), ("domains", "x1", "samples"), ("pairs", "x1", "shards"),
            ("domains", "x1", "limit"), ("pruning", "evaluation", "sets", "x1", "limit")} <= set(INTEGER_FIELDS)


@pytest.mark.parametrize("path", sorted(INTEGER_FIELDS), ids=".".join)
def test_integer_settings_refuse_everything_but_integers(path):
    _, needs, node = INTEGER_FIELDS[path]
    n = max(1, node.get("minimum", 1))
    where = ".".join(path)
    ok = validate_config(_config_with(path, needs, n))  # the walk built a valid config around the field
    value = ok
    for key in path:
        value = value[key]
    assert value == n and type(value) is int
    for bad, says in [(float(n), rf"{float(n)!r} is not an integer; write {n}$"), (str(n), "is not of type 'integer'"),
                      (True, "True is not of type 'integer'"), (-n, rf"-{n} is less than the minimum of")]:
        with pytest.raises(ConfigError, match=rf"^config error at {re.escape(where)}: ") as info:
            validate_config(_config_with(path, needs, bad))
        assert re.search(says, str(info.value)) and "\n" not in str(info.value), str(info.value)


def _respelled(cfg: dict, paths: set[tuple], as_float: bool) -> tuple[dict, int]:
    """``cfg`` with every integral number at a ``number`` setting written as a float or an int
    (``x1``: any entry of a map, ``*``: any element of an array), and how many were rewritten."""
    cfg, count = copy.deepcopy(cfg), 0

    def visit(node, path, parent, key):
        nonlocal count
        for p in paths:
            if len(p) == len(path) and all(a == b or a in ("x1", "*") for a, b in zip(p, path)):
                if isinstance(node, (int, float)) and not isinstance(node, bool) and float(node).is_integer():
                    parent[key] = float(node) if as_float else int(node)
                    count += 1
                return
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for k, v in list(items):
            visit(v, path + (k,), node, k)

    visit(cfg, (), None, None)
    return cfg, count


@pytest.mark.parametrize("config", [SHIPPED, yaml.safe_load((ROOT / "tests/config/smoke.yaml").read_text())],
                         ids=["shipped", "smoke"])
def test_the_spelling_of_a_number_changes_no_job_settings(config):
    """`1` and `1.0` in a number setting give the same settings, so the same rerun triggers (every
    rule's params are built from the settings)."""
    numbers = {path for _, path, _, _ in _fields_of_type("number", SCHEMA, SCHEMA)}
    assert {("samples", "holdout_fraction"), ("scoring", "thresholds", "*"), ("analysis", "deep_layers", "*")} <= numbers
    filled = validate_config(config)
    as_ints, n_ints = _respelled(filled, numbers, as_float=False)
    as_floats, n_floats = _respelled(filled, numbers, as_float=True)
    assert n_ints == n_floats >= 8  # e.g. relative_multiples [1.0, 10.0], deep_layers [0.5, -2], ratios.alpha 2.0
    assert json.dumps(as_ints) != json.dumps(as_floats)
    assert encode(from_config(validate_config(as_ints))) == encode(from_config(validate_config(as_floats)))
