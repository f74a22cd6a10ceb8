"""Scoring throughput, side by side in one run:

  (a) bare forward + backward of the max last-position logit, every parameter requiring grad
      and full logits: the floor any gradient method pays;
  (b) actpat's scorer (ShardScorer: no weight requires grad; per-sample weight gradients formed in
      the backward pass from each module's input and output gradient, |w·g| reduced at once into
      the fp32 sums, per-sample statistics and the LLMDcos sketch; last-position logits only),
      at each batch size of --batch-sizes, with each reduction of --kernels (fused: one pass per
      weight, actpat.fused; eager: the torch reference path);
  (c) the authors' approach: for every sample, a copy of every weight's grad·w, concatenated per
      layer, then |·| accumulated into a running per-layer sum.

Each approach runs in its own process so that its peak memory (RSS on CPU, max allocated on CUDA)
is its own. Usage:

  python benchmarks/scoring_throughput.py                      # default model, CPU, 128 tokens
  python benchmarks/scoring_throughput.py --preset llama2-7b-random --device cuda --dtype bfloat16 --seq-len 256
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


def build_model(args):
    import torch

    from actpat.models import ModelSource, load_checkpoint, load_source, torch_dtype

    dtype = torch_dtype(args.dtype)
    if args.preset == "llama2-7b-random":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=args.layers or 32,
                          num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
        with torch.device(args.device):
            model = LlamaForCausalLM(cfg).to(dtype)
        return model.eval()
    if args.checkpoint:
        model, _, _ = load_checkpoint(Path(args.checkpoint), args.dtype, args.device)
        return model
    model, _ = load_source(ModelSource.parse("smollm2"), args.dtype)
    return model.to(args.device).eval()


def run_one(args) -> dict:
    import torch

    from actpat.decoder import layer_weights, weight_layout
    from actpat.scoring import ShardScorer
    from actpat.settings import load_settings

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args)
    vocab = model.config.vocab_size
    b = args.batch_size if args.approach == "actpat" else 1
    samples = [torch.randint(100, vocab - 1, (b, args.seq_len), device=args.device) for _ in range(args.samples // b + 1)]
    cuda = args.device == "cuda"
    layout = weight_layout(model)

    if args.approach == "bare":
        for p in model.parameters():
            p.requires_grad_(True)

        def step(ids):
            for p in model.parameters():
                p.grad = None
            model(input_ids=ids, use_cache=False).logits[0, -1].max().backward()

    elif args.approach == "actpat":
        scoring = load_settings({"models": {"m": {"source": "smollm2"}}, "domains": {"d": {"source": "packaged", "name": "python-stdlib"}}}).scoring
        scorer = ShardScorer(model, layout, scoring, kernel=args.kernel)

        def step(ids):
            scorer.score_batch(ids, [ids.shape[1]] * len(ids))

    else:  # authors
        weights = layer_weights(model, layout)
        for p in model.parameters():
            p.requires_grad_(True)
        sums = [None] * layout.n_layers

        def step(ids):
            for p in model.parameters():
                p.grad = None
            model(input_ids=ids, use_cache=False).logits[0, -1].max().backward()
            per_layer = [torch.cat([(p.grad * p.data).view(-1) for p in layer]) for layer in weights]
            for i, v in enumerate(per_layer):
                sums[i] = v.abs() if sums[i] is None else sums[i] + v.abs()

    step(samples[0])  # warm-up (and, for actpat, the one-off sketch hash)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for ids in samples[1:]:
        step(ids)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    n = (len(samples) - 1) * b
    name = f"actpat {args.kernel} b={b}" if args.approach == "actpat" else args.approach
    return {"approach": name, "samples": n, "seconds": elapsed,
            "samples_per_s": n / elapsed, "peak_gib": peak,
            "peak_kind": "cuda max allocated" if cuda else "process peak RSS"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["default", "llama2-7b-random"], default="default")
    ap.add_argument("--checkpoint", help="a prepared checkpoint directory (default: the embedded GGUF)")
    ap.add_argument("--layers", type=int, help="fewer layers for the 7B preset (memory)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,2,4,8", help="actpat's batch sizes to measure")
    ap.add_argument("--kernels", default="fused,eager",
                    help="actpat's reductions to measure (fused: one pass per weight, CPU; eager: torch operations)")
    ap.add_argument("--kernel", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison (machine drift)")
    ap.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--approach", choices=["bare", "actpat", "authors"], help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help="also write the results as JSON")
    args = ap.parse_args()
    if args.approach:
        print(json.dumps(run_one(args)))
        return
    configs = ([("bare", 1, "auto")] + [("actpat", int(b), k) for k in args.kernels.split(",") for b in args.batch_sizes.split(",")]
               + [("authors", 1, "auto")])
    print(f"model={args.preset} device={args.device} dtype={args.dtype} seq_len={args.seq_len} "
          f"samples={args.samples} threads={args.threads}")
    rows = []
    for rnd in range(args.rounds):
        round_rows = []
        for approach, b, kernel in configs:
            cmd = [sys.executable, __file__, "--approach", approach, "--batch-size", str(b), "--kernel", kernel] + [
                x for a, v in vars(args).items()
                if v is not None and a not in ("approach", "json_out", "batch_size", "batch_sizes", "rounds", "kernel", "kernels")
                for x in (f"--{a.replace('_', '-')}", str(v))
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{approach} failed:\n{out.stderr[-3000:]}")
            round_rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        bare = round_rows[0]["seconds"] / round_rows[0]["samples"]
        authors = round_rows[-1]["seconds"] / round_rows[-1]["samples"]
        print(f"round {rnd + 1}:")
        print(f"  {'approach':<19} {'s/sample':>9} {'samples/s':>10} {'vs bare':>8} {'authors/x':>10} {'peak GiB':>9}")
        for r in round_rows:
            per = r["seconds"] / r["samples"]
            print(f"  {r['approach']:<19} {per:>9.3f} {r['samples_per_s']:>10.3f} {per / bare:>8.2f} "
                  f"{authors / per:>10.2f} {r['peak_gib']:>9.2f}")
        rows += round_rows
    print(f"targets: actpat <= 0.8 x bare, authors/actpat >= 1.5, actpat peak <= bare peak ({rows[0]['peak_kind']})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
