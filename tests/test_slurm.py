"""The workflow on a live single-node SLURM cluster (slurm-wlm from Debian, started by
tests/slurm/start_cluster.sh) as sites run it: accounting on (slurmdbd + MariaDB, so the plugin
polls with its default, `sacct`), a `gpu` partition whose node declares two GPUs through gres, and
the SLURM profile's groups (a few submissions per stage). The `squeue` status path stays tested on
a failing run.

The cluster tests are skipped, with the reason, where the cluster cannot start (not root, no apt, no
Debian packages); under CI they fail instead. The plan test needs no cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SMOKE, SNAKEMAKE, run_snakemake

PROFILE = ["--workflow-profile", str(ROOT / "workflow/profiles/slurm")]
# polling every few seconds instead of the profile's 20: the smoke jobs take seconds; the test node has 2 CPUs
FAST = ["--slurm-init-seconds-before-status-checks", "5", "--latency-wait", "5", "--cores", "2"]
# the plugin's default status command (sacct, through slurmdbd); no account: the plugin's guess warns only
SACCT = [*PROFILE, *FAST, "--slurm-no-account"]
# the fallback without accounting: squeue (MinJobAge=600 in the test cluster keeps finished jobs visible)
SQUEUE = [*SACCT, "--slurm-status-command", "squeue"]


def cluster_config(tmp_path: Path, **changes) -> Path:
    """The smoke preset as a GPU site runs it: device auto (a job given GPUs that torch cannot use
    falls back to the CPU), GPU jobs in partition `gpu`; validations 1-2 off (twenty more short jobs
    that test nothing more about the cluster)."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["pruning"]["enabled"] = False
    cfg["device"] = "auto"
    cfg.setdefault("resources", {})["gpu_partition"] = "gpu"
    cfg.update(changes)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_slurm_profile_plan_groups_short_jobs_and_sends_gpu_jobs_to_the_gpu_partition(tmp_path):
    """Dry run with the SLURM profile (no cluster needed): short jobs in one submission per stage,
    scoring/pruning/perplexity jobs asking for GPUs in the configured partition (SUMMARY.md, a local
    rule, is not submitted: the cluster test below sees no submission for it)."""
    cfg = yaml.safe_load(cluster_config(tmp_path).read_text())
    cfg["pruning"]["enabled"] = True
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([*SNAKEMAKE, *PROFILE, "--configfile", str(tmp_path / "cluster.yaml"), "-n"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    groups = re.findall(r"Group job (\w+) ", out)
    # one submission before scoring, one after, one report (GPU jobs are not grouped)
    assert sorted(groups) == ["prepare", "reduce", "report"], groups
    blocks = re.split(r"\n\s*\[[^\]]+\]\n", out)
    by_rule: dict[str, list[str]] = {}
    for block in blocks:
        m = re.search(r"^\s*(local)?rule (\w+):", block, re.M)
        if m:
            by_rule.setdefault(m.group(2), []).append(block)
    for rule in ("score_shard", "prune", "perplexity", "perplexity_dense"):
        for block in by_rule[rule]:
            assert re.search(r"slurm_partition=gpu\b", block) and re.search(r"\bgpu=1\b", block), (rule, block)
    for rule in ("sample_domain", "density", "findings"):
        assert all("slurm_partition=debug" in b and not re.search(r"\bgpu=[1-9]", b) for b in by_rule[rule]), rule


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("a local SLURM cluster needs root and apt-get (Debian's slurm-wlm, slurmdbd, mariadb and munge)")
    # where the cluster can be started (CI runs as root with apt), failing to start it is a failure
    give_up = pytest.fail if os.environ.get("CI") else pytest.skip
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "WITH_DBD": "1", "GPUS": "2", "SLURM_CI_DIR": str(state)}
    start = subprocess.run(["bash", str(ROOT / "tests/slurm/start_cluster.sh")], env=env, capture_output=True, text=True, timeout=600)
    if start.returncode != 0:
        subprocess.run(["bash", str(ROOT / "tests/slurm/stop_cluster.sh")], env=env, timeout=120)
        give_up(f"the SLURM cluster could not start: {(start.stdout + start.stderr).strip().splitlines()[-1:]}")
    print(next(line for line in start.stdout.splitlines() if "cluster up" in line))
    yield state
    subprocess.run(["bash", str(ROOT / "tests/slurm/stop_cluster.sh")], env=env, timeout=120)


def sacct_jobs(since: str, fields=("JobID", "Partition", "AllocTRES", "State", "Comment")) -> list[dict[str, str]]:
    """The SLURM jobs started since `since`, but the cluster's own `srun hostname` checks."""
    out = subprocess.run(["sacct", "-X", "-a", "-n", "-P", "-S", since, "-o", ",".join(("JobName", *fields))],
                         capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    return [dict(zip(fields, values)) for name, *values in rows if name != "hostname"]


def _squeue() -> list[list[str]]:
    out = subprocess.run(["squeue", "--states=all", "--noheader", "-o", "%i|%j|%T|%m"], capture_output=True, text=True).stdout
    return [line.split("|") for line in out.splitlines()]


def _running_scoring_job(deadline: float) -> str | None:
    while time.time() < deadline:
        out = subprocess.run(["squeue", "--noheader", "-p", "gpu", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True)
        ids = out.stdout.split()
        if ids:
            return ids[0]
        time.sleep(0.5)
    return None


def _terminating(lines: list[str]) -> bool:
    """Snakemake has taken the Ctrl-C: it says so before the plugin cancels the jobs."""
    return any("Terminating processes on user request" in line for line in list(lines))


@pytest.mark.slow
def test_smoke_run_on_the_cluster_resumes_after_its_scoring_job_is_cancelled(cluster, smoke_run, tmp_path):
    """The run is interrupted while a scoring job runs (Ctrl-C: the plugin cancels its jobs with
    scancel); the same command again completes it, and its tables equal the local run's. Along the
    way: status through sacct, every scoring job in partition `gpu` with a GPU allocated (it saw
    CUDA_VISIBLE_DEVICES and fell back to the CPU), short jobs in one submission per stage.

    (An scancel from outside is not seen through sacct by the plugin (2.8.0): sacct reports the
    state as "CANCELLED by <uid>", which the plugin compares exactly against "CANCELLED", so the run
    waits; the squeue status path reports "CANCELLED". README: interrupt and rerun.)"""
    local_dir, local = smoke_run
    assert local.returncode == 0
    config = cluster_config(tmp_path)
    cmd = [*SNAKEMAKE, *SACCT, "--configfile", str(config)]
    # Snakemake's log handler swallows a KeyboardInterrupt that lands while it writes a line
    # (snakemake/logging.py: `except (KeyboardInterrupt, SystemExit): pass`), and the interrupted run
    # then completes. A second Ctrl-C is sent only while Snakemake has not said it terminates (one
    # landing during the plugin's scancel would leave the lock behind); and should every Ctrl-C be
    # lost, the scenario starts again from nothing (at most 3 tries).
    for attempt in range(3):
        since = time.strftime("%Y-%m-%dT%H:%M:%S")
        # SIGINT back to its default in Snakemake's process: a suite started in the background (`&` in
        # a script) ignores SIGINT, every child inherits that, and the Ctrl-C would never be seen
        first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(first.stdout), daemon=True)
        reader.start()
        try:
            job = _running_scoring_job(time.time() + 600)
            assert job is not None, "no scoring job ran in partition gpu"
            time.sleep(2)  # loading the model, scoring: well before its store is written
            for sent in range(1, 6):
                first.send_signal(signal.SIGINT)
                deadline = time.time() + 10
                while time.time() < deadline and first.poll() is None and not _terminating(lines):
                    time.sleep(0.2)
                if first.poll() is not None or _terminating(lines):
                    break
            print(f"try {attempt + 1}: {sent} Ctrl-C sent; Snakemake terminating: {_terminating(lines)}")
            first.wait(timeout=300)
            reader.join(timeout=30)
            out1 = "".join(lines)
        finally:
            if first.poll() is None:
                first.kill()
        if first.returncode != 0:
            break
        print(f"try {attempt + 1}: the Ctrl-C was lost in Snakemake's log handler and the run completed; starting again")
        for path in tmp_path.iterdir():
            if path != config:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        time.sleep(2)  # the next try's accounting window starts after this one's last job
    assert first.returncode != 0, out1[-3000:]
    assert not (tmp_path / "results/smollm2-135m/density.csv").exists()

    second = run_snakemake([*SACCT, "--configfile", str(config)], cwd=tmp_path, timeout=1200)
    out2 = second.stdout + second.stderr
    assert second.returncode == 0, out2[-3000:]
    for rel in ("results/smollm2-135m/density.csv", "results/smollm2-135m/similarity.csv",
                "results/smollm2-135m/relevance.csv", "results/smollm2-135m/findings.json",
                "results/smollm2-135m/pairs/words/spearman_by_layer.csv"):
        assert (tmp_path / rel).read_text() == (local_dir / rel).read_text(), rel

    time.sleep(2)  # the last job's accounting record
    jobs = [j for j in sacct_jobs(since) if j["Comment"].startswith(("rule_", "group_"))]
    cancelled = [j for j in jobs if j["JobID"] == job]
    assert cancelled and cancelled[0]["State"].startswith("CANCELLED"), cancelled
    scoring = [j for j in jobs if "score_shard" in j["Comment"]]
    # 5 shards: those cancelled (the one running and any waiting) scored by the second run
    assert len([j for j in scoring if j["State"] == "COMPLETED"]) == 5, scoring
    assert all(j["Partition"] == "gpu" for j in scoring), scoring
    # every scoring job that was given a node was given one GPU (one cancelled while waiting has no allocation)
    assert all("gres/gpu=1" in j["AllocTRES"] for j in scoring if j["AllocTRES"]), scoring
    assert "gres/gpu=1" in cancelled[0]["AllocTRES"], cancelled
    others = [j for j in jobs if "score_shard" not in j["Comment"]]
    assert all(j["Partition"] == "debug" and "gres/gpu" not in j["AllocTRES"] for j in others), others
    # everything but scoring in two submissions: the prepare group (first run), the reduce group
    # (second run); SUMMARY.md is a local rule
    assert sorted(j["Comment"].split("_")[1] for j in others) == ["prepare", "reduce"], others
    logs = [p.read_text() for p in (tmp_path / "logs/smollm2-135m/score_shard").glob("*.log")]
    assert len(logs) == 5 and all("given GPU(s) CUDA_VISIBLE_DEVICES=0 but torch" in t and "running on the CPU" in t for t in logs)


@pytest.mark.slow
def test_failing_cluster_job_fails_the_run_and_points_at_its_log(cluster, tmp_path):
    """Through the squeue status path (the fallback without accounting)."""
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["models"]["smollm2-135m"]["source"] = "no-such-org/no-such-model"  # passes the start-up checks, fails in the job
    bad = tmp_path / "bad.yaml"
    cfg["pruning"]["enabled"] = False
    bad.write_text(yaml.safe_dump(cfg))
    before = {j[0] for j in _squeue()}
    # no groups (this --groups replaces the profile's; pruning is off): prepare_model is its own SLURM
    # job, so its failure is seen by the plugin's status check rather than inside a group job
    res = run_snakemake([*SQUEUE, "--configfile", str(bad), "--groups", "pruning_report=report"], cwd=tmp_path, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "(status command is not 'sacct')" in out, out[-3000:]  # the plugin's squeue path saw the failure
    # the profile retries a failed job, asking for more memory each time (mem_mb x attempt)
    mems = [j[3] for j in _squeue() if j[0] not in before and j[1] != "hostname"]
    assert mems[:2] == ["8000M", "16000M"], mems
    assert "logs/smollm2-135m/prepare_model.log" in out
    assert "actpat error: model" in out or "actpat error: cannot load" in out  # the log's last line, shown
    assert "FAILED" in out or "Error in rule prepare_model" in out
