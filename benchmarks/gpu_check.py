"""The scoring engine's GPU checks, as one script that runs in a few minutes on one GPU:

1. throughput: a Llama-2-7B-shaped random model in bfloat16 at 256 tokens, samples/s of the
   scorer at several batch sizes (target >= 25/s on an H200), peak GPU memory, and the authors'
   loop (batch 1, every weight's grad, a copy of grad·w per layer) beside it;
2. size: the largest Llama shape that scores on one GPU capped at 80 GB
   (``torch.cuda.set_per_process_memory_fraction``);
3. determinism: one shard scored twice in bfloat16 and once in float32, on the 7B-shaped model
   and on the embedded model: max relative difference of the sums, count differences, sketch
   differences (the bounds the README states).

  python benchmarks/gpu_check.py [--device cuda] [--quick]     # --quick: tiny shapes, any device
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

LLAMA = {  # hidden, intermediate, layers, heads, kv heads
    "7b": (4096, 11008, 32, 32, 32), "10b": (4608, 12288, 36, 36, 36), "13b": (5120, 13824, 40, 40, 40),
    "tiny": (64, 128, 4, 4, 4),
}


def build(shape: str, dtype, device):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    h, i, n, heads, kv = LLAMA[shape]
    cfg = LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=n, num_attention_heads=heads,
                      num_key_value_heads=kv, vocab_size=32000, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


def scoring_settings():
    from actpat.settings import load_settings

    return load_settings({"models": {"m": {"source": "smollm2"}}, "domains": {"d": {"source": "packaged", "name": "python-stdlib"}}}).scoring


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def throughput(shape, device, seq_len, batch_sizes, n_samples) -> list[dict]:
    import torch

    from actpat.models import layer_weights, weight_layout
    from actpat.scoring import ShardScorer

    model = build(shape, torch.bfloat16, device)
    layout = weight_layout(model)
    rows = []
    for b in batch_sizes:
        scorer = ShardScorer(model, layout, scoring_settings())
        ids = torch.randint(100, 31999, (b, seq_len), device=device)
        scorer.score_batch(ids, [seq_len] * b)  # warm-up
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(max(1, n_samples // b)):
            scorer.score_batch(ids, [seq_len] * b)
        sync(device)
        n = max(1, n_samples // b) * b
        rows.append({"approach": f"actpat b={b}", "samples_per_s": n / (time.perf_counter() - t0),
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None})
        del scorer
        if device == "cuda":
            torch.cuda.empty_cache()
    # the authors' loop: every parameter requires grad, full logits, a copy of grad·w per layer
    weights = layer_weights(model, layout)
    for p in model.parameters():
        p.requires_grad_(True)
    sums = [None] * layout.n_layers
    ids = torch.randint(100, 31999, (1, seq_len), device=device)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    def step():
        for p in model.parameters():
            p.grad = None
        model(input_ids=ids, use_cache=False).logits[0, -1].max().backward()
        for i, layer in enumerate(weights):
            v = torch.cat([(p.grad * p.data).view(-1) for p in layer]).abs()
            sums[i] = v if sums[i] is None else sums[i] + v

    try:
        step()
        sync(device)
        t0 = time.perf_counter()
        k = max(1, n_samples // 4)
        for _ in range(k):
            step()
        sync(device)
        rows.append({"approach": "authors b=1", "samples_per_s": k / (time.perf_counter() - t0),
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None})
    except RuntimeError as exc:  # out of memory
        rows.append({"approach": "authors b=1", "error": str(exc).splitlines()[0][:120]})
    return rows


def largest_shape(device, cap_gb: float) -> list[dict]:
    import torch

    from actpat.models import weight_layout
    from actpat.scoring import ShardScorer

    out = []
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 1e9 / total))
    for shape in ("7b", "10b", "13b"):
        try:
            model = build(shape, torch.bfloat16, device)
            scorer = ShardScorer(model, weight_layout(model), scoring_settings())
            scorer.score_batch(torch.randint(100, 31999, (1, 256), device=device), [256])
            sync(device)
            out.append({"shape": shape, "fits": True, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None})
        except RuntimeError as exc:
            out.append({"shape": shape, "fits": False, "error": str(exc).splitlines()[0][:120]})
        finally:
            model = scorer = None
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
    return out


def determinism(model_factory, device, n, seq_len) -> dict:
    """Sums, counts and sketches of the same samples scored twice in bf16 and once in fp32."""
    import numpy as np
    import torch

    from actpat.models import weight_layout
    from actpat.scoring import ShardScorer

    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(100, 31999, (n, seq_len), generator=gen)

    def once(dtype):
        model = model_factory(dtype)
        scorer = ShardScorer(model, weight_layout(model), scoring_settings())
        res = scorer.score_batch(ids.to(device), [seq_len] * n)
        sums = torch.cat([s.flatten().cpu() for layer in scorer.sums for s in layer])
        return sums, np.stack([r.above for r in res]), np.stack([r.sketch for r in res])

    a, b, c = once(torch.bfloat16), once(torch.bfloat16), once(torch.float32)

    def compare(x, y):
        rel = ((x[0] - y[0]).abs() / y[0].abs().clamp_min(1e-30)).max().item()
        return {"sums_max_rel": rel, "sums_total_rel": abs(x[0].sum() - y[0].sum()).item() / y[0].sum().item(),
                "count_max_abs": int(np.abs(x[1] - y[1]).max()),
                "sketch_max_rel": float(np.abs(x[2] - y[2]).max() / np.abs(y[2]).max())}

    return {"bf16 vs bf16": compare(a, b), "bf16 vs fp32": compare(a, c)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test of this script)")
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    args = ap.parse_args()
    import torch

    from actpat.models import ModelSource, load_source

    shape, seq_len = ("tiny", 32) if args.quick else ("7b", 256)
    result = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__}
    result["throughput"] = throughput(shape, args.device, seq_len, [1, 4] if args.quick else [8, 16, 32],
                                      8 if args.quick else 64)
    print(json.dumps(result["throughput"], indent=1), flush=True)
    embedded = lambda dtype: load_source(ModelSource.parse("smollm2"), str(dtype).split(".")[-1])[0].to(args.device).eval()  # noqa: E731
    result["determinism"] = {
        "embedded": determinism(embedded, args.device, 4, 128),
        shape: determinism(lambda dtype: build(shape, dtype, args.device), args.device, 4, seq_len),
    }
    print(json.dumps(result["determinism"], indent=1), flush=True)
    if not args.quick:
        result["largest_on_80gb"] = largest_shape(args.device, 80)
        print(json.dumps(result["largest_on_80gb"], indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
