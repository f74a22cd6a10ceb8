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
