"""Snakemake's plan read back: the number of jobs of each rule, from the "Job stats" table that a
dry run (``snakemake -n``) prints. The tests and benchmarks that check what a change of the config
schedules read it here."""

from __future__ import annotations


def job_counts(text: str) -> dict[str, int]:
    """{rule: jobs} of the first "Job stats" table in Snakemake's output (rows of a rule name and
    a count, after the table's header and rule lines; the total row included)."""
    lines = text[text.index("Job stats:"):].splitlines()[3:]
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        out[parts[0]] = int(parts[1])
    return out
