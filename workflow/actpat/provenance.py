"""Provenance: what every artifact records about how it was made (one place for all of it).

Stores and reports carry the model and checkpoint hash, the seed, the sample ids (as coordinates),
the settings of the job that wrote them and the version of the code that computed them.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from actpat import __version__

# The provenance attributes that travel, by name (the order is the order they are written in).
# Stores reduced together must share these (actpat.store.check_compatible):
SHARED_BY_REDUCED_STORES = ("model", "checkpoint_sha256", "seed", "seq_len", "target", "dtype", "sketch_size",
                            "sketch_seed", "sketch_hash_version")
# what the results of findings 1-3 and validation 3 report of the stores behind them:
REPORTED = ("seed", "seq_len", "target", "sketch_size", "checkpoint_sha256", "code_version")
# what a density dataset and the similarity dataset carry over from their score stores:
CARRIED_BY_DENSITY = ("model", "domain", "seed", "seq_len", "target", "checkpoint_sha256", "code_version", "architecture",
                      "matrices", "shapes")
CARRIED_BY_SIMILARITY = ("model", *REPORTED)
# what a mask store (a pruned model) records of its pruning report:
CARRIED_BY_MASK = ("model", "run", "method", "structure", "target_sparsity", "code_version")


@lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 (12 hex digits) of the library's source files and the config schema: it changes with
    any edit of the code that computes the artifacts, committed or not."""
    import hashlib

    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for f in sorted(here.glob("*.py")) + [here.parent / "schemas" / "config.schema.yaml"]:
        if f.exists():
            digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version, the git commit of the checkout when there is one, and the source hash:
    ``0.1.0+5073268abcde src 1f2e3d4c5b6a``."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        version = f"{__version__}+{rev}"
    except (OSError, subprocess.SubprocessError):
        version = __version__
    return f"{version} src {source_hash()}"


def code_versions_in(obj) -> set[str]:
    """Every ``code_version`` recorded anywhere in a report (nested dicts and lists)."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "code_version" and isinstance(v, str):
                found.add(v)
            else:
                found |= code_versions_in(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= code_versions_in(v)
    return found


def check_made_for(path, recorded, error: type[Exception], **expected) -> None:
    """Refuse an input made for something else than the job reads it for: each ``expected``
    identity (a run key, a model, a domain...) against what ``recorded`` (a store's attributes, a
    JSON result) says made it. One line names the file and both."""
    wrong = [k for k, v in expected.items() if recorded.get(k) != v]
    if wrong:
        found = ", ".join(f"{k} {_shown(recorded.get(k))}" for k in wrong)
        want = ", ".join(f"{k} {_shown(expected[k])}" for k in wrong)
        raise error(f"{path}: made for {found}, not for {want}")


def _shown(value) -> str:
    return "(none)" if value is None else value if isinstance(value, str) else repr(value)


def window_attrs(job, source_description: str, model_dir: Path) -> dict:
    """Attributes of a windows store (samples, calibration or evaluation windows)."""
    import json

    attrs = {"domain": job.text.name, "source": source_description, "source_spec": json.dumps(job.text.spec, sort_keys=True),
             "seed": job.seed, "seq_len": job.seq_len, "code_version": code_version()}
    if job.kind == "samples":
        attrs["holdout_fraction"] = job.holdout_fraction
        attrs["tokenizer"] = str(model_dir)
    else:
        attrs["purpose"] = job.kind
    return attrs


def scores_attrs(model_name: str, checkpoint: dict, samples_attrs: dict, shard: int, job, device: str, threads: int,
                 hash_version: int) -> dict:
    """Attributes of a score store: everything two stores must share to be reduced together, and
    what made this one (device, threads: CPU results differ in the last bits between thread counts)."""
    import torch

    return {
        "model": model_name,
        "model_source": checkpoint["source"],
        "revision": checkpoint.get("revision"),
        "checkpoint_sha256": checkpoint_id(checkpoint),
        "architecture": checkpoint["architecture"],
        "domain": samples_attrs["domain"],
        "source": samples_attrs["source"],
        "shard": shard,
        "shard_size": job.shard_size if job.shard_size else -1,
        "seed": samples_attrs["seed"],
        "seq_len": samples_attrs["seq_len"],
        "target": job.scoring.target,
        "dtype": job.scoring.compute_dtype,
        "accumulation_dtype": "float32",
        "device": device,
        "threads": threads,
        "sketch_size": job.scoring.sketch_size,
        "sketch_seed": job.scoring.sketch_seed,
        "sketch_hash_version": hash_version,
        "code_version": code_version(),
        "torch_version": torch.__version__,
    }


def checkpoint_id(checkpoint: dict) -> str:
    """The prepared checkpoint's file hashes as one attribute string (stores of one checkpoint
    carry the same string; a mask is refused on another checkpoint)."""
    import json

    return json.dumps(checkpoint["checkpoint_sha256"], sort_keys=True)


def mask_attrs(report: dict, checkpoint: dict) -> dict:
    """Attributes of a mask store (a pruned model): the run, the checkpoint it applies to, the
    calibration windows it saw, and the code that made it."""
    import json

    return {**{k: report[k] for k in CARRIED_BY_MASK},
            "checkpoint_sha256": checkpoint_id(checkpoint), "overall_sparsity": report["overall_sparsity"],
            "calibration_sample_ids": json.dumps(report.get("calibration", {}).get("sample_ids", []))}
