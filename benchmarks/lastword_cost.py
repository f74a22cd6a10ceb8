"""What last-word accuracy costs a perplexity job, read off the perplexity pass (this checkout)
against its own forward passes through lm-evaluation-harness (an older revision of actpat, checked
out in a git worktree), and what it measures in each: the same items, their accuracy and its
standard error.

Each job is a whole process, as the workflow runs it (with torch, transformers and, for the old
code, the harness imported in it), on one thread, old and new alternating, ``--repeat`` times; the
model is the default run's Wanda at 50% calibrated on ``encyclopedic``, evaluated on
``encyclopedic``'s held-out windows (made in ``--workdir`` by the workflow itself).

  python benchmarks/lastword_cost.py --workdir /tmp/lwc --old <revision> [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluation_dtype import MODEL, RUN, SET, make_inputs  # the same model and windows

ROOT = Path(__file__).resolve().parent.parent


def job(code: Path, settings: dict, work: Path, out: Path, mask: str, windows: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(code / "workflow")}
    # this checkout's job is told what it evaluates (the old revision's was not)
    identity = ["--run", RUN, "--set", SET] if code == ROOT else []
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "actpat", "perplexity", "--settings", json.dumps(settings),
                    "--model-dir", f"resources/models/{MODEL}", "--mask", mask, "--windows", windows,
                    "--device", "cpu", "--threads", "1", "--out", str(out), *identity], cwd=work, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--old", required=True, help="the revision whose perplexity job runs the harness for last-word items")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    work = Path(args.workdir)
    mask, windows = make_inputs(work)
    old_tree = Path(tempfile.mkdtemp(prefix="actpat-old-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old], check=True,
                   capture_output=True)
    try:
        codes = {"old (harness)": (old_tree, {"dtype": args.dtype, "lastword": 4, "context_words": 24, "batch_size": 4}),
                 "new (read off)": (ROOT, {"dtype": args.dtype, "lastword": 4, "context_words": 24})}
        walls: dict[str, list[float]] = {k: [] for k in codes}
        results = {}
        for r in range(args.repeat):
            for name, (code, settings) in codes.items():
                out = work / f"ppl-{name.split()[0]}.json"
                walls[name].append(job(code, settings, work, out, mask, windows))
                results[name] = json.loads(out.read_text())
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
    print(f"one perplexity job, {RUN} on {SET} ({args.dtype}, 1 thread), a whole process each, {args.repeat} runs:")
    print(f"{'code':16} {'min s':>7} {'median s':>9} {'max s':>7} {'perplexity':>10} {'last-word acc':>14} {'s.e.':>7} {'items':>5}")
    for name, w in walls.items():
        r = results[name]
        acc = r["accuracy"]
        print(f"{name:16} {min(w):7.2f} {statistics.median(w):9.2f} {max(w):7.2f} {r['perplexity']:10.4f} "
              f"{acc['value']:14.4f} {acc['stderr']:7.4f} {acc['n_items']:5d}")
    old, new = (results[k]["accuracy"] for k in codes)
    same = old["item_ids"] == new["item_ids"]
    both = dict(zip(old["item_ids"], old["item_correct"]))
    pairs = [(both[i], c) for i, c in zip(new["item_ids"], new["item_correct"]) if i in both]
    print(f"the same items: {same} ({len(pairs)} in common); perplexities equal: "
          f"{results['old (harness)']['window_nll'] == results['new (read off)']['window_nll']}")
    o, n = np.array(pairs).T
    print(f"items right with 24 words of context only: {int(o.sum())}; with the window before them: {int(n.sum())}; "
          f"right in both {int((o * n).sum())}, only with 24 words {int((o * (1 - n)).sum())}, "
          f"only with the window {int(((1 - o) * n).sum())}")


if __name__ == "__main__":
    main()
