# Shared set-up: the settings, wildcard constraints, the command that runs the library, and the
# helpers that name each rule's inputs (how jobs run on this machine: machine.smk).
#
# The settings are built once here, without torch (actpat.settings). A rule hands its job exactly
# the settings the job depends on, as one quoted JSON argument (`--settings {params.settings:q}`):
# no config value is pasted into a shell string, and a job reruns when (and only when) its own
# settings change. Paths are quoted with `:q` too.
import json
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))

from actpat import paths
from actpat.config import validate_config
from actpat.errors import ConfigError
from actpat.preflight import preflight
from actpat.provenance import source_hash
from actpat.settings import from_config
from actpat.settings_json import encode
from actpat.sources import PLAN_CACHE, with_content_ids

try:
    CFG = validate_config(config)
    preflight(CFG, [Path(p) for p in (workflow.overwrite_configfiles or [os.path.join(workflow.basedir, "config.yaml")])])
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# report captions read `snakemake.config`: let them see the validated values and defaults
config.update(CFG)
S = from_config(CFG)

MODELS = list(S.models)
DOMAINS = list(S.domains)
PAIRSETS = list(S.pairs)
# a pair set's distinct texts are scored like a domain named pairs-<name>, in a fixed number of shards
SCORED = S.scored
RUNS = S.pruning_runs()  # validations 1-2: every pruned model, by its key (a path below pruning/runs/)
EVAL_SETS = S.eval_sets


def _brace_safe(text):
    """A literal for a string that Snakemake formats (the shell prefix): braces doubled."""
    return text.replace("{", "{{").replace("}", "}}")


# Rules run `python -m actpat ...` from this checkout: its package comes first on PYTHONPATH (quoted:
# a checkout under "my runs/ü" must not fall back to another installed copy). Without --use-conda,
# `python` is the interpreter running Snakemake (e.g. .venv/bin/python when the venv is not activated).
def _uses_conda():
    return any("conda" in str(m).lower() for m in workflow.deployment_settings.deployment_method)


_prefix = f"export PYTHONPATH={shlex.quote(os.path.join(workflow.basedir, 'workflow'))}\"${{PYTHONPATH:+:$PYTHONPATH}}\"; "
if not _uses_conda():
    _prefix += f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:\"$PATH\"; "
shell.prefix(_brace_safe(_prefix))


def _alternatives(values):
    return "|".join(map(re.escape, values)) or "$^"


wildcard_constraints:
    model=_alternatives(MODELS),
    domain=_alternatives(SCORED),
    pairset=_alternatives(PAIRSETS),
    shard=r"\d+",
    evalset=_alternatives(EVAL_SETS),
    run=_alternatives(RUNS),


def source_files(name):
    """The local files a domain or an evaluation set reads (a changed file reruns its jobs)."""
    from actpat.sources import local_files, task_files

    spec = S.text_source(name).spec
    if spec["source"] == "files":
        return [str(p) for p in local_files(spec["paths"])]
    return task_files(spec) if spec["source"] == "task" and spec.get("path") else []


def pair_files(pairset):
    spec = S.pairs[pairset].spec
    return [os.path.expanduser(spec["path"])] if spec["source"] == "files" else []


def encode_reading(job):
    """The settings of a job that reads text, with the size and checksum of its local files: a file
    whose content changed reruns the job even when its modification time was restored (cp -p,
    rsync -a, tar x). A file unchanged since the last plan (size, times, inode) is not read again."""
    return encode(with_content_ids(job, PLAN_CACHE))


def score_stores(model, domain):
    return [paths.score_store(model, domain, s) for s in S.shards_of(domain)]


def all_targets():
    stores = [path for m in MODELS for d in DOMAINS for path in score_stores(m, d)]
    findings = [paths.findings(m) for m in MODELS] if len(DOMAINS) >= 2 else []
    pairs = [f"{paths.pairs_dir(m, p)}/summary.json" for m in MODELS for p in PAIRSETS]
    return stores + findings + pairs


# ---- validations 1-2: pruning runs -------------------------------------------------------


# the files of one pruned model (`{model}`, `{run}`: wildcards) and of the dense one
RUN = paths.EvaluatedModel.run("{model}", "{run}")
DENSE = paths.EvaluatedModel.dense("{model}")


def pruning_targets(model):
    return [f"{paths.pruning_dir(model)}/report.md"] if S.pruning.enabled else []


def prune_inputs(w):
    run = RUNS[w.run]
    inputs = {"model": paths.model_dir(w.model)}
    if run.calibration:
        inputs["calibration"] = paths.calibration_windows(w.model, run.calibration)
    if S.method(run).uses_density:
        inputs["density"] = paths.density(w.model, S.pruning.density_domain)
    return inputs


def optional(flag, input, name):
    """`flag path` (quoted) for an optional named input, or nothing."""
    return f"{flag} {shlex.quote(str(input[name]))}" if name in input.keys() else ""


def evaluated_run(w, input):
    """`--mask <store> --run <key>` for a pruning run's evaluation job (the job refuses a mask made
    for another run), nothing for the dense model's."""
    return f"--mask {shlex.quote(str(input.mask))} --run {shlex.quote(w.run)}" if "mask" in input.keys() else ""


def harness_task_files() -> list[str]:
    """The task YAML files under pruning.evaluation.accuracy.include_path: an edit reruns the
    zero-shot jobs (the data files a task points to are the user's to keep unchanged)."""
    folder = S.pruning.evaluation.accuracy.include_path
    if not folder:
        return []
    return sorted(str(p) for pattern in ("*.yaml", "*.yml") for p in Path(folder).rglob(pattern))


def pruning_report_inputs(w):
    job = S.pruning_report_job()
    runs = list(dict.fromkeys(job.validation1 + job.validation2))
    run_files = [paths.EvaluatedModel.run(w.model, r.key) for r in runs]
    dense = paths.EvaluatedModel.dense(w.model)
    files = [f.report for f in run_files]
    files += [f.perplexity(s) for f, r in zip(run_files, runs) for s in job.sets_of(r)]
    files += [dense.perplexity(s) for s in job.dense_sets]
    if job.zero_shot:
        files += [f.zeroshot for f in run_files] + [dense.zeroshot]
    return files


# ---- SUMMARY.md ------------------------------------------------------------------------------


def model_results(model):
    """The result files of one model that SUMMARY.md reads (those its config makes)."""
    inputs = {"pairs": [f"{paths.pairs_dir(model, p)}/summary.json" for p in PAIRSETS]}
    if len(DOMAINS) >= 2:
        inputs["findings"] = paths.findings(model)
    if S.pruning.enabled:
        inputs["pruning"] = f"{paths.pruning_dir(model)}/summary.json"
    return inputs


def summary_inputs(w):
    return model_results(w.model)


def models_page_inputs(w):
    """Each model's result files the models page reads (those its config makes)."""
    inputs = {}
    for m in MODELS:
        files = model_results(m)
        if len(DOMAINS) >= 2:
            files["density_table"] = paths.density_table(m)
        inputs[m] = files
    return inputs
