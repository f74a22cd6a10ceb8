"""What a finished run's model jobs spent starting, from their logs: per rule, the summed seconds of
loading and checking the model (each job's header line: "checked and loaded in X s", or "taken in
X s" where a local fork server held the checkpoint), and of applying the pruning run's mask (from
the header line to "applied ..."); then the fork servers' own loads (``logs/fork_server/*.log``:
"holds ..., loaded and checked in X s"), which the first job of each model and dtype waited for.
Reads the logs of any run, from before or after the fork server held checkpoints
(``workflow_walltime.sh`` runs it on the runs it makes).

  python benchmarks/startup_sums.py <run directory>
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

HEADER = re.compile(r"(checked and loaded|taken) in ([\d.]+)s$")
SERVER = re.compile(r"fork server: holds .* loaded and checked in ([\d.]+)s$")
RULES = ("score_shard", "prune", "perplexity", "zero_shot")


def stamp(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def main() -> None:
    run = Path(sys.argv[1])
    print(f"model start-up in {run} (seconds summed over jobs)")
    print(f"  {'rule':<12} {'jobs':>5} {'load + check':>13} {'held':>5} {'apply mask':>11} {'start-up':>9}")
    total = 0.0
    for rule in RULES:
        jobs = held = 0
        load = apply = 0.0
        for log in sorted(run.glob(f"logs/*/{rule}/**/*.log")):
            lines = log.read_text(errors="replace").splitlines()
            header = next(((i, m) for i, line in enumerate(lines) if (m := HEADER.search(line))), None)
            if header is None:
                continue
            i, m = header
            jobs += 1
            held += m.group(1) == "taken"
            load += float(m.group(2))
            applied = next((line for line in lines[i + 1:] if " INFO applied " in line), None)
            if applied:
                apply += stamp(applied) - stamp(lines[i])
        if jobs:
            total += load + apply
            print(f"  {rule:<12} {jobs:>5} {load:>13.1f} {held:>5} {apply:>11.1f} {load + apply:>9.1f}")
    servers = [float(m.group(1)) for log in sorted(run.glob("logs/fork_server/*.log"))
               for line in log.read_text(errors="replace").splitlines() if (m := SERVER.search(line))]
    print(f"  fork servers' loads: {len(servers)}, {sum(servers):.1f} s; all model start-up: {total + sum(servers):.1f} s")


if __name__ == "__main__":
    main()
