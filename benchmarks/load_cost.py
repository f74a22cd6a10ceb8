"""What loading a pruned model costs an evaluation job, phase by phase, with the code's choices
against the ones they replaced, on a finished default run (every perplexity job pays it: 88 jobs).

* checking the checkpoint: the file's CRC-32C (what a load checks now) against its sha256 (what
  it checked before, still the check of checkpoints prepared without ``files_crc32c``);
* applying a mask: ``pruning.zero_where`` against boolean indexing (``w[m] = 0``), same result
  bit for bit (checked here);
* the whole ``evaluate.load_evaluated_model`` as the job calls it.

Each figure is the median of ``--repeat`` runs in this process (page cache warm, as in a run),
on one thread, as the default run's jobs compute.

  python benchmarks/load_cost.py --workdir <directory of a finished default run> [--run code/wanda-density/unstructured/0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    import numpy as np
    import torch

    from actpat.evaluate import load_evaluated_model
    from actpat.checksums import file_crc32c, file_sha256
    from actpat.decoder import layer_weights, weight_layout
    from actpat.models import load_checkpoint
    from actpat.masks import zero_where
    from actpat.store import open_mask

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--run", default="code/wanda-density/unstructured/0.5")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    ckpt = work / "resources" / "models" / args.model
    mask_path = work / "results" / args.model / "pruning" / "runs" / args.run / "mask.zarr"
    weights_file = ckpt / "model.safetensors"
    print(f"{weights_file.stat().st_size / 1e6:.0f} MB of weights; median of {args.repeat} runs, 1 thread")
    weights_file.read_bytes()  # warm the page cache
    t_sha, _ = timed(lambda: file_sha256(weights_file), args.repeat)
    t_crc, _ = timed(lambda: file_crc32c(weights_file), args.repeat)
    print(f"check the weights: sha256 {t_sha:.3f} s, CRC-32C {t_crc:.3f} s")

    model, _, _ = load_checkpoint(ckpt)
    layout = weight_layout(model)
    dense = [[w.detach().clone() for w in layer] for layer in layer_weights(model, layout)]
    mask = open_mask(mask_path)
    unpacked = [[np.unpackbits(mask[name].values[i], axis=1, count=cols, bitorder="little").view(bool)
                 for i in range(layout.n_layers)] for name, (_, cols) in zip(layout.matrices, layout.shapes)]

    def apply(how) -> tuple[float, list]:
        """Zero every matrix's pruned weights ``how``; the median time over ``--repeat`` runs (the
        clones made outside the timing) and the last run's weights."""
        times, ws = [], []
        for _ in range(args.repeat):
            ws = [dense[i][j].clone() for j in range(len(layout.matrices)) for i in range(layout.n_layers)]
            ms = [torch.from_numpy(unpacked[j][i]) for j in range(len(layout.matrices)) for i in range(layout.n_layers)]
            t0 = time.perf_counter()
            for w, m in zip(ws, ms):
                if how == "index":
                    w[m] = 0
                else:
                    zero_where(w, m)
            times.append(time.perf_counter() - t0)
        return statistics.median(times), ws

    (t_index, by_index), (t_and, by_and) = apply("index"), apply("zero_where")
    same = all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(by_index, by_and))
    print(f"zero the pruned weights ({layout.n_layers * layout.weights_per_layer:,} weights): boolean indexing "
          f"{t_index:.3f} s, zero_where {t_and:.3f} s; bit-identical: {same}")
    t_load, _ = timed(lambda: load_evaluated_model(ckpt, mask_path, "cpu", "float32", log=lambda *a: None), args.repeat)
    print(f"load_evaluated_model (checkpoint check, weights, tokenizer, mask): {t_load:.3f} s")


if __name__ == "__main__":
    main()
