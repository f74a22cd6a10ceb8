"""The scorer's reduction on a GPU: one Triton kernel per scored matrix and batch.

Each program owns a tile of the weight matrix W (BLOCK_M rows × BLOCK_N columns) and walks the
batch's samples in order. For each sample it has the tile of per-sample weight gradients g, either

* formed in the kernel (``form=True``, stage B): g = Σ_t P[b, t, rows]ᵀ Q[b, t, cols] with ``tl.dot``
  over the sample's real positions only (half-precision operands, float32 accumulation), where
  (P, Q) = (output gradients δ, inputs x) of a linear layer, so the batch's gradients are never
  written to GPU memory, or
* read from the batch's float32 gradients formed by a batched matmul (``form=False``, stage A),

and reduces s = |w·g| where it is, in registers:

* the float32 sums Σ_b s: the tile's program loads them once, adds the samples in order and stores
  them: no atomics, the same additions in the same order on every run;
* per-sample L1, L2 (float32 sums of the tile), counts above the absolute thresholds and exact zeros,
  written as one partial per (tile, sample), added up by the caller in float64 / int64;
* the sketch: the signed sum of each group of G weights (``actpat.sketch``: a wrapped diagonal of a
  G × G block, taken by rotating the tile's rows inside registers), added to its bucket with one
  atomic addition per group, not one per weight;
* in the second pass (``count_only=True``), once the samples' model-wide mean scores are known, the
  weights above each multiple of them (the relative counts), counted exactly on the same s: the same
  kernel with the same tiles forms the same values.

Without a GPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1 set before triton
is first imported: transformers imports it when it builds a model) on CPU tensors; half-precision operands are then widened to float32 on load
(``upcast``), since the interpreter's bfloat16 arithmetic and ``tl.dot`` are not exact. The eager
torch path of ``actpat.scoring`` is the reference these kernels are tested against.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from actpat.errors import ActpatError
from actpat.sketch import GROUP_ROWS, Codes


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def available(device) -> bool:
    """The kernels can run on tensors of ``device``: CUDA with triton installed (torch's CUDA
    builds bring it; the CPU build has none), or the CPU under the interpreter."""
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.device(device).type == "cuda" or interpreting()


# (BLOCK_M, BLOCK_N, BLOCK_T, warps) for every launch instead of ``tiles``' choice: set by
# benchmarks/gpu_check.py to compare tilings (autotuning would need a GPU at test time)
TILE: tuple[int, int, int, int] | None = None


def tiles(rows: int, cols: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_T, warps) for a matrix: 128 × 128 tiles (as a matmul's: each tile
    of P and Q read from memory serves 128 rows or columns of dot products) and 32 positions per
    ``tl.dot``; smaller for small matrices (the smallest ``tl.dot`` takes 16), so that a tiny
    model's tiles are not mostly padding. Powers of two, so that tiles and sketch groups align."""
    if TILE is not None:
        return TILE

    def fit(n, most):
        size = 16
        while size < most and size < n:
            size *= 2
        return size

    bm, bn = fit(rows, 128), fit(cols, 128)
    return bm, bn, 32, 8 if bm * bn >= 128 * 128 else 4


@functools.cache
def _kernel():
    """The kernel, defined at first use (``actpat.triton_reduce``): importing triton costs a CPU
    job time it has no use for, and whether it interprets is read when the kernel is defined."""
    if interpreting():
        import triton.language as tl

        # triton.language's own functions (tl.zeros ...) are defined when triton is first imported,
        # interpreted or not: a TRITON_INTERPRET set after that (transformers imports triton when it
        # builds a model) would fail inside the kernel with a message naming neither
        if type(tl.standard.zeros).__name__ != "InterpretedFunction":
            raise ActpatError("TRITON_INTERPRET=1 was set after triton was imported: set it before the "
                              "process starts (the interpreter is chosen at triton's import)")
    from actpat.triton_reduce import reduce_kernel

    return reduce_kernel


def _launch(w, *, g=None, pq=None, lengths=None, acc=None, thresholds=None, codes: Codes | None = None,
            sketch=None, relative=None) -> dict[str, torch.Tensor]:
    """One launch over a matrix w (rows, cols): stage A (``g``) or B (``pq`` = (P, Q) and
    ``lengths``); the first pass (``acc``, ``thresholds``, ``codes``, ``sketch``) or the count pass
    (``relative``). Returns the partials, (tile, sample) or (tile, sample, threshold)."""
    rows, cols = w.shape
    form, count_only = pq is not None, relative is not None
    if form and pq[0].dtype != pq[1].dtype:
        pq = tuple(t.float() for t in pq)
    n_batch = len(pq[0]) if form else len(g)
    for name, t in (("acc", acc), ("sketch", sketch)):
        if t is not None and not t.is_contiguous():
            raise ValueError(f"triton_kernels: {name} must be contiguous")
    bm, bn, bt, warps = tiles(rows, cols)
    if bm % GROUP_ROWS or bn % GROUP_ROWS:
        raise ValueError(f"tiles of {bm} x {bn} do not align with the sketch's groups of {GROUP_ROWS}")
    grid = (-(-rows // bm), -(-cols // bn))
    n_tiles = grid[0] * grid[1]
    n_thr = 0 if count_only else len(thresholds)
    n_rel = relative.shape[1] if count_only else 0
    f32, i32 = dict(dtype=torch.float32, device=w.device), dict(dtype=torch.int32, device=w.device)
    none = torch.zeros(1, **f32)  # stands for the arguments a launch does not read
    first = 0 if count_only else n_tiles * n_batch
    out = {"l1": torch.empty(first, **f32), "l2": torch.empty(first, **f32), "zeros": torch.empty(first, **i32),
           "above": torch.empty(n_tiles * n_batch * n_thr, **i32), "counts": torch.empty(n_tiles * n_batch * n_rel, **i32)}
    p, q = pq if form else (none, none)
    _kernel()[grid](
        none if form else g, p, q, w, none if count_only else acc, lengths if form else none.int(),
        none if count_only or not n_thr else thresholds, relative if count_only else none,
        *((none,) * 4 if count_only else codes),
        out["l1"], out["l2"], out["above"], out["zeros"], none if count_only else sketch, out["counts"],
        n_batch, rows, cols, 1 if count_only else sketch.shape[-1],
        *((0, 0, 0) if form else g.stride()), *(p.stride() if form else (0, 0, 0)),
        *(q.stride() if form else (0, 0, 0)), *w.stride(),
        N_THR=n_thr, N_REL=n_rel, FORM=form, COUNT_ONLY=count_only,
        UPCAST=interpreting(), IEEE=interpreting() or (form and p.dtype == torch.float32),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_T=bt, GROUP=GROUP_ROWS, num_warps=warps,
    )
    return {"l1": out["l1"].view(-1, n_batch), "l2": out["l2"].view(-1, n_batch), "zeros": out["zeros"].view(-1, n_batch),
            "above": out["above"].view(n_tiles, n_batch, n_thr), "counts": out["counts"].view(n_tiles, n_batch, n_rel)}


def operands(module, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, Q) of a linear module with g = Σ_t P_tᵀ Q_t in the weight's layout: (δ, x) for a
    ``Linear`` (weight out × in), (x, δ) for GPT-2's ``Conv1D`` (weight in × out)."""
    return (x, delta) if type(module).__name__ == "Conv1D" else (delta, x)


def reduce(w: torch.Tensor, acc: torch.Tensor, thresholds: torch.Tensor, codes: Codes, sketch: torch.Tensor, *,
           g: torch.Tensor | None = None, pq=None, lengths: torch.Tensor | None = None) -> dict:
    """The first pass over one matrix of a batch: ``acc`` (rows, cols) float32 and ``sketch``
    (batch, k) float32 are added to in place; returns the per-(tile, sample) partials ``l1``, ``l2``
    (float32), ``above`` (tile, sample, threshold) and ``zeros`` (int32)."""
    return _launch(w, g=g, pq=pq, lengths=lengths, acc=acc, thresholds=thresholds, codes=codes, sketch=sketch)


def count_above(w: torch.Tensor, relative: torch.Tensor, *, g: torch.Tensor | None = None, pq=None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The count pass: (tile, sample, threshold) int32 partial counts of |w·g| > relative[b, t]."""
    return _launch(w, g=g, pq=pq, lengths=lengths, relative=relative)["counts"]
