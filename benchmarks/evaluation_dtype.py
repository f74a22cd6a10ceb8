"""One perplexity job (a pruned model on one held-out set, with its last-word accuracy) in float32
and in bfloat16: wall time of the whole process, perplexity, its
bootstrap interval, last-word accuracy, and how far bfloat16's per-window losses are from float32's.
The model is the default run's Wanda at 50%, calibrated on `encyclopedic`, evaluated on
`encyclopedic`'s held-out windows (made by the workflow itself in --workdir).

  python benchmarks/evaluation_dtype.py --workdir /tmp/edt [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"
RUN = "encyclopedic/wanda/unstructured/0.5"
SET = "encyclopedic"


def make_inputs(work: Path) -> tuple[str, str]:
    """The pruned model's mask and the evaluation windows (paths relative to ``work``), made in
    ``work`` by the workflow itself."""
    work.mkdir(parents=True, exist_ok=True)
    mask = f"results/{MODEL}/pruning/runs/{RUN}/mask.zarr"
    windows = f"results/{MODEL}/pruning/text/eval/{SET}.zarr"
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2",
                    mask, windows], cwd=work, check=True, capture_output=True)
    return mask, windows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's default job has 1)")
    args = ap.parse_args()
    work = Path(args.workdir)
    mask, windows = make_inputs(work)
    sys.path.insert(0, str(ROOT / "workflow"))
    from actpat.stats import bootstrap_perplexity
    from actpat.settings import EvaluateJob
    from actpat.settings_json import encode

    rows, nll = [], {}
    for dtype in ("float32", "bfloat16"):
        out = work / f"ppl-{dtype}.json"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "actpat", "perplexity", "--settings", encode(EvaluateJob(dtype, 4, 24)),
                        "--model-dir", f"resources/models/{MODEL}", "--mask", mask, "--run", RUN, "--windows", windows, "--set", SET,
                        "--device", "cpu", "--threads", str(args.threads), "--out", str(out)],
                       cwd=work, check=True, capture_output=True)
        wall = time.time() - t0
        r = json.loads(out.read_text())
        w, c = np.asarray(r["window_nll"]), np.asarray(r["window_tokens"])
        lo, hi = bootstrap_perplexity(w, c, 1000, 0)
        nll[dtype] = w
        acc = r["accuracy"]
        rows.append((dtype, wall, r["perplexity"], lo, hi, acc["value"], acc["n_items"], acc["item_correct"]))
    print(f"{RUN} on {SET}, {args.threads} thread(s), each a whole process:")
    print(f"{'dtype':9} {'wall s':>7} {'perplexity':>10} {'95% interval':>19} {'width':>6} {'last-word acc':>13}")
    for dtype, wall, ppl, lo, hi, acc, n, _ in rows:
        print(f"{dtype:9} {wall:7.1f} {ppl:10.3f} [{lo:8.3f}, {hi:8.3f}] {hi - lo:6.2f} {acc:9.4f} ({n})")
    rel = np.abs(nll["bfloat16"] / nll["float32"] - 1)
    flips = sum(x != y for x, y in zip(rows[0][7], rows[1][7]))
    print(f"per-window NLL, bfloat16 vs float32: max relative difference {rel.max():.2e}, mean {rel.mean():.2e}")
    print(f"last-word items that differ: float32 vs bfloat16 {flips} of {rows[0][6]}")


if __name__ == "__main__":
    main()
