"""How tight last-word accuracy and its paired differences get with more items per window, and
what the items cost, on a finished default run's evaluation windows.

Items are read off the perplexity pass (``actpat.accuracy``), so more of them cost no forward
pass, only the reading. Items cut from one window are not independent, so the standard error is
clustered by window and the paired difference's interval resamples windows: more items per
window tighten both only as far as the windows differ less than the items do. This script
measures that: each model's greedy hits once per set, then for each ``per_window`` the accuracy,
its clustered standard error (and the naive std/√n for contrast), the paired difference between
two pruned models (validation 1's ``acc_vs_uniform``: the density allocation against uniform
Wanda) with its 95% interval over windows, and the time of reading the items.

  python benchmarks/lastword_items.py --workdir <finished default run> [--per-window 4 8 16 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from actpat.accuracy import lastword_accuracy
from actpat.evaluate import load_evaluated_model, window_nll
from actpat.pruning_report import paired_accuracy_difference
from actpat.store import open_samples, window_tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--sets", nargs="+", default=["encyclopedic", "code"])
    ap.add_argument("--runs", nargs=2, default=["encyclopedic/wanda-density/unstructured/0.5", "encyclopedic/wanda/unstructured/0.5"],
                    help="two pruning runs compared pair by pair (their mask directories under pruning/runs)")
    ap.add_argument("--per-window", nargs="+", type=int, default=[4, 8, 16, 32])
    ap.add_argument("--context-words", type=int, default=24)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = args.workdir / "results" / args.model
    model_dir = args.workdir / "resources" / "models" / args.model  # the Snakefile's model_dir()
    hits, windows = {}, {}
    for name in args.sets:
        store = open_samples(base / "pruning" / "text" / "eval" / f"{name}.zarr")
        windows[name] = (window_tokens(store), store["sample"].values.tolist())
    tokenizer = None
    for run in args.runs:
        model, tokenizer, _, _ = load_evaluated_model(model_dir, base / "pruning" / "runs" / run / "mask.zarr", "cpu",
                                                      "float32", log=lambda *_: None)
        for name, (tokens, _) in windows.items():
            hits[run, name] = window_nll(model, tokens)[2]
        del model
    print(f"last-word items per window, {args.context_words} words of context at least, models {args.runs[0]} "
          f"(accuracy) and {args.runs[1]} (the paired difference's other side):")
    print(f"{'set':14s} {'per_window':>10s} {'items':>6s} {'windows':>7s} {'accuracy':>8s} {'s.e. clustered':>14s} "
          f"{'s.e. naive':>10s} {'difference':>10s} {'95% interval':>18s} {'width':>7s} {'read s':>7s}")
    for name, (tokens, ids) in windows.items():
        for k in args.per_window:
            t0 = time.perf_counter()
            a = lastword_accuracy(tokenizer, tokens, ids, hits[args.runs[0], name], k, args.context_words)
            seconds = time.perf_counter() - t0
            b = lastword_accuracy(tokenizer, tokens, ids, hits[args.runs[1], name], k, args.context_words)
            diff, (lo, hi) = paired_accuracy_difference(a, b, 2000, 1)
            x = np.asarray(a["item_correct"])
            naive = np.std(x, ddof=1) / np.sqrt(len(x))
            print(f"{name:14s} {k:10d} {a['n_items']:6d} {a['n_windows']:7d} {a['value']:8.4f} {a['stderr']:14.4f} "
                  f"{naive:10.4f} {diff:+10.4f} [{lo:+.4f}, {hi:+.4f}] {hi - lo:7.4f} {seconds:7.2f}")


if __name__ == "__main__":
    main()
