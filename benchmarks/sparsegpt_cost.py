"""Time of SparseGPT on one decoder layer of a real checkpoint: the layer loop, then the prune step.

The layer loop (``--windows`` random calibration windows of ``--seq-len`` tokens through the dense
layers before it): the calibration pass that accumulates the Gram matrices, their factorizations
and the seven matrices' prune steps, with one Gram and one factorization per distinct input
(``actpat.pruning._collect`` finds them from the hooks: q, k and v share one, gate and up another)
against one per matrix, as before; masks and weights compared bit for bit.

The prune step's baseline is the authors' form, one column at a time over each block of 128 (``column_loop``
below, as actpat had it before); against it, ``actpat.pruning.SparseGPT`` with each sub-block width
``inner`` (a batched triangular solve per sub-block). The layer's seven matrices are pruned from
the dense weights with the Gram matrix of the same random calibration inputs per input width (the
time does not depend on their values), unstructured to 0.5 and 2:4; the masks are compared with the
baseline's, and the largest weight difference (rounding: the same arithmetic in another order).
Then AlphaPruning's spectra of the same seven matrices: the authors' float32 SVD against
``actpat.pruning.esd`` (eigenvalues of the smaller Gram matrix in float64), with the float64 SVD's
squared singular values as the reference for both.

  python benchmarks/sparsegpt_cost.py --model-dir resources/models/smollm2-135m [--layer 0]
      [--inner 8 16 32] [--threads 1] [--repeats 3] [--windows 16 --seq-len 256] [--only-layer-loop]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))


def column_loop(weight: torch.Tensor, gram: torch.Tensor, ratio: float, nm, block: int = 128, damp: float = 0.01):
    """The baseline: each column's error applied to the rest of its block before the next column."""
    from actpat.masks import matrix_mask, nm_mask

    rows, cols = weight.shape
    w = weight.detach().double().clone()
    h = gram.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for c1 in range(0, cols, block):
        c2 = min(c1 + block, cols)
        w1, u1 = w[:, c1:c2].clone(), u[c1:c2, c1:c2]
        d = torch.diagonal(u1)
        err = torch.zeros_like(w1)
        m1 = mask[:, c1:c2]
        if not nm:
            m1.copy_(matrix_mask(w1 ** 2 / d ** 2, ratio))
        for c in range(c2 - c1):
            if nm and c % nm[1] == 0:
                m1[:, c:c + nm[1]] = nm_mask(w1[:, c:c + nm[1]] ** 2 / d[c:c + nm[1]] ** 2, *nm)
            q = torch.where(m1[:, c], 0.0, w1[:, c])
            err[:, c] = (w1[:, c] - q) / d[c]
            w1[:, c:] -= err[:, c:c + 1] * u1[c:c + 1, c:]
            w1[:, c] = q
        w[:, c1:c2] = w1
        w[:, c2:] -= err @ u[c1:c2, c2:]
    weight.copy_(w.to(weight.dtype))
    return mask


def fresh(gram):
    """An InputGram holding a copy of ``gram``'s sums (a statistic factorizes once, then drops them)."""
    from actpat.bases import InputGram

    g = InputGram.__new__(InputGram)
    g.gram, g._factor = gram.clone(), None
    return g


def layer_loop(model, layout, args) -> None:
    """Calibration pass, factorizations and prune steps of one layer, statistics shared by input
    or one per matrix (best of ``repeats``), from the same dense weights and inputs."""
    from actpat.bases import SparseGPT
    from actpat.decoder import find_decoder_layers
    from actpat.pruning import _collect, _first_layer_inputs, _linear_modules, _run_layer

    _, layers = find_decoder_layers(model)
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(0, model.config.vocab_size, (args.windows, args.seq_len), generator=gen)
    hidden, call = _first_layer_inputs(model, layers, windows, "cpu")
    for i in range(args.layer):
        hidden = _run_layer(layers[i], hidden, call)
    layer = layers[args.layer]
    modules = _linear_modules(layer, layout)
    dense = [m.weight.detach().clone() for m in modules]
    base = SparseGPT(block=args.block)
    print(f"layer loop, layer {args.layer}: {args.windows} windows of {args.seq_len} tokens, unstructured 0.5, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"{'statistics':<24} {'distinct':>8} {'s/layer':>8} {'of which calibration':>21} {'speed-up':>8} {'identical':>9}")
    before = None
    for share in (False, True):
        best, calibration = float("inf"), 0.0
        for _ in range(args.repeats):
            with torch.no_grad():
                for m, w in zip(modules, dense):
                    m.weight.copy_(w)
                t0 = time.perf_counter()
                statistics, _ = _collect(layer, modules, base.statistic, hidden, call, output=False, share=share)
                t1 = time.perf_counter()
                masks = [base.prune(m.weight, st, 0.5, None) for m, st in zip(modules, statistics)]
                t2 = time.perf_counter()
            if t2 - t0 < best:
                best, calibration = t2 - t0, t1 - t0
        pruned = [m.weight.detach().clone() for m in modules] + masks
        before = before or (pruned, best)
        same = all(torch.equal(a, b) for a, b in zip(pruned, before[0]))
        label = "one per distinct input" if share else "one per matrix (before)"
        print(f"{label:<24} {len({id(s) for s in statistics}):>8} {best:>8.3f} {calibration:>21.3f} "
              f"{before[1] / best:>7.2f}x {str(same):>9}", flush=True)
    with torch.no_grad():
        for m, w in zip(modules, dense):
            m.weight.copy_(w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--layer", type=int, default=0)
    ap.add_argument("--inner", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=4096, help="calibration tokens of the prune step's Gram matrices")
    ap.add_argument("--windows", type=int, default=16, help="calibration windows of the layer loop")
    ap.add_argument("--seq-len", type=int, default=256, help="tokens per calibration window of the layer loop")
    ap.add_argument("--only-layer-loop", action="store_true", help="skip the prune step's and the spectra's tables")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from actpat.decoder import weight_layout
    from actpat.models import load_checkpoint
    from actpat.bases import InputGram, SparseGPT

    model, _, _ = load_checkpoint(args.model_dir)
    layout = weight_layout(model)
    layer_loop(model, layout, args)
    if args.only_layer_loop:
        return
    layer = model.get_submodule(f"{layout.layer_prefix}.{args.layer}")
    modules = [layer.get_submodule(name) for name in layout.matrices]
    gen = torch.Generator().manual_seed(0)
    grams = {}
    for m in modules:
        width = m.weight.shape[1]
        if width not in grams:
            g = InputGram(m)
            g.add_batch(torch.randn(args.tokens, width, generator=gen, dtype=torch.float64))
            grams[width] = g.gram
    dense = [m.weight.detach().clone() for m in modules]
    shapes = ", ".join(f"{n} {tuple(w.shape)}" for n, w in zip(layout.matrices, dense))
    print(f"\nprune step, layer {args.layer}: {shapes}; block {args.block}, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'structure':<12} {'method':<22} {'s/layer':>8} {'speed-up':>8} {'max |Δw| vs baseline':>21} {'same mask':>9}")

    def prune_all(fn):
        best, result = float("inf"), None
        for _ in range(args.repeats):
            weights = [w.clone() for w in dense]
            statistics = [fresh(grams[m.weight.shape[1]]) for m in modules]
            t0 = time.perf_counter()
            with torch.no_grad():
                masks = [fn(w, g) for w, g in zip(weights, statistics)]
            best = min(best, time.perf_counter() - t0)
            result = (weights, masks)
        return best, result

    for nm in (None, (2, 4)):
        label = "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"
        base_time, base = prune_all(lambda w, g: column_loop(w, g.gram, 0.5, nm, args.block))
        print(f"{label:<12} {'column loop (baseline)':<22} {base_time:>8.3f} {1.0:>7.2f}x {0.0:>21.2e} {'True':>9}", flush=True)
        for inner in args.inner if nm is None else [nm[1]]:
            took, (weights, masks) = prune_all(lambda w, g: SparseGPT(block=args.block, inner=inner).prune(w, g, 0.5, nm))
            diff = max(float((a - b).abs().max()) for a, b in zip(weights, base[0]))
            same = all(torch.equal(a, b) for a, b in zip(masks, base[1]))
            name = f"actpat, inner {inner}" if nm is None else "actpat, one group of M"
            print(f"{label:<12} {name:<22} {took:>8.3f} {base_time / took:>7.2f}x {diff:>21.2e} {str(same):>9}", flush=True)

    from actpat.allocations import esd

    def float32_svd(w):
        return np.sort(torch.linalg.svdvals(w.float()).double().numpy() ** 2)

    exact = [np.sort(np.linalg.svd(w.double().numpy(), compute_uv=False) ** 2) for w in dense]
    print(f"\n{'spectra of the layer':<36} {'s/layer':>8} {'max rel. error vs float64 SVD':>30}")
    for name, fn in (("float32 svdvals (AlphaPruning)", float32_svd), ("actpat.pruning.esd", esd)):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            spectra = [fn(w) for w in dense]
            best = min(best, time.perf_counter() - t0)
        error = max(float(np.abs(s - e).max() / e.max()) for s, e in zip(spectra, exact))
        print(f"{name:<36} {best:>8.3f} {error:>30.2e}", flush=True)

if __name__ == "__main__":
    main()
