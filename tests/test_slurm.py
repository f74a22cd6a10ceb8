"""The workflow on a live single-node SLURM cluster (slurm-wlm from Debian, started by
tests/slurm/start_cluster.sh): every job a SLURM job, results identical to a local run, and a
failing job failing the run with its log.

Skipped, with the reason, where the cluster cannot start (not root, no apt, no Debian packages).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SMOKE, run_snakemake

SLURM_ARGS = [
    "--workflow-profile", str(ROOT / "workflow/profiles/slurm"),
    # the CI cluster has no accounting database: poll with squeue (MinJobAge=600 keeps jobs visible)
    "--slurm-status-command", "squeue", "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "5", "--latency-wait", "5",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("a local SLURM cluster needs root and apt-get (Debian's slurm-wlm and munge)")
    # where the cluster can be started (CI runs as root with apt), failing to start it is a failure
    give_up = pytest.fail if os.environ.get("CI") else pytest.skip
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "WITH_DBD": "0", "SLURM_CI_DIR": str(state)}
    start = subprocess.run(["bash", str(ROOT / "tests/slurm/start_cluster.sh")], env=env, capture_output=True, text=True, timeout=600)
    if start.returncode != 0:
        subprocess.run(["bash", str(ROOT / "tests/slurm/stop_cluster.sh")], env=env, timeout=120)
        give_up(f"the SLURM cluster could not start: {(start.stdout + start.stderr).strip().splitlines()[-1:]}")
    print(start.stdout.strip().splitlines()[-1])
    yield state
    subprocess.run(["bash", str(ROOT / "tests/slurm/stop_cluster.sh")], env=env, timeout=120)


def _squeue() -> list[list[str]]:
    out = subprocess.run(["squeue", "--states=all", "--noheader", "-o", "%i|%j|%T|%m"], capture_output=True, text=True)
    return [line.split("|") for line in out.stdout.splitlines()]


@pytest.mark.slow
def test_smoke_run_through_slurm_equals_local_run(cluster, smoke_run, tmp_path):
    local_dir, local = smoke_run
    assert local.returncode == 0
    # the pruning validations add ~20 short jobs that test nothing more about the cluster
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["pruning"]["enabled"] = False
    smoke = tmp_path / "smoke-no-pruning.yaml"
    smoke.write_text(yaml.safe_dump(cfg))
    before = {j[0] for j in _squeue()}
    res = run_snakemake([*SLURM_ARGS, "--configfile", str(smoke)], cwd=tmp_path, timeout=1500)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    jobs = [j for j in _squeue() if j[0] not in before and j[1] != "hostname"]
    n_planned = int(re.findall(r"(\d+) of \d+ steps \(100%\) done", out)[-1])
    assert len(jobs) == n_planned - 1 and all(j[2] == "COMPLETED" for j in jobs)  # every job but `all`
    for rel in ("results/smollm2-135m/density.csv", "results/smollm2-135m/similarity.csv",
                "results/smollm2-135m/relevance.csv", "results/smollm2-135m/findings.json",
                "results/smollm2-135m/pairs/words/spearman_by_layer.csv"):
        assert (tmp_path / rel).read_text() == (local_dir / rel).read_text(), rel


@pytest.mark.slow
def test_failing_cluster_job_fails_the_run_and_points_at_its_log(cluster, tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["models"]["smollm2-135m"]["source"] = "no-such-org/no-such-model"  # passes the start-up checks, fails in the job
    bad = tmp_path / "bad.yaml"
    cfg["pruning"]["enabled"] = False
    bad.write_text(yaml.safe_dump(cfg))
    before = {j[0] for j in _squeue()}
    res = run_snakemake([*SLURM_ARGS, "--configfile", str(bad)], cwd=tmp_path, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    # the profile retries a failed job, asking for more memory each time (mem_mb x attempt)
    mems = [j[3] for j in _squeue() if j[0] not in before and j[1] != "hostname"]
    assert mems[:2] == ["8000M", "16000M"], mems
    assert "logs/smollm2-135m/prepare_model.log" in out
    assert "actpat error: model" in out or "actpat error: cannot load" in out  # the log's last line, shown
    assert "FAILED" in out or "Error in rule prepare_model" in out
