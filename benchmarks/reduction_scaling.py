"""How the reductions scale with the number of shards and domains.

Writes synthetic score stores (real format, random heavy-tailed scores; layout: 8 layers shaped
like SmolLM2-135M's, 3.5M weights per layer, 16 samples per shard, 32768-bucket sketches), then
times, each in
a fresh process so that its peak RSS is its own:
  * ``density`` of one domain with 1, 2, 4, 8 shards (should be linear in time, flat in memory);
  * ``similarity`` over 2, 4, 8 domains of 2 shards (quadratic in samples for the all-pairs
    matrix product; linear in stores for reading).

  python benchmarks/reduction_scaling.py [--workdir /tmp/actpat-scaling]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

SHAPES = ((576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536))  # SmolLM2-135M
MATRICES = ("q", "k", "v", "o", "gate", "up", "down")
N_LAYERS, PER_SHARD, K = 8, 16, 32768


def make_store(path: Path, domain: str, shard: int, seed: int) -> None:
    import torch
    import xarray as xr

    from actpat.decoder import WeightLayout
    from actpat.scoring import SampleScores
    from actpat.sketch import HASH_VERSION
    from actpat.store import write_scores

    rng = np.random.default_rng(seed)
    layout = WeightLayout("model.layers", N_LAYERS, MATRICES, SHAPES)
    sums = [[torch.tensor(rng.pareto(2.0, s).astype(np.float32) * 1e-5 * PER_SHARD) for s in SHAPES] for _ in range(N_LAYERS)]
    M = len(SHAPES)
    results = [
        SampleScores(1.0, 0, rng.random((N_LAYERS, M)), rng.random((N_LAYERS, M)),
                     rng.integers(0, 1000, (N_LAYERS, M, 2)), rng.integers(0, 1000, (N_LAYERS, M, 2)),
                     np.zeros((N_LAYERS, M), dtype=np.int64), rng.standard_normal((N_LAYERS, K)).astype(np.float32))
        for _ in range(PER_SHARD)
    ]
    ids = [f"{domain}:{shard}-{i}" for i in range(PER_SHARD)]
    samples = xr.Dataset({"doc_id": ("sample", np.asarray(ids, dtype=object)),
                          "offset": ("sample", np.zeros(PER_SHARD, dtype=np.int64))},
                         coords={"sample": np.asarray(ids, dtype=object)})
    attrs = {"model": "synthetic", "checkpoint_sha256": "-", "seed": 1, "seq_len": 128, "target": "max_logit",
             "dtype": "float32", "sketch_size": K, "sketch_seed": 0, "sketch_hash_version": HASH_VERSION, "domain": domain,
             "shard": shard, "code_version": "bench"}
    write_scores(path, layout, sums, samples, results, (2e-5, 2e-6), attrs)


def timed(kind: str, paths: list[str]) -> dict:
    from actpat.reduce import density, similarity

    t0 = time.perf_counter()
    if kind == "density":
        density([Path(p) for p in paths], [0.5, 0.9])
    else:
        similarity([Path(p) for p in paths])
    return {"seconds": time.perf_counter() - t0, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/actpat-scaling")
    ap.add_argument("--run", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(timed(args.run[0], args.run[1:])))
        return
    import torch

    torch.set_num_threads(2)
    work = Path(args.workdir)
    stores: dict[str, list[str]] = {}
    for d in range(8):
        for s in range(8 if d == 0 else 2):
            path = work / f"dom{d}" / f"shard-{s}.zarr"
            if not path.exists():
                make_store(path, f"dom{d}", s, seed=100 * d + s)
            stores.setdefault(f"dom{d}", []).append(str(path))
    size_mb = sum(f.stat().st_size for f in Path(stores["dom0"][0]).rglob("*") if f.is_file()) / 2**20

    def run(kind, paths):
        out = subprocess.run([sys.executable, __file__, "--run", kind, *paths], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(f"store: {N_LAYERS} layers x {sum(r * c for r, c in SHAPES)} weights, {PER_SHARD} samples, {size_mb:.0f} MB on disk")
    print(f"{'reduction':<11} {'domains':>7} {'shards':>6} {'samples':>7} {'seconds':>8} {'s/shard':>8} {'peak MB':>8}")
    for n in (1, 2, 4, 8):
        r = run("density", stores["dom0"][:n])
        print(f"{'density':<11} {1:>7} {n:>6} {n * PER_SHARD:>7} {r['seconds']:>8.2f} {r['seconds'] / n:>8.2f} {r['peak_mb']:>8.0f}")
    for nd in (2, 4, 8):
        paths = [p for d in range(nd) for p in stores[f"dom{d}"][:2]]
        r = run("similarity", paths)
        print(f"{'similarity':<11} {nd:>7} {len(paths):>6} {len(paths) * PER_SHARD:>7} {r['seconds']:>8.2f} "
              f"{r['seconds'] / len(paths):>8.2f} {r['peak_mb']:>8.0f}")


if __name__ == "__main__":
    main()
