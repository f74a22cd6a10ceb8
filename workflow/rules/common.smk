# Shared set-up: config validation, wildcard constraints, the command that runs the library.
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))

from actpat.config import ConfigError, domain_shards, validate_config
from actpat.preflight import preflight

try:
    CFG = validate_config(config)
    preflight(CFG, [Path(p) for p in (workflow.overwrite_configfiles or [os.path.join(workflow.basedir, "config.yaml")])])
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# report captions read `snakemake.config`: let them see the validated values and defaults
config.update(CFG)

MODELS = list(CFG["models"])
DOMAINS = list(CFG["domains"])
PAIRSETS = list(CFG["pairs"])
# a pair set's distinct texts are scored like a domain named pairs-<name>, in a fixed number of shards
SCORED = DOMAINS + [f"pairs-{p}" for p in PAIRSETS]

# Rules run `python -m actpat ...` from this checkout. Without --use-conda, `python` is the
# interpreter running Snakemake (e.g. .venv/bin/python even when the venv is not activated).
_prefix = f"export PYTHONPATH={os.path.join(workflow.basedir, 'workflow')}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
if not any("conda" in str(m).lower() for m in workflow.deployment_settings.deployment_method):
    _prefix += f"export PATH={os.path.dirname(sys.executable)}:$PATH; "
shell.prefix(_prefix)


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    domain="|".join(map(re.escape, SCORED)),
    pairset="|".join(map(re.escape, PAIRSETS)) or "$^",
    shard=r"\d+",


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


# Local runs: at most as many concurrent GPU jobs as there are visible GPUs (`--resources gpu=N`
# overrides). Not on a cluster, where the scheduler hands out GPUs.
if workflow.local_exec and "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", visible_gpus())


def scoring_gpus():
    if CFG["device"] == "cpu":
        return 0
    if CFG["device"] == "cuda" or visible_gpus() > 0:
        return CFG["resources"]["score_gpus"]
    return 0


def model_dir(model):
    return f"resources/models/{model}"


def shards_of(domain):
    if domain.startswith("pairs-") and domain not in DOMAINS:
        return list(range(CFG["pairs"][domain.removeprefix("pairs-")]["shards"]))
    return domain_shards(CFG, domain)


def score_stores(model, domain):
    return [f"results/{model}/scores/{domain}/shard-{s}.zarr" for s in shards_of(domain)]


def all_targets():
    stores = [path for m in MODELS for d in DOMAINS for path in score_stores(m, d)]
    findings = [f"results/{m}/findings.json" for m in MODELS] if len(DOMAINS) >= 2 else []
    pairs = [f"results/{m}/pairs/{p}/summary.json" for m in MODELS for p in PAIRSETS]
    return stores + findings + pairs


# ---- validations 1-2: pruning runs -------------------------------------------------------

PR = CFG["pruning"]
EVAL_SETS = DOMAINS + list(PR["evaluation"]["sets"])
METHOD_NAMES = ["magnitude", "wanda", "wanda-density", "wanda-density-rel", "wanda-owl"]


def structure_dir(structure):
    return structure.replace(":", "of")


def run_dir(model, method, structure, sparsity, calib):
    calib = "none" if method == "magnitude" else calib
    return f"results/{model}/pruning/runs/{calib}/{method}/{structure_dir(structure)}/{sparsity:g}"


def v1_runs(model):
    calib = PR["calibration"]["domain"]
    runs = [run_dir(model, m, "unstructured", s, calib) for m in PR["methods"] for s in PR["sparsities"]]
    for nm in PR["nm"]:
        n, m_ = map(int, nm.split(":"))
        runs += [run_dir(model, m, nm, n / m_, calib) for m in PR["nm_methods"]]
    return runs


def v2_runs(model):
    v2 = PR["validation2"]
    return [run_dir(model, v2["method"], "unstructured", v2["sparsity"], d) for d in v2["calibration_domains"]]


def eval_sets_of(w):
    """Validation 1 runs are evaluated on the general set (and any evaluation-only sets);
    validation 2 runs on every domain's held-out text as well."""
    run = run_dir(w.model, w.method, w.structure.replace("of", ":"), float(w.sparsity), w.calib)
    names = [PR["evaluation"]["general"]] + list(PR["evaluation"]["sets"])
    if run in v2_runs(w.model):
        names += DOMAINS
    return list(dict.fromkeys(names))


def eval_store(model, name):
    return f"results/{model}/pruning/text/eval/{name}.zarr"


def pruning_targets(model):
    return [f"results/{model}/pruning/report.md"] if PR["enabled"] else []


wildcard_constraints:
    evalset="|".join(map(re.escape, EVAL_SETS)),
    calib="|".join(map(re.escape, DOMAINS + ["none"])),
    method="|".join(map(re.escape, METHOD_NAMES)),
    structure=r"unstructured|\d+of\d+",
    sparsity=r"0(\.\d+)?",


def prune_inputs(w):
    inputs = {"model": model_dir(w.model)}
    if w.method != "magnitude":
        inputs["calibration"] = f"results/{w.model}/pruning/text/calibration/{w.calib}.zarr"
    if w.method.startswith("wanda-density"):
        inputs["density"] = f"results/{w.model}/density/{PR['ratios']['domain']}.zarr"
    return inputs


def _kept(path):
    return path if PR["keep_checkpoints"] else temp(path)



# ---- SUMMARY.md ------------------------------------------------------------------------------

def summary_inputs(w):
    inputs = {"pairs": [f"results/{w.model}/pairs/{p}/summary.json" for p in PAIRSETS]}
    if len(DOMAINS) >= 2:
        inputs["findings"] = f"results/{w.model}/findings.json"
    if PR["enabled"]:
        inputs["pruning"] = f"results/{w.model}/pruning/summary.json"
    return inputs


def summary_settings(model):
    pc, pe = PR["calibration"], PR["evaluation"]
    return json.dumps({
        "model": model,
        "model_source": CFG["models"][model]["source"],
        "samples_per_domain": CFG["samples"]["per_domain"],
        "seq_len": CFG["samples"]["seq_len"],
        "pruning_note": f"{pc['windows']} calibration windows of {pc['seq_len']} tokens from {pc['domain']} (the paper: "
        f"128 C4 windows of 4096), perplexity on at most {pe['max_windows']} windows of {pe['seq_len']} tokens per set",
    })
