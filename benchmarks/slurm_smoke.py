"""Wall time and SLURM submissions of the smoke workflow (validations 1-2 off), from nothing.

Runs the smoke preset once locally (`--cores 2`) and once through the SLURM profile, each in a
fresh directory, with the configuration and cluster arguments of tests/test_slurm.py; then counts
the SLURM jobs the run submitted (from `sacct`) and prints their `sacct` lines. With
--start-cluster it first starts the test cluster (tests/slurm/start_cluster.sh: accounting, a gres
`gpu` partition), times that, and stops it at the end; otherwise a cluster must be running.

    python benchmarks/slurm_smoke.py [--start-cluster] [--only slurm|local] [--keep] [extra snakemake arguments]

Run it alone: the SLURM jobs share the machine's two cores with nothing else.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_slurm import SACCT, cluster_config, sacct_jobs  # noqa: E402

SNAKEMAKE = [str(ROOT / ".venv/bin/python"), "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def run(name: str, args: list[str]) -> tuple[float, Path]:
    where = Path(tempfile.mkdtemp(prefix=f"slurm-smoke-{name}-"))
    # device auto and a gpu partition: locally (no GPU here) that is the CPU, as in the cluster run
    cmd = [*SNAKEMAKE, "--configfile", str(cluster_config(where)), *args]
    t0 = time.perf_counter()
    res = subprocess.run(["timeout", "-s", "INT", "-k", "30", "1800", *cmd], cwd=where, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (where / "run.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        sys.exit(f"{name} run failed (rc {res.returncode}); kept {where}, see run.log there")
    return wall, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["local", "slurm"])
    ap.add_argument("--start-cluster", action="store_true", help="start (and time) the test cluster, stop it at the end")
    ap.add_argument("--keep", action="store_true", help="keep the run directories (2.3 GB each)")
    ap.add_argument("extra", nargs="*", help="extra snakemake arguments for the SLURM run")
    a = ap.parse_args()
    env = {**os.environ, "SLURM_CI_DIR": tempfile.mkdtemp(prefix="slurm-state-")}
    if a.start_cluster:
        t0 = time.perf_counter()
        subprocess.run(["bash", str(ROOT / "tests/slurm/start_cluster.sh")], env=env, check=True, capture_output=True)
        print(f"cluster start (accounting, gres): {time.perf_counter() - t0:.1f} s")
    try:
        if a.only != "slurm":
            wall, where = run("local", ["--cores", "2"])
            print(f"local: {wall:.0f} s wall")
            if not a.keep:
                shutil.rmtree(where)
        if a.only != "local":
            start = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
            wall, where = run("slurm", [*SACCT, *a.extra])
            time.sleep(2)  # the last job's accounting record
            fields = ("JobID", "Partition", "AllocTRES", "State", "Elapsed", "Comment")
            jobs = sacct_jobs(start, fields)
            print(f"slurm: {wall:.0f} s wall, {len(jobs)} submissions")
            for job in jobs:
                print("  " + " | ".join(job[f] for f in fields))
            if not a.keep:
                shutil.rmtree(where)
    finally:
        if a.start_cluster:
            subprocess.run(["bash", str(ROOT / "tests/slurm/stop_cluster.sh")], env=env)


if __name__ == "__main__":
    main()
