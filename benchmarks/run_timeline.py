"""Where a local run's wall time went, from Snakemake's own log: how busy the cores were (job-
seconds over cores × wall), how long fewer jobs ran than there were cores, the longest jobs and the
last ones (``workflow_walltime.sh`` runs it after its per-rule sums, which come from the
benchmark files).

  python benchmarks/run_timeline.py <run.log> [--cores 2] [--top 12]

A job starts at the time stamp before its "rule ...:" block and ends at the one before its
"Finished jobid: N" line (to the second, as Snakemake writes them).
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")


def parse(text: str) -> list[dict]:
    """[{rule, wildcards, start, end}] in seconds since the first time stamp."""
    jobs: dict[int, dict] = {}
    t0 = now = None
    current = None
    for line in text.splitlines():
        if m := STAMP.match(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
            t0 = now if t0 is None else t0
            current = None
        elif m := RULE.match(line):
            current = {"rule": m.group(1), "wildcards": "", "start": now - t0}
        elif current is not None and (m := re.match(r"^\s+jobid: (\d+)$", line)):
            jobs[int(m.group(1))] = current
        elif current is not None and (m := re.match(r"^\s+wildcards: (.*)$", line)):
            current["wildcards"] = m.group(1)
        elif m := re.match(r"^Finished jobid: (\d+)", line):
            jobs[int(m.group(1))]["end"] = now - t0
    return [j for j in jobs.values() if "end" in j and j["rule"] != "all"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", type=Path)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    jobs = parse(args.log.read_text())
    wall = max(j["end"] for j in jobs)
    busy = sum(j["end"] - j["start"] for j in jobs)
    # time with k jobs running, from the start and end events
    events = sorted([(j["start"], 1) for j in jobs] + [(j["end"], -1) for j in jobs], key=lambda e: (e[0], -e[1]))
    running, last, by_k = 0, 0.0, {}
    for t, step in events:
        by_k[running] = by_k.get(running, 0.0) + t - last
        running, last = running + step, t
    print(f"{len(jobs)} jobs in {wall:.0f} s wall; {busy:.0f} job-s: the {args.cores} cores {100 * busy / (args.cores * wall):.0f}% busy")
    for k in sorted(k for k in by_k if by_k[k] > 0):  # jobs of no length (to the second) add empty rows
        print(f"  {k} jobs running: {by_k[k]:7.0f} s")
    print(f"the {args.top} longest jobs (start, end in s from the run's start):")
    for j in sorted(jobs, key=lambda j: j["start"] - j["end"])[:args.top]:
        print(f"  {j['end'] - j['start']:6.0f} s  {j['start']:6.0f}-{j['end']:6.0f}  {j['rule']} {j['wildcards']}")
    print("the last jobs to finish:")
    for j in sorted(jobs, key=lambda j: -j["end"])[:6]:
        print(f"  {j['end'] - j['start']:6.0f} s  {j['start']:6.0f}-{j['end']:6.0f}  {j['rule']} {j['wildcards']}")


if __name__ == "__main__":
    main()
