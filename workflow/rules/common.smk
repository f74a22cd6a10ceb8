# Shared set-up: the settings, wildcard constraints, the command that runs the library.
#
# The settings are built once here, without torch (actpat.settings). A rule hands its job exactly
# the settings the job depends on, as one quoted JSON argument (`--settings {params.settings:q}`):
# no config value is pasted into a shell string, and a job reruns when (and only when) its own
# settings change. Paths are quoted with `:q` too.
import functools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))

from actpat import paths
from actpat.config import validate_config
from actpat.errors import ConfigError
from actpat.preflight import preflight
from actpat.provenance import source_hash
from actpat.settings import encode, from_config

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


# Local runs: jobs start warm, forked by a server that has torch, transformers and the harness
# imported (actpat.forkserver; about 4 s less per job). Not on a cluster, nor with --use-conda (the
# jobs' interpreter is another one), nor with `fork_server: false`.
_FORK_SERVERS = []


onstart:
    if S.runtime.fork_server and workflow.local_exec and not workflow.touch and not _uses_conda():
        import tempfile

        from actpat import forkserver

        _dir = Path(tempfile.mkdtemp(prefix="actpat-fork-"))
        os.environ[forkserver.ENV] = str(_dir)  # inherited by every job Snakemake starts from here on
        _cap = [c for c in (workflow.cores, workflow.resource_settings.max_threads) if c]  # Snakemake caps threads
        _threads = [1, min([S.runtime.threads, *_cap])]
        _FORK_SERVERS.append((_dir, forkserver.start(_dir, _threads, _prefix, Path("logs/fork_server"))))


def _stop_fork_servers():
    from actpat import forkserver

    while _FORK_SERVERS:
        directory, servers = _FORK_SERVERS.pop()
        forkserver.stop(servers, directory)
        os.environ.pop(forkserver.ENV, None)


onsuccess:
    _stop_fork_servers()


onerror:
    _stop_fork_servers()


def _alternatives(values):
    return "|".join(map(re.escape, values)) or "$^"


wildcard_constraints:
    model=_alternatives(MODELS),
    domain=_alternatives(SCORED),
    pairset=_alternatives(PAIRSETS),
    shard=r"\d+",
    evalset=_alternatives(EVAL_SETS),
    run=_alternatives(RUNS),


@functools.cache
def visible_gpus():
    """GPUs this machine shows (0 without nvidia-smi); a cluster profile overrides resources."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


# At most as many concurrent GPU jobs as this machine shows GPUs (`--resources gpu=N` overrides). A
# cluster profile states its own limit (the SLURM profile: `resources: {gpu: 100}`): the scheduler
# hands out the GPUs there, and this machine's count would cap every job's request.
if "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", visible_gpus())


def job_gpus():
    """GPUs a scoring, pruning or perplexity job asks for. Decided when the job is planned, once
    Snakemake knows its executor (not while it reads this file): none with device cpu; on a cluster
    (or a dry run with --jobs) `score_gpus` whatever this machine shows; locally `score_gpus` when
    the device is cuda or this machine shows a GPU."""
    if S.runtime.device == "cpu":
        return 0
    # the Snakemake a SLURM job starts for itself (another mode) runs its job where it is, like a local run
    submits = workflow.is_main_process and not workflow.local_exec
    on_cluster = submits or (workflow.is_main_process and workflow.dryrun and workflow.nodes is not None)
    if not (S.runtime.device == "cuda" or on_cluster or visible_gpus() > 0):
        return 0
    cap = workflow.global_resources.get("gpu")
    if submits and cap is not None and cap.value < S.resources.score_gpus:
        raise WorkflowError(f"jobs ask for {S.resources.score_gpus} GPU(s) (resources.score_gpus) but this run allows "
                            f"{cap.value}: on a cluster, state how many GPUs may be in use at once in the profile "
                            "(`resources: {gpu: 100}`, as workflow/profiles/slurm does) or pass --resources gpu=N")
    return S.resources.score_gpus


def gpu_resources():
    """The GPU resources of the jobs that use a GPU when there is one: their count (job_gpus) and,
    on a cluster, the partition `resources.gpu_partition` (when set and the device is not cpu). A
    job given GPUs that torch cannot use runs on the CPU and says so (device auto)."""
    on_gpu = S.resources.gpu_partition and S.runtime.device != "cpu"
    return {"gpu": lambda w: job_gpus(), **({"slurm_partition": S.resources.gpu_partition} if on_gpu else {})}


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


def summary_inputs(w):
    inputs = {"pairs": [f"{paths.pairs_dir(w.model, p)}/summary.json" for p in PAIRSETS]}
    if len(DOMAINS) >= 2:
        inputs["findings"] = paths.findings(w.model)
    if S.pruning.enabled:
        inputs["pruning"] = f"{paths.pruning_dir(w.model)}/summary.json"
    return inputs
