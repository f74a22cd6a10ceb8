"""Config validation: defaults from the schema, one clear line for each kind of mistake."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from actpat.errors import ConfigError
from actpat.config import validate_config
from actpat.settings import from_config
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
