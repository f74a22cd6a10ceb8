"""One pass per weight on the CPU: everything a score store keeps from a batch of one matrix's
per-sample weight gradients, read once.

``ShardScorer`` forms, for each scored matrix, the batch's weight gradients g (batch, rows, cols)
inside the backward pass. The eager path (``ShardScorer`` with kernel ``eager``, the reference in
the tests) then makes several passes over them with torch: |w·g|, the float32 sums, L1, L2, one
count per threshold, the exact zeros and the sketch's group sums and scatter-add. On a CPU those
passes cost more than the gradients themselves. This kernel (numba, compiled once and cached on
disk) does the same work in one pass: each row of s = |w·g| is formed in a buffer that stays in the
L1 cache and reduced there; the sketch's group sums of the current strip of rows
(``actpat.sketch``) stay in a row-sized buffer and are scattered into the buckets once per strip.

The results equal the eager path's: the float32 sums bit for bit (same operations, same order);
counts and zeros exactly; L1 and L2 to float64 rounding (row sums in float64 instead of float32);
the sketch to float32 summation order. The rows are split into one chunk per thread; every chunk
has its own partial statistics and sketch, which the caller adds up.

``count_above`` is the second look the relative counts need: once a sample's model-wide mean
score is known, the weights above each multiple of it, counted on |w·g| formed the same way.
"""

from __future__ import annotations

import os

import numpy as np

from actpat.sketch import GROUP_ROWS

try:  # numba is a dependency (pyproject.toml); without it the eager torch path is used
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None


def available() -> bool:
    """The fused kernel can run here (numba imports; ACTPAT_EAGER unset)."""
    return numba is not None and not os.environ.get("ACTPAT_EAGER")


if numba is not None:
    # reassociation only (vectorised float64 row sums); no fast-math assumptions about NaN or inf,
    # which must reach L1 for the scorer's non-finite check
    FLAGS = dict(fastmath={"reassoc", "nsz"}, cache=True, nogil=True)

    @njit(**FLAGS)
    def _flush(group_acc, strip, group_col, sketch, p):
        """Scatter the current strip's group sums into chunk p's sketch, and zero them."""
        n_batch, width = group_acc.shape
        k = sketch.shape[2]
        for b in range(n_batch):
            sk = sketch[p, b]
            for c in range(width):
                index = strip + group_col[c]
                if index >= k:
                    index -= k
                sk[index] += group_acc[b, c]
                group_acc[b, c] = 0.0

    @njit(**FLAGS)
    def _reduce_rows(g, w, acc, thresholds, row_sign, col_sign, strip_code, group_col, l1, l2, above, zeros, sketch,
                     p, first, last):
        """Rows first..last-1 into chunk p's partial outputs (see ``reduce_batch``)."""
        n_batch, rows, cols = g.shape
        n_thr = thresholds.shape[0]
        group_acc = np.zeros((n_batch, group_col.shape[0]), np.float32)
        buf = np.empty(cols, np.float32)
        sign = np.empty(cols, np.float32)
        dest = np.empty(cols, np.int64)
        current = first // GROUP_ROWS
        for r in range(first, last):
            if r // GROUP_ROWS != current:
                _flush(group_acc, strip_code[current], group_col, sketch, p)
                current = r // GROUP_ROWS
            i = r % GROUP_ROWS
            for c in range(cols):  # each weight's sign and group column (actpat.sketch)
                sign[c] = row_sign[r] * col_sign[c]
                m = c % GROUP_ROWS
                dest[c] = c - m + (m - i + GROUP_ROWS) % GROUP_ROWS
            for b in range(n_batch):
                s1 = 0.0
                s2 = 0.0
                nonzero = 0
                gb = group_acc[b]
                for c in range(cols):
                    s = abs(g[b, r, c] * w[r, c])
                    buf[c] = s
                    acc[r, c] += s
                    s1 += s
                    s2 += np.float64(s) * s
                    nonzero += s != 0
                    gb[dest[c]] += sign[c] * s
                l1[p, b] += s1
                l2[p, b] += s2
                zeros[p, b] += cols - nonzero
                for t in range(n_thr):
                    threshold = thresholds[t]
                    n = 0
                    for c in range(cols):
                        n += buf[c] > threshold
                    above[p, b, t] += n
        if last > first:
            _flush(group_acc, strip_code[current], group_col, sketch, p)

    @njit(parallel=True, **FLAGS)
    def _reduce_chunks(g, w, acc, thresholds, row_sign, col_sign, strip_code, group_col, l1, l2, above, zeros, sketch):
        """The rows in one chunk per thread, each chunk with its own partial outputs."""
        rows = g.shape[1]
        chunks = l1.shape[0]
        for p in prange(chunks):
            _reduce_rows(g, w, acc, thresholds, row_sign, col_sign, strip_code, group_col, l1, l2, above, zeros,
                         sketch, p, rows * p // chunks, rows * (p + 1) // chunks)

    @njit(**FLAGS)
    def _count_rows(g, w, thresholds, counts, p, first, last):
        n_batch, rows, cols = g.shape
        for r in range(first, last):
            for b in range(n_batch):
                for t in range(thresholds.shape[1]):
                    threshold = thresholds[b, t]
                    n = 0
                    for c in range(cols):
                        n += abs(g[b, r, c] * w[r, c]) > threshold
                    counts[p, b, t] += n

    @njit(parallel=True, **FLAGS)
    def _count_chunks(g, w, thresholds, counts):
        rows = g.shape[1]
        chunks = counts.shape[0]
        for p in prange(chunks):
            _count_rows(g, w, thresholds, counts, p, rows * p // chunks, rows * (p + 1) // chunks)


def _check(expect: dict) -> None:
    """Dtypes, shapes and contiguity of a kernel's arguments: a wrong one would write out of bounds."""
    for name, (arr, dtype, shape) in expect.items():
        if arr.dtype != dtype or arr.shape != shape or not arr.flags.c_contiguous:
            raise ValueError(f"fused: {name} is {arr.dtype}{arr.shape}, expected contiguous {np.dtype(dtype)}{shape}")


def reduce_batch(g: np.ndarray, w: np.ndarray, acc: np.ndarray, thresholds: np.ndarray, codes, l1, l2, above, zeros,
                 sketch) -> None:
    """Everything the store keeps from a batch of one matrix's gradients, in one pass.

    g (batch, rows, cols) float32 per-sample weight gradients; w, acc (rows, cols) float32;
    ``codes``: the matrix's ``actpat.sketch.Codes`` as numpy arrays. Partial outputs, one per chunk
    of rows (added to, not overwritten): l1, l2 (chunks, batch) float64 (L2 squared); above
    (chunks, batch, thresholds), zeros (chunks, batch) int64; sketch (chunks, batch, k) float32.
    ``acc`` gets Σ_b |w·g_b| added in place."""
    n_batch, rows, cols = g.shape
    chunks, k = l1.shape[0], sketch.shape[-1]
    row_sign, col_sign, strip, group_col = codes
    width = GROUP_ROWS * -(-cols // GROUP_ROWS)
    _check({
        "g": (g, np.float32, (n_batch, rows, cols)), "w": (w, np.float32, (rows, cols)),
        "acc": (acc, np.float32, (rows, cols)), "thresholds": (thresholds, np.float32, thresholds.shape[:1]),
        "row_sign": (row_sign, np.float32, (rows,)), "col_sign": (col_sign, np.float32, (cols,)),
        "strip": (strip, np.int32, (-(-rows // GROUP_ROWS),)), "group_col": (group_col, np.int32, (width,)),
        "l1": (l1, np.float64, (chunks, n_batch)), "l2": (l2, np.float64, (chunks, n_batch)),
        "above": (above, np.int64, (chunks, n_batch, len(thresholds))), "zeros": (zeros, np.int64, (chunks, n_batch)),
        "sketch": (sketch, np.float32, (chunks, n_batch, k)),
    })
    if not (0 <= strip.min(initial=0) and strip.max(initial=0) < k and 0 <= group_col.min(initial=0)
            and group_col.max(initial=0) < k):
        raise ValueError("fused.reduce_batch: sketch codes outside [0, k)")
    args = (g, w, acc, thresholds, row_sign, col_sign, strip, group_col, l1, l2, above, zeros, sketch)
    if chunks == 1:  # no thread pool: its idle workers cost more than they give to a single-threaded job
        _reduce_rows(*args, 0, 0, rows)
    else:
        _reduce_chunks(*args)


def count_above(g: np.ndarray, w: np.ndarray, thresholds: np.ndarray, counts: np.ndarray) -> None:
    """Per sample, the weights with |w·g| > thresholds[b, t] (float32 comparison), added to the
    partial counts (chunks, batch, thresholds) int64."""
    n_batch, rows, cols = g.shape
    chunks = counts.shape[0]
    _check({"g": (g, np.float32, (n_batch, rows, cols)), "w": (w, np.float32, (rows, cols)),
            "thresholds": (thresholds, np.float32, (n_batch, thresholds.shape[1])),
            "counts": (counts, np.int64, (chunks, n_batch, thresholds.shape[1]))})
    if chunks == 1:
        _count_rows(g, w, thresholds, counts, 0, 0, rows)
    else:
        _count_chunks(g, w, thresholds, counts)


def set_threads(n: int) -> int:
    """Use up to ``n`` threads (bounded by numba's pool); returns the number used (the chunks).
    One thread starts no pool at all."""
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    if n > 1:
        numba.set_num_threads(n)
    return n
