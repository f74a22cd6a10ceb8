"""Wall time and SLURM submissions of the smoke workflow (validations 1-2 off), from nothing.

Runs the smoke preset once locally (`--cores 2`) and once through the SLURM profile on the cluster
that is running (start it with tests/slurm/start_cluster.sh), each in a fresh directory, then
counts the SLURM jobs the run submitted (from `sacct`) and prints the scoring jobs' `sacct` lines.

    python benchmarks/slurm_smoke.py [--only slurm|local] [-- extra snakemake arguments]

Run it alone: the SLURM jobs share the machine's two cores with nothing else.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [str(ROOT / ".venv/bin/python"), "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
# the same cluster arguments as tests/test_slurm.py
SLURM = ["--workflow-profile", str(ROOT / "workflow/profiles/slurm"), "--slurm-init-seconds-before-status-checks", "5",
         "--latency-wait", "5", "--cores", "2"]


def smoke_config(where: Path, cluster: bool) -> Path:
    cfg = yaml.safe_load((ROOT / "tests/config/smoke.yaml").read_text())
    cfg["pruning"]["enabled"] = False
    if cluster:  # as tests/test_slurm.py: scoring jobs ask for a GPU in partition `gpu` (and run on the CPU)
        cfg["device"] = "auto"
        cfg.setdefault("resources", {})["gpu_partition"] = "gpu"
    path = where / "smoke-no-pruning.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(name: str, args: list[str]) -> tuple[float, Path]:
    where = Path(tempfile.mkdtemp(prefix=f"slurm-smoke-{name}-"))
    cmd = [*SNAKEMAKE, "--configfile", str(smoke_config(where, name == "slurm")), *args]
    t0 = time.perf_counter()
    res = subprocess.run(["timeout", "-s", "INT", "-k", "30", "1800", *cmd], cwd=where, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (where / "run.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        sys.exit(f"{name} run failed (rc {res.returncode}); kept {where}, see run.log there")
    return wall, where


def sacct_since(start: str) -> list[list[str]]:
    out = subprocess.run(["sacct", "-X", "-a", "-n", "-P", "-S", start, "-o", "JobID,JobName,Partition,AllocTRES,State,Elapsed"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line and "|hostname|" not in line]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["local", "slurm"])
    ap.add_argument("--keep", action="store_true", help="keep the run directories (2.3 GB each)")
    ap.add_argument("extra", nargs="*", help="extra snakemake arguments for the SLURM run")
    a = ap.parse_args()
    if a.only != "slurm":
        wall, where = run("local", ["--cores", "2"])
        print(f"local: {wall:.0f} s wall")
        if not a.keep:
            shutil.rmtree(where)
    if a.only != "local":
        start = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
        wall, where = run("slurm", [*SLURM, *a.extra])
        time.sleep(2)  # the last job's accounting record
        jobs = sacct_since(start)
        print(f"slurm: {wall:.0f} s wall, {len(jobs)} submissions")
        for job in jobs:
            print("  " + " | ".join(job))
        if not a.keep:
            shutil.rmtree(where)


if __name__ == "__main__":
    main()
