"""The scorer's work after the backward pass, alone: everything a store keeps from one batch of
per-sample weight gradients, for every scored matrix of the embedded model, with the eager torch
path and with the fused one-pass kernel (actpat.fused); the second pass of the relative counts
(the gradients formed again, then counted against two thresholds per sample); and the kernel's
compile time, cold (an empty numba cache) and cached.

The gradients are random (their values do not change the work); the weights are the embedded
model's. Reported per sample: seconds for all 30 x 7 matrices, and for reference the seconds of
forming the per-sample gradients themselves (the bmm of the backward pass).

  python benchmarks/reduction_cost.py [--batch 4] [--threads 2] [--tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

COMPILE = """
import sys, time
sys.path.insert(0, {workflow!r})
import numpy as np
t0 = time.perf_counter()
from actpat import fused
from actpat.sketch import GROUP_ROWS
g, w = np.zeros((1, 4, 5), np.float32), np.zeros((4, 5), np.float32)
parts = dict(l1=np.zeros((1, 1)), l2=np.zeros((1, 1)), above=np.zeros((1, 1, 1), np.int64), zeros=np.zeros((1, 1), np.int64),
             sketch=np.zeros((1, 1, 8), np.float32))
codes = (np.ones(4, np.float32), np.ones(5, np.float32), np.zeros(1, np.int32), np.zeros(GROUP_ROWS, np.int32))
fused.reduce_batch(g, w, w.copy(), np.ones(1, np.float32), codes, **parts)
fused.count_above(g, w, np.ones((1, 2), np.float32), np.zeros((1, 1, 2), np.int64))
print(time.perf_counter() - t0)
"""


def compile_seconds() -> tuple[float, float]:
    """First call of the kernel in a fresh process: with an empty cache, then with it filled."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        code = COMPILE.format(workflow=str(ROOT / "workflow"))
        runs = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout.split()[-1]) for _ in range(2)]
    return runs[0], runs[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    import numpy as np

    from actpat import fused
    from actpat.decoder import weight_layout
    from actpat.models import ModelSource, load_source
    from actpat.scoring import ShardScorer
    from actpat.settings import load_settings

    cold, cached = compile_seconds()
    torch.set_num_threads(args.threads)
    model, _ = load_source(ModelSource.parse("smollm2"), "float32")
    layout = weight_layout(model)
    scoring = load_settings({"models": {"m": {"source": "smollm2"}},
                             "domains": {"d": {"source": "packaged", "name": "python-stdlib"}}}).scoring
    B, L, M = args.batch, layout.n_layers, len(layout.matrices)
    gen = torch.Generator().manual_seed(0)
    print(f"SmolLM2-135M, {L} layers x {M} matrices ({layout.weights_per_layer * L / 1e6:.0f}M weights), batch {B}, "
          f"{args.threads} threads; per sample")
    results = {}
    thresholds = np.full((B, 2), 1e-7, np.float32)
    for kernel in ("eager", "fused"):
        scorer = ShardScorer(model, layout, scoring, kernel=kernel)
        st = {"l1": torch.zeros(B, L, M, dtype=torch.float64), "l2": torch.zeros(B, L, M, dtype=torch.float64),
              "above": torch.zeros(B, L, M, len(scoring.thresholds), dtype=torch.int64),
              "zeros": torch.zeros(B, L, M, dtype=torch.int64)}
        best, bmm, count = float("inf"), float("inf"), float("inf")
        for _ in range(args.repeats + 1):  # the first round warms up (and fills the hash codes' cache)
            sketches = [None] * L
            spent = spent_bmm = spent_count = 0.0
            for i, layer in enumerate(scorer.modules):
                for j, mod in enumerate(layer):
                    rows, cols = mod.weight.shape
                    delta = torch.randn(B, args.tokens, rows, generator=gen) * 1e-3
                    x = torch.randn(B, args.tokens, cols, generator=gen)
                    w = mod.weight.detach()
                    t0 = time.perf_counter()
                    g = torch.bmm(delta.transpose(1, 2), x)
                    t1 = time.perf_counter()
                    if kernel == "fused":
                        scorer._reduce_fused(g, w, i, j, st, sketches)
                    else:
                        scorer._reduce_eager(g.mul_(w).abs_(), i, j, st, sketches)
                    t2 = time.perf_counter()
                    g = torch.bmm(delta.transpose(1, 2), x)  # the second pass: formed again, counted
                    if kernel == "fused":
                        fused.count_above(g.numpy(), w.numpy(), thresholds, np.zeros((scorer._chunks, B, 2), np.int64))
                    else:
                        s = g.mul_(w).abs_()
                        [[torch.count_nonzero(s[b] > float(t)) for t in thresholds[b]] for b in range(B)]
                    t3 = time.perf_counter()
                    spent_bmm += t1 - t0
                    spent += t2 - t1
                    spent_count += t3 - t2
            best, bmm, count = min(best, spent / B), min(bmm, spent_bmm / B), min(count, spent_count / B)
        results[kernel] = best
        print(f"  {kernel:<6} first pass {best:.3f} s, count pass {count:.3f} s (gradients again included)   "
              f"(the per-sample gradients themselves: {bmm:.3f} s)")
    print(f"  fused / eager: {results['fused'] / results['eager']:.2f}")
    print(f"  kernel compile: {cold:.2f} s with an empty cache, {cached:.2f} s from the cache (import included)")


if __name__ == "__main__":
    main()
