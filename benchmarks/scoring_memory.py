"""Peak memory of a scoring job against the README's memory model, on CPU.

Random-initialised Llama-shaped models of three sizes (SmolLM2-135M's shape, about 0.5B and about
1.5B parameters), in bfloat16, each scored in its own process with the workflow's scorer; the peak
RSS is compared with

    P0 + W·d + 4·W_s + (8B + 12)·N_max + B·T·L·(22·H + 8·I) + B·T·L·R·d + B·T·(L + 1)·H·d

P0: the process before the model (Python, torch, transformers); W parameters of d bytes; W_s
scored weights (their float32 sums); N_max the largest scored matrix (the batch's weight
gradients and the reduction's temporaries: (8B + 12)·N_max for the fused CPU kernel, 4B·N_max for
the eager path and the ``triton-gradients`` kernel, none for the ``triton`` kernel, which forms
them tile by tile); the activations kept for the backward pass (norm inputs in float32,
attention's q, k, v and output, the linear inputs the scorer keeps, the MLP's activation inputs);
the scored modules' output gradients, kept until the backward pass ends for the relative counts'
second pass (R = Σ of the scored matrices' output sizes per layer: 3H + 2·kv + 2I for Llama); the
hidden states (L + 1 per sample, for the baseline of validation 3). B batch, T tokens, L layers,
H hidden size, I MLP size.

And the peak must not grow with the number of samples scored (2 batches against 6).

  python benchmarks/scoring_memory.py [--sizes 135m,0.5b,1.5b] [--batch 4] [--seq-len 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "135m": (576, 1536, 30, 9, 3, 49152),
    "0.5b": (1024, 4096, 24, 16, 4, 49152),
    "1.5b": (2048, 8192, 20, 16, 4, 49152),
}
GRADIENT_BYTES = {"fused": lambda b: 8 * b + 12, "eager": lambda b: 4 * b, "triton-gradients": lambda b: 4 * b,
                  "triton": lambda b: 0}  # bytes per weight of the largest matrix, by kernel


def memory_model(n_params: int, d: int, layout, hidden: int, inter: int, batch: int, seq_len: int,
                 kernel: str = "fused") -> dict[str, int]:
    """The README's memory model of a scoring job, in bytes per part (without P0): the formula
    above, with the gradients' part of ``kernel`` (``actpat.scoring.KERNELS``)."""
    layers = layout.n_layers
    n_max = max(r * c for r, c in layout.shapes)
    return {
        "weights": n_params * d,
        "sums": 4 * layout.weights_per_layer * layers,
        "gradients": GRADIENT_BYTES[kernel](batch) * n_max,
        "activations": batch * seq_len * layers * (22 * hidden + 8 * inter),
        "kept_gradients": batch * seq_len * layers * sum(r for r, _ in layout.shapes) * d,
        "hidden_states": batch * seq_len * (layers + 1) * hidden * d,
    }


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_one(size: str, batch: int, seq_len: int, batches: int, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from actpat.decoder import weight_layout
    from actpat.scoring import ShardScorer
    from actpat.settings import load_settings

    torch.set_num_threads(threads)
    p0 = rss_gib()
    hidden, inter, layers, heads, kv, vocab = SHAPES[size]
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("meta"):
        meta = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in meta.parameters())
    del meta
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()  # built in bfloat16 (peak RSS is a maximum)
    layout = weight_layout(model)
    scoring = load_settings({"models": {"m": {"source": "smollm2"}}, "domains": {"d": {"source": "packaged", "name": "python-stdlib"}}}).scoring
    scorer = ShardScorer(model, layout, scoring)
    gen = torch.Generator().manual_seed(1)
    t0 = time.time()
    peaks = []
    for _ in range(batches):
        ids = torch.randint(100, vocab - 1, (batch, seq_len), generator=gen)
        scorer.score_batch(ids, [seq_len] * batch)
        peaks.append(rss_gib())
    parts = {"P0": p0 * 2**30, **memory_model(n_params, 2, layout, hidden, inter, batch, seq_len)}
    model_gib = sum(parts.values()) / 2**30
    return {"size": size, "params": n_params, "batch": batch, "seq_len": seq_len, "batches": batches,
            "seconds_per_sample": (time.time() - t0) / (batch * batches), "peak_gib": peaks[-1],
            "peak_after_first_gib": peaks[0], "model_gib": model_gib, "parts_gib": {k: v / 2**30 for k, v in parts.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="135m,0.5b,1.5b")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        size, batches = args.one
        print(json.dumps(run_one(size, args.batch, args.seq_len, int(batches), args.threads)))
        return
    print(f"bfloat16 random Llama-shaped models, batch {args.batch} x {args.seq_len} tokens, {args.threads} threads, CPU")
    print(f"{'size':>5} {'params':>8} {'batches':>7} {'model GiB':>9} {'peak GiB':>9} {'peak/model':>10} {'s/sample':>9}")
    for size in args.sizes.split(","):
        for batches in (2, 6):
            out = subprocess.run([sys.executable, __file__, "--one", size, str(batches), "--batch", str(args.batch),
                                  "--seq-len", str(args.seq_len), "--threads", str(args.threads)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{size:>5} {r['params'] / 1e9:>7.2f}B {batches:>7} {r['model_gib']:>9.2f} {r['peak_gib']:>9.2f} "
                  f"{r['peak_gib'] / r['model_gib']:>10.2f} {r['seconds_per_sample']:>9.2f}")
            print("      parts (GiB): " + ", ".join(f"{k} {v:.2f}" for k, v in r["parts_gib"].items()))


if __name__ == "__main__":
    main()
