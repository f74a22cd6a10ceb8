"""Validate the workflow configuration against ``workflow/schemas/config.schema.yaml``.

Defaults from the schema are filled in; the first problem found is reported in one line that names
the field and, where the schema lists them, the allowed values. An integer setting takes integers
only: JSON Schema counts ``4.0`` as an integer, and a job handed it fails or reruns (its settings
JSON spells ``4.0``), so it is refused here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from actpat.errors import ConfigError, PruningError
from actpat.methods import METHODS, NM_BASES, parse_structure

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

# short texts: cut windows from the joined stream unless the config says otherwise
PACK_BY_DEFAULT = {"hpo-definitions"}


def _packed_by_default(spec: dict) -> bool:
    """A packaged corpus of short texts."""
    return spec["source"] == "packaged" and spec["name"] in PACK_BY_DEFAULT


def _per_document_by_default(spec: dict) -> bool:
    """Task prompts, unless packed: the paper scores each prompt as one input, read at its end."""
    return spec["source"] == "task" and not spec.get("pack")


def _with_defaults(base):
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(base, {"properties": set_defaults})


def _is_integer(checker, instance) -> bool:
    """An int, not a bool, and not a float with an integral value (JSON Schema's own rule)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = validators.extend(
    _with_defaults(Draft202012Validator),
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _field(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _message(error) -> str:
    where = _field(error.absolute_path)
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"config error at {where}: {error.instance!r} is not allowed; choose one of {allowed}"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"config error at {where}: unknown key(s) {', '.join(map(repr, extra))}; allowed keys: {allowed}"
    if error.validator == "type" and "integer" in error.validator_value and isinstance(error.instance, float) \
            and error.instance.is_integer():  # validator_value: "integer" or a list of types
        return f"config error at {where}: {error.instance!r} is not an integer; write {int(error.instance)}"
    if error.validator == "pattern" and "propertyNames" in error.schema_path:
        return (
            f"config error at {where}: name {error.instance!r} is not usable in file paths "
            f"(letters, digits, '_' and '-', matching {error.validator_value})"
        )
    return f"config error at {where}: {error.message}"


def validate_config(config: dict) -> dict:
    """A validated copy of ``config`` with defaults filled in; raises ConfigError."""
    cfg = copy.deepcopy(dict(config))
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # the deepest error is the most specific one (e.g. inside a domain's if/then branch)
        deepest = max(errors, key=lambda e: len(e.absolute_path))
        raise ConfigError(_message(deepest))
    if cfg["analysis"]["density_threshold"] not in cfg["scoring"]["thresholds"]:
        raise ConfigError(
            f"config error at analysis.density_threshold: {cfg['analysis']['density_threshold']} is not one of "
            f"scoring.thresholds {cfg['scoring']['thresholds']}"
        )
    if cfg["analysis"]["density_multiple"] not in cfg["scoring"]["relative_multiples"]:
        raise ConfigError(
            f"config error at analysis.density_multiple: {cfg['analysis']['density_multiple']} is not one of "
            f"scoring.relative_multiples {cfg['scoring']['relative_multiples']}"
        )
    for name in cfg["domains"]:
        if name.startswith("pairs-"):
            raise ConfigError(f"config error at domains.{name}: names starting with 'pairs-' are reserved for pair sets")
    for name, spec in cfg["domains"].items():
        if spec.get("pack") and spec.get("per_document"):
            raise ConfigError(f"config error at domains.{name}: pack and per_document exclude each other (windows cut "
                              "from the joined documents, or each document one sample); set one")
        # filled in only where on, so that other domains' settings (and their rerun trigger) stay as they were
        if _per_document_by_default(spec):
            spec.setdefault("per_document", True)
        spec.setdefault("pack", _packed_by_default(spec))
        spec.setdefault("samples", cfg["samples"]["per_domain"])
    _check_pruning(cfg)
    return cfg


def _check_pruning(cfg: dict) -> None:
    """Cross-field rules of the pruning section; fills the null defaults with domain names."""
    pr, domains = cfg["pruning"], list(cfg["domains"])

    def known(value, where: str, allowed: list[str]) -> None:
        if value not in allowed:
            raise ConfigError(f"config error at pruning.{where}: {value!r} is not configured; choose one of {', '.join(allowed)}")

    def one_of(value, where: str, allowed: list[str]) -> None:
        """A name checked against a registry (the schema lists no names of its own)."""
        if value not in allowed:
            raise ConfigError(f"config error at pruning.{where}: {value!r} is not allowed; choose one of "
                              + ", ".join(repr(v) for v in allowed))

    for where, name in [(f"methods.{k}", m) for k, m in enumerate(pr["methods"])] + [("validation2.method", pr["validation2"]["method"])]:
        one_of(name, where, list(METHODS))
    for k, name in enumerate(pr["nm_methods"]):
        one_of(name, f"nm_methods.{k}", list(NM_BASES))
    pr["calibration"]["domain"] = pr["calibration"]["domain"] or domains[0]
    known(pr["calibration"]["domain"], "calibration.domain", domains)
    pr["ratios"]["domain"] = pr["ratios"]["domain"] or pr["calibration"]["domain"]
    known(pr["ratios"]["domain"], "ratios.domain", domains)
    for name in pr["evaluation"]["sets"]:
        if name in domains:
            raise ConfigError(f"config error at pruning.evaluation.sets.{name}: a domain has this name; the held-out text "
                              "of every domain is evaluated already")
    pr["evaluation"]["general"] = pr["evaluation"]["general"] or pr["calibration"]["domain"]
    known(pr["evaluation"]["general"], "evaluation.general", domains + list(pr["evaluation"]["sets"]))
    v2 = pr["validation2"]
    v2["calibration_domains"] = v2["calibration_domains"] if v2["calibration_domains"] is not None else domains
    for d in v2["calibration_domains"]:
        known(d, "validation2.calibration_domains", domains)
    if not METHODS[v2["method"]].calibrated:
        raise ConfigError(f"config error at pruning.validation2.method: {v2['method']!r} uses no calibration data; "
                          "choose a calibrated method")
    for k, nm in enumerate(pr["nm"]):
        try:
            n, m = parse_structure(nm)
        except PruningError as exc:
            raise ConfigError(f"config error at pruning.nm.{k}: {exc}") from None
        if "sparsegpt" in pr["nm_methods"] and pr["sparsegpt"]["block"] % m:
            raise ConfigError(f"config error at pruning.sparsegpt.block: {pr['sparsegpt']['block']} is not a multiple of "
                              f"M = {m} (pruning.nm.{k}: {nm!r}), so SparseGPT's N:M groups would straddle its blocks")
    if not pr["enabled"]:  # the pruning settings are filled in, but nothing else depends on them
        return
    allocations = {METHODS[m].allocation for m in pr["methods"] + [v2["method"]]}
    if "density-abs" in allocations and pr["ratios"]["threshold"] not in cfg["scoring"]["thresholds"]:
        raise ConfigError(f"config error at pruning.ratios.threshold: {pr['ratios']['threshold']} is not one of "
                          f"scoring.thresholds {cfg['scoring']['thresholds']}")
    if "density-rel" in allocations and pr["ratios"]["multiple"] not in cfg["scoring"]["relative_multiples"]:
        raise ConfigError(f"config error at pruning.ratios.multiple: {pr['ratios']['multiple']} is not one of "
                          f"scoring.relative_multiples {cfg['scoring']['relative_multiples']}")
    lo, hi = pr["ratios"]["bounds"]
    for where, s in [(f"sparsities.{k}", s) for k, s in enumerate(pr["sparsities"])] + [("validation2.sparsity", v2["sparsity"])]:
        if not lo <= s <= hi:
            raise ConfigError(f"config error at pruning.{where}: {s} is outside pruning.ratios.bounds [{lo}, {hi}]")

