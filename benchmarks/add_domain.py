"""Adding a ninth domain to a finished default run: the plan (which jobs Snakemake schedules) and
the wall time of running it, against the full run's.

The new domain is CPython's own reference documentation (``pydoc_data.topics``: about 90 topics
of English technical prose, a corpus every Python installation ships), written as a JSONL file,
as a user adds a domain of their own.

  python benchmarks/add_domain.py --workdir <directory of a finished default run>
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

from actpat.snakemake_plan import job_counts  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a directory where the default workflow has finished")
    args = ap.parse_args()
    work = Path(args.workdir)
    from pydoc_data.topics import topics

    corpus = work / "ninth-domain" / "python-reference.jsonl"
    corpus.parent.mkdir(exist_ok=True)
    corpus.write_text("\n".join(json.dumps({"id": name, "text": re.sub(r"\n{3,}", "\n\n", text)})
                                for name, text in sorted(topics.items())) + "\n")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["domains"]["reference"] = {"source": "files", "paths": [str(corpus)], "format": "jsonl", "id_field": "id"}
    config = work / "ninth-domain" / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "all",
                 "--configfile", str(config)]
    plan = subprocess.run(snakemake + ["-n"], cwd=work, capture_output=True, text=True)
    if plan.returncode:
        sys.exit(plan.stderr[-3000:])
    counts = job_counts(plan.stdout + plan.stderr)
    print(f"{len(topics)} documents, {corpus.stat().st_size / 1e3:.0f} kB; plan: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    t0 = time.time()
    run = subprocess.run(snakemake, cwd=work, capture_output=True, text=True)
    if run.returncode:
        sys.exit(run.stderr[-3000:])
    print(f"adding the ninth domain: {time.time() - t0:.0f} s wall")


if __name__ == "__main__":
    main()
