"""Validation 1 as a base × allocation grid: perplexity (95% bootstrap interval) and last-word
accuracy (± the harness's standard error) of every method at every sparsity, the ratio to the
uniform allocation of the same base with its paired interval, and the ranking of the allocations
(by perplexity within each base and sparsity; mean rank over them).

  python benchmarks/validation1_ranking.py /tmp/v1grid/results/smollm2-135m/pruning/validation1.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))


def main(path: str) -> None:
    from actpat.methods import METHODS

    v1 = pd.read_csv(path)
    dense = v1[v1["method"] == "dense"].iloc[0]
    print(f"dense: perplexity {dense['perplexity']:.2f} [{dense['ci_low']:.2f}, {dense['ci_high']:.2f}], "
          f"last-word accuracy {dense['accuracy']:.3f} ± {dense['accuracy_se']:.3f} ({int(dense['accuracy_items'])} items)")
    runs = v1[(v1["method"] != "dense") & (v1["structure"] == "unstructured")].copy()
    runs["base"] = [METHODS[m].base for m in runs["method"]]
    runs["allocation"] = [METHODS[m].allocation for m in runs["method"]]
    runs["rank"] = runs.groupby(["base", "sparsity"])["perplexity"].rank()
    print(f"\n{'base':10s} {'alloc':12s} {'sp':>4s} {'perplexity [95%]':>24s} {'vs uniform [95%]':>24s} "
          f"{'accuracy ± se':>15s} {'acc − uniform [95%]':>26s} {'rank':>4s}")
    for _, r in runs.sort_values(["base", "sparsity", "perplexity"]).iterrows():
        vs = "" if r["allocation"] == "uniform" else f"{r['vs_uniform']:.3f} [{r['vs_uniform_low']:.3f}, {r['vs_uniform_high']:.3f}]"
        dacc = "" if r["allocation"] == "uniform" else \
            f"{r['acc_vs_uniform']:+.3f} [{r['acc_vs_uniform_low']:+.3f}, {r['acc_vs_uniform_high']:+.3f}]"
        print(f"{r['base']:10s} {r['allocation']:12s} {r['sparsity']:4.1f} "
              f"{r['perplexity']:8.2f} [{r['ci_low']:7.2f}, {r['ci_high']:7.2f}] {vs:>24s} "
              f"{r['accuracy']:.3f} ± {r['accuracy_se']:.3f} {dacc:>26s} {int(r['rank']):4d}")
    print("\nmean rank of each allocation by perplexity (1 = best), over bases and sparsities where it runs:")
    mean_rank = runs.groupby("allocation")["rank"].agg(["mean", "count"]).sort_values("mean")
    for alloc, row in mean_rank.iterrows():
        print(f"  {alloc:12s} {row['mean']:.2f} over {int(row['count'])} (base, sparsity) cells")
    print("\nmean last-word accuracy of each allocation at each sparsity (all bases):")
    print(runs.pivot_table(index="allocation", columns="sparsity", values="accuracy", aggfunc="mean").round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1])
