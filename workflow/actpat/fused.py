"""One pass per weight on the CPU: everything a score store keeps from a batch of one matrix's
per-sample weight gradients, read once.

``ShardScorer`` forms, for each scored matrix, the batch's weight gradients g (batch, rows, cols)
inside the backward pass. The eager path (``ShardScorer._reduce_eager``, also the path on CUDA and
the reference in the tests) then makes about ten passes over them with torch: |w·g|, the float32
sums, L1, L2, one count per threshold, the exact zeros, a histogram and the sketch's scatter-add.
On a CPU those passes cost more than the gradients themselves. This kernel (numba, compiled once
and cached on disk) does the same work in one pass: each row of s = |w·g| is formed in a buffer
that stays in the L1 cache and is reduced there before the next row.

The results equal the eager path's: the float32 sums bit for bit (same operations, same order);
counts, zeros and the histogram exactly; L1 and L2 to float64 rounding (row sums in float64
instead of float32); the sketch to float32 summation order. The rows are split into one chunk per
thread; every chunk has its own partial statistics, histogram and sketch, which the caller adds up.
"""

from __future__ import annotations

import os

import numpy as np

try:  # numba is a dependency (pyproject.toml); without it the eager torch path is used
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

HIST_SHIFT = 17  # histogram of float32 bit patterns >> 17: 64 bins per octave
HIST_BINS = 1 << (31 - HIST_SHIFT)


def available() -> bool:
    """The fused kernel can run here (numba imports; ACTPAT_EAGER unset)."""
    return numba is not None and not os.environ.get("ACTPAT_EAGER")


if numba is not None:
    # reassociation only (vectorised float64 row sums); no fast-math assumptions about NaN or inf,
    # which must reach L1 for the scorer's non-finite check
    FLAGS = dict(fastmath={"reassoc", "nsz"}, cache=True, nogil=True)

    @njit(**FLAGS)
    def _reduce_rows(g, w, acc, thresholds, row_codes, col_codes, two_k, l1, l2, above, zeros, hist, sketch, p, first, last):
        """Rows first..last-1 into chunk p's partial outputs (see ``_reduce_batch``)."""
        n_batch, rows, cols = g.shape
        n_thr = thresholds.shape[0]
        buf = np.empty(cols, np.float32)
        bits = buf.view(np.int32)
        for r in range(first, last):
            shift = row_codes[r]
            for b in range(n_batch):
                s1 = 0.0
                s2 = 0.0
                nonzero = 0
                for c in range(cols):
                    s = abs(g[b, r, c] * w[r, c])
                    buf[c] = s
                    acc[r, c] += s
                    s1 += s
                    s2 += np.float64(s) * s
                    nonzero += s != 0
                l1[p, b] += s1
                l2[p, b] += s2
                zeros[p, b] += cols - nonzero
                for t in range(n_thr):
                    threshold = thresholds[t]
                    n = 0
                    for c in range(cols):
                        n += buf[c] > threshold
                    above[p, b, t] += n
                counts = hist[p, b]
                for c in range(cols):
                    counts[bits[c] >> HIST_SHIFT] += 1
                sk = sketch[p, b]
                for c in range(cols):
                    index = shift + col_codes[c]
                    if index >= two_k:
                        index -= two_k
                    sk[index] += buf[c]

    @njit(parallel=True, **FLAGS)
    def _reduce_chunks(g, w, acc, thresholds, row_codes, col_codes, two_k, l1, l2, above, zeros, hist, sketch):
        """The rows in one chunk per thread, each chunk with its own partial outputs."""
        rows = g.shape[1]
        chunks = l1.shape[0]
        for p in prange(chunks):
            _reduce_rows(g, w, acc, thresholds, row_codes, col_codes, two_k, l1, l2, above, zeros, hist, sketch,
                         p, rows * p // chunks, rows * (p + 1) // chunks)


def reduce_batch(g: np.ndarray, w: np.ndarray, acc: np.ndarray, thresholds: np.ndarray, row_codes: np.ndarray,
                 col_codes: np.ndarray, two_k: int, l1, l2, above, zeros, hist, sketch) -> None:
    """Everything the store keeps from a batch of one matrix's gradients, in one pass.

    g (batch, rows, cols) float32 per-sample weight gradients; w, acc (rows, cols) float32;
    row_codes (rows,), col_codes (cols,) int32 in [0, two_k): the sketch index of weight (r, c) is
    (row_codes[r] + col_codes[c]) mod two_k. Partial outputs, one per chunk of rows (added to, not
    overwritten): l1, l2 (chunks, batch) float64 (L2 squared); above (chunks, batch, thresholds),
    zeros (chunks, batch) int64; hist (chunks, batch, HIST_BINS) int32; sketch (chunks, batch,
    two_k) float32. ``acc`` gets Σ_b |w·g_b| added in place. Shapes and dtypes are checked first:
    a wrong one would write out of bounds."""
    n_batch, rows, cols = g.shape
    chunks = l1.shape[0]
    expect = {
        "g": (g, np.float32, (n_batch, rows, cols)), "w": (w, np.float32, (rows, cols)),
        "acc": (acc, np.float32, (rows, cols)), "thresholds": (thresholds, np.float32, thresholds.shape[:1]),
        "row_codes": (row_codes, np.int32, (rows,)), "col_codes": (col_codes, np.int32, (cols,)),
        "l1": (l1, np.float64, (chunks, n_batch)), "l2": (l2, np.float64, (chunks, n_batch)),
        "above": (above, np.int64, (chunks, n_batch, len(thresholds))), "zeros": (zeros, np.int64, (chunks, n_batch)),
        "hist": (hist, np.int32, (chunks, n_batch, HIST_BINS)), "sketch": (sketch, np.float32, (chunks, n_batch, two_k)),
    }
    for name, (arr, dtype, shape) in expect.items():
        if arr.dtype != dtype or arr.shape != shape or not arr.flags.c_contiguous:
            raise ValueError(f"fused.reduce_batch: {name} is {arr.dtype}{arr.shape}, expected contiguous {np.dtype(dtype)}{shape}")
    if not (0 <= row_codes.min(initial=0) and row_codes.max(initial=0) < two_k
            and 0 <= col_codes.min(initial=0) and col_codes.max(initial=0) < two_k):
        raise ValueError("fused.reduce_batch: sketch codes outside [0, 2k)")
    args = (g, w, acc, thresholds, row_codes, col_codes, two_k, l1, l2, above, zeros, hist, sketch)
    if chunks == 1:  # no thread pool: its idle workers cost more than they give to a single-threaded job
        _reduce_rows(*args, 0, 0, rows)
    else:
        _reduce_chunks(*args)


def set_threads(n: int) -> int:
    """Use up to ``n`` threads (bounded by numba's pool); returns the number used (the chunks).
    One thread starts no pool at all."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    if n > 1:
        numba.set_num_threads(n)
    return n
