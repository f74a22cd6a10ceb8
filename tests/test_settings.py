"""The settings spine: the schema's enums equal the registries, job settings survive the JSON that
carries them, each job's settings hold only what changes its output, and planning needs no torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actpat import methods, pairs, registry, scoring, sources
from actpat.config import load_schema
from actpat.errors import ConfigError, PruningError
from actpat.settings import (
    DensityJob,
    AnalysisJob,
    PairTextsJob,
    PruneJob,
    PruningRun,
    PruningReportJob,
    ScoringJob,
    SummaryJob,
    WindowJob,
    load_settings,
)
from actpat.settings_json import decode, encode
from conftest import ROOT, SMOKE, default_settings, with_value

SHIPPED = yaml.safe_load((ROOT / "config.yaml").read_text())


def _enum(node: dict, *path: str) -> list:
    for key in path:
        node = node[key]
    if "$ref" in node:
        node = load_schema()["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node["enum"]


def _branch(schema_node: dict, source: str) -> dict:
    return next(b["then"] for b in schema_node["allOf"] if b["if"]["properties"]["source"]["const"] == source)


def test_schema_enums_equal_the_registries():
    s = load_schema()
    props = s["properties"]
    assert _enum(props, "scoring", "properties", "target") == list(scoring.TARGETS)
    text = s["$defs"]["text_source"]
    assert text["properties"]["source"]["enum"] == list(sources.SOURCES)
    assert _branch(text, "packaged")["properties"]["name"]["enum"] == list(sources.PACKAGED)
    assert _branch(text, "task")["properties"]["name"]["enum"] == list(sources.TASKS)
    pair = props["pairs"]["additionalProperties"]
    assert pair["properties"]["source"]["enum"] == list(pairs.SOURCES)
    assert _branch(pair, "packaged")["properties"]["name"]["enum"] == list(pairs.PACKAGED)


def test_pruning_methods_are_named_by_their_declarations_only():
    """The schema lists no method names (a base or an allocation is declared once, beside its
    code); every declared settings section is in the schema with a default for each field, and the
    config check answers an unknown name with the declared ones."""
    s = load_schema()
    pr = s["properties"]["pruning"]["properties"]
    assert "enum" not in s["$defs"]["method"] and pr["methods"]["items"] == {"$ref": "#/$defs/method"}
    assert "enum" not in pr["nm_methods"]["items"]
    for declared in [*registry.BASES.values(), *registry.ALLOCATIONS.values()]:
        if declared.settings is None:
            continue
        section = pr[declared.section]["properties"]
        keys = {f.name for f in dataclasses.fields(declared.settings)} if not hasattr(declared.settings, "from_config") \
            else set(section)
        assert keys <= set(section) and all("default" in section[k] for k in keys), declared.name
    assert {m.base for m in methods.METHODS.values()} == set(registry.BASES)
    assert {m.allocation for m in methods.METHODS.values()} == set(registry.ALLOCATIONS)
    assert "magnitude-owl" not in methods.METHODS and "sparsegpt-owl" in methods.METHODS
    assert methods.NM_BASES == tuple(registry.BASES)
    cfg = with_value(yaml.safe_load(SMOKE.read_text()), "pruning.methods", ["wanda", "wanda-nonsense"])
    with pytest.raises(ConfigError, match=r"pruning\.methods\.1: 'wanda-nonsense' is not allowed; choose one of 'magnitude', "):
        load_settings(cfg)
    with pytest.raises(PruningError, match="unknown pruning method 'wanda-nonsense'; choose one of magnitude, "):
        methods.method("wanda-nonsense")


def test_a_declaration_is_checked():
    """Like lm-evaluation-harness's registries: a name is declared once, and what is declared has
    the shape the layer loop uses."""
    from actpat.registry import allocation, base

    with pytest.raises(TypeError, match="'owl' is declared twice"):
        allocation("owl", suffix="-owl2", title="again")(lambda target, inputs: None)
    with pytest.raises(TypeError, match="not a function of \\(target, inputs\\)"):
        allocation("three", suffix="-three", title="three")(lambda target, inputs, extra: None)
    with pytest.raises(TypeError, match="not a base class"):
        base("plain", title="plain", calibrated=False)(object)
    with pytest.raises(TypeError, match="frozen dataclass"):
        allocation("loose", suffix="-loose", title="loose", settings=dict, section="loose")


def test_defaults_come_from_the_schema_only():
    """No settings field has a default of its own: a value missing from the config is the schema's."""
    from actpat import settings as mod

    declared = [d.settings for d in [*registry.BASES.values(), *registry.ALLOCATIONS.values()] if d.settings]
    for cls in [getattr(mod, name) for name in dir(mod)] + declared:
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)
    s = default_settings()
    schema = load_schema()["properties"]
    assert s.scoring.sketch_size == schema["scoring"]["properties"]["sketch_size"]["default"]
    assert s.samples.seq_len == schema["samples"]["properties"]["seq_len"]["default"]


@pytest.mark.parametrize("config", [SHIPPED, yaml.safe_load(SMOKE.read_text())], ids=["shipped", "smoke"])
def test_every_job_settings_survive_their_json(config):
    s = load_settings(config)
    jobs = [s.analysis_job(), s.density_job(), s.pruning_report_job()]
    jobs += [s.window_job("samples", d) for d in s.domains] + [s.window_job("calibration", d) for d in s.domains]
    jobs += [s.window_job("evaluation", d) for d in s.eval_sets] + [s.scoring_job(d) for d in s.scored]
    jobs += [s.pair_texts_job(p) for p in s.pairs] + [s.summary_job(m) for m in s.models]
    jobs += [s.prune_job(r) for r in s.pruning_runs().values()] + list(s.models.values())
    for job in jobs:
        assert decode(type(job), encode(job)) == job, job
    kinds = {type(j) for j in jobs}
    assert {WindowJob, ScoringJob, DensityJob, AnalysisJob, PairTextsJob, PruneJob, PruningReportJob, SummaryJob} <= kinds


def test_a_job_depends_only_on_its_own_settings():
    """A job's settings are its rerun trigger: changing one section must not touch the others'."""
    base = default_settings()
    other = default_settings(**{"pruning.owl.lambda": 0.1, "analysis.bootstrap": 50, "pruning.ratios.multiple": 10.0,
                                "scoring.relative_multiples": [1.0, 10.0]})
    run = {r.method: r for r in base.pruning_runs().values() if r.sparsity == 0.5 and r.structure == "unstructured"}
    assert encode(base.prune_job(run["wanda"])) == encode(other.prune_job(run["wanda"]))
    assert encode(base.prune_job(run["wanda-density"])) == encode(other.prune_job(run["wanda-density"]))
    assert encode(base.prune_job(run["wanda-owl"])) != encode(other.prune_job(run["wanda-owl"]))
    assert encode(base.prune_job(run["wanda-density-rel"])) != encode(other.prune_job(run["wanda-density-rel"]))
    dlp = PruningRun("wanda-dlp", "unstructured", 0.5, run["wanda-owl"].calibration)  # not in the default methods
    assert encode(base.prune_job(dlp)) == encode(other.prune_job(dlp))
    changed = default_settings(**{"pruning.dlp.alpha": 0.1})
    assert encode(base.prune_job(dlp)) != encode(changed.prune_job(dlp)) and changed.prune_job(dlp).allocation["alpha"] == 0.1
    assert encode(base.prune_job(run["wanda-owl"])) == encode(changed.prune_job(run["wanda-owl"]))
    assert encode(base.scoring_job("code")) == encode(other.scoring_job("code"))
    assert encode(base.window_job("samples", "code")) == encode(other.window_job("samples", "code"))
    assert encode(base.density_job()) == encode(other.density_job())
    assert encode(base.analysis_job()) != encode(other.analysis_job())


def test_runs_are_named_and_planned_from_settings():
    s = load_settings(yaml.safe_load(SMOKE.read_text()))
    keys = set(s.pruning_runs())
    assert "none/magnitude/unstructured/0.5" in keys and "code/wanda/2of4/0.5" in keys
    assert "medical/wanda-density/unstructured/0.5" in keys  # validation 2
    nm = s.pruning_runs()["code/wanda/2of4/0.5"]
    assert nm.structure == "2:4" and nm.nm == (2, 4) and nm.calibration == "code"
    v2 = s.pruning_runs()["medical/wanda-density/unstructured/0.5"]
    assert s.eval_sets_of(v2) == ["code", "medical"]
    assert s.eval_sets_of(s.pruning_runs()["none/magnitude/unstructured/0.5"]) == ["code"]


def test_planning_imports_no_torch():
    """What the Snakemake process imports to plan the workflow (config, checks, settings) loads
    neither torch nor transformers."""
    code = ("import sys, yaml; sys.path.insert(0, sys.argv[1]); "
            "from actpat.config import validate_config; from actpat.preflight import preflight; "
            "from actpat.settings import from_config; from pathlib import Path; "
            "cfg = validate_config(yaml.safe_load(open(sys.argv[2]))); preflight(cfg, [Path(sys.argv[2])]); from_config(cfg); "
            "bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code, str(ROOT / "workflow"), str(ROOT / "config.yaml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]


def test_snakemake_plans_without_torch(tmp_path):
    """The real thing: `snakemake -n` on the shipped config with Python's import log."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                          "-n", "--cores", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "snakemake" in imported and "actpat.settings" in imported
    assert not {"torch", "transformers"} & imported


def test_a_setting_lives_in_one_place():
    """Rules and the command line pass settings on; no default or method list of their own."""
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    cli = (ROOT / "workflow/actpat/cli.py").read_text()
    for text in (rules, cli):
        assert "32768" not in text and "2.0e-5" not in text and "2e-5" not in text
        assert "wanda-density" not in text and "wanda-owl" not in text
    assert "CFG[" not in rules and "\"of\"" not in rules
    # every job's memory and runtime come from the schema's resources.jobs, one entry per rule
    assert "mem_mb=" not in rules and "runtime=" not in rules
    import re

    declared = set(re.findall(r"^rule (\w+):", rules, flags=re.M)) - {"all"}
    jobs = load_schema()["properties"]["resources"]["properties"]["jobs"]["properties"]
    assert declared == set(jobs) == set(re.findall(r'job_resources\("(\w+)"\)', rules))
    assert Path(ROOT / "workflow/actpat/cli.py").read_text().count("\n") < 250
