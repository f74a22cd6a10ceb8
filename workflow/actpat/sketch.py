"""A compact per-sample, per-layer summary of |s| from which LLMDcos can be estimated.

LLMDcos(a, b) = Σ|a_i b_i| / (‖a‖ ‖b‖) per layer. Keeping full per-sample score vectors is out of
the question for large models (13 GB per sample for a 7B model), so each sample keeps, per layer:

* the exact L2 norm ‖a‖ (in the per-sample statistics), and
* a CountSketch of |a|: ``k`` buckets, each weight i added with a sign σ(i) ∈ {±1} into bucket
  β(i). Since β and σ come from a fixed hash of the weight's position, the sketches of all samples
  (of any domain, any shard, any machine) are coordinated. Over a random choice of hash,
  ⟨sketch(a), sketch(b)⟩ is an unbiased estimate of ⟨|a|, |b|⟩ (E[σ(i)σ(j)] = 0 for i ≠ j), with
  a variance of the order of (⟨a,b⟩² + ‖a‖²‖b‖²)/k. The workflow uses one fixed hash
  (``sketch_seed``), so for a given pair the estimate has a fixed error;
  ``benchmarks/sketch_error.py`` measures its size and its mean signed value (the bias at that
  hash) on real scores, and the test suite holds the bound.

Estimating all pairs is then one matrix product. Estimates are not clipped to [0, 1] (clipping
would bias them near the bounds); plots clip for display only.

The hash (version 3) is laid out for a GPU: the weights of a matrix are added to the sketch in
groups of G = ``GROUP_ROWS``, so that a kernel adds one sum per group instead of one value per
weight (G times fewer atomic additions on a GPU), and a group takes G weights from G different rows
and G different columns. Rows are cut into strips of G; within a strip, row i (r mod G) is rotated
left by i inside each block of G columns, and the weights that land in the same column c' of the
rotated strip form a group: weight (r, c) is in group (r // G, c') with

    c' = G·(c // G) + ((c mod G) − (r mod G)) mod G,

that is, the groups are the wrapped diagonals of the strip's G × G blocks. Group (strip, c') goes to
bucket (u[strip] + v[c']) mod k, and weight (r, c) adds ρ[r]·τ[c]·|s(r, c)|, with one hash stream
per (layer, matrix) each for the row signs ρ, the column signs τ, the strip codes u and the group
column codes v. Signs of distinct weights are independent products, so the estimate stays unbiased
over the choice of hash. Why diagonals: weights of one column (one input feature) or one row share
large values (a layer's inputs have a few massive features), and grouping them is costly. Measured
on the default model's scores (4 layers, 16 samples): groups of 16 rows of one column put the 99th
percentile of |error| at 0.107 (0.021 with a bucket per weight), groups of 16 or 4 columns of one
row at 0.032 / 0.018, diagonal groups of 16 at 0.014–0.023 depending on the hash. What grouping
still costs is variance: a bucket holds on average λ = weights / k weights either way, but E[load²]
grows from λ² + λ to λ² + Gλ (about 15% more with G = 16 and the default model's λ ≈ 107 per
layer).

The hash is pinned (``HASH_VERSION``): changing it makes new stores incomparable with old ones;
stores record it and the reductions refuse stores of another version.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# 3: weights added in diagonal groups of GROUP_ROWS (2: a bucket per weight from (row code +
# column code) mod 2k); stores of another version are refused
HASH_VERSION = 3
GROUP_ROWS = 16
_MASK = 0xFFFFFFFF
ROW_SIGNS, COLUMN_SIGNS, STRIPS, GROUP_COLUMNS = 0, 1, 2, 3  # the hash streams of a matrix


def _mul32(x, c: int):
    """(x * c) mod 2**32 for 0 <= x < 2**32 without int64 overflow (same result on any device)."""
    lo, hi = c & 0xFFFF, c >> 16
    return ((x * lo) + (((x * hi) & 0xFFFF) << 16)) & _MASK


def coordinate_hash(start: int, count: int, layer: int, seed: int, device="cpu"):
    """32-bit hash (as int64) of positions ``start .. start+count-1`` of stream ``layer``."""
    import torch

    x = torch.arange(start, start + count, dtype=torch.int64, device=device)
    x = (x + ((layer + 1) * 0x9E3779B9 + seed * 0x85EBCA6B)) & _MASK
    # "lowbias32" integer mixer (Chris Wellons' hash-prospector)
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def axis_hash(n: int, layer: int, matrix: int, stream: int, seed: int, device="cpu"):
    """Hashes 0..n-1 of one stream (ROW_SIGNS, COLUMN_SIGNS, STRIPS or GROUP_COLUMNS) of matrix ``matrix`` of layer
    ``layer``: a separate stream of the mixer for every (layer, matrix, stream)."""
    return coordinate_hash(0, n, (layer * 256 + matrix) * 4 + stream, seed, device)


class Codes(NamedTuple):
    """The sketch's codes of one matrix (rows × cols): weight (r, c) adds row_sign[r]·col_sign[c]·|s|
    to bucket (strip[r // GROUP_ROWS] + group_col[c']) mod k, c' its group column (``group_columns``)."""

    row_sign: "torch.Tensor"  # (rows,) float32 ±1  # noqa: F821
    col_sign: "torch.Tensor"  # (cols,) float32 ±1  # noqa: F821
    strip: "torch.Tensor"  # (ceil(rows / G),) int32 in [0, k)  # noqa: F821
    group_col: "torch.Tensor"  # (G · ceil(cols / G),) int32 in [0, k)  # noqa: F821


def matrix_codes(rows: int, cols: int, layer: int, matrix: int, k: int, seed: int, device="cpu") -> Codes:
    """The codes of matrix ``matrix`` (rows × cols) of layer ``layer`` from the hash's definition:
    signs from the low bit of a hash (1 → −1), bucket codes from its high bits mod k."""
    import torch

    def sign(h):
        return (1 - 2 * (h & 1)).to(torch.float32)

    def code(h):
        return ((h >> 1) % k).to(torch.int32)

    g = GROUP_ROWS
    return Codes(sign(axis_hash(rows, layer, matrix, ROW_SIGNS, seed, device)),
                 sign(axis_hash(cols, layer, matrix, COLUMN_SIGNS, seed, device)),
                 code(axis_hash(-(-rows // g), layer, matrix, STRIPS, seed, device)),
                 code(axis_hash(g * -(-cols // g), layer, matrix, GROUP_COLUMNS, seed, device)))


def group_columns(rows, cols):
    """The group column c' of weights (rows, cols) (integer arrays or tensors, broadcast)."""
    g = GROUP_ROWS
    return (cols // g) * g + (cols % g - rows % g) % g


class LayerHasher:
    """The codes of every scored matrix of a model, made once per (layer, matrix, device) and kept
    (O(rows + cols) values per matrix)."""

    def __init__(self, shapes, k: int, seed: int):
        import torch

        if k < 1 or 2 * k > torch.iinfo(torch.int32).max:
            raise ValueError(f"sketch size {k} is out of range")
        self.shapes, self.k, self.seed = tuple(shapes), k, seed
        self._codes: dict = {}

    def codes(self, layer: int, j: int, device) -> Codes:
        key = (layer, j, str(device))
        if key not in self._codes:
            rows, cols = self.shapes[j]
            self._codes[key] = matrix_codes(rows, cols, layer, j, self.k, self.seed, device)
        return self._codes[key]


def group_sums(scores, codes: Codes):
    """The signed sum of each group: (batch, strips, group columns) from scores (batch, rows, cols)
    (rows and columns the matrix lacks count as zero)."""
    import torch

    g = GROUP_ROWS
    b, rows, cols = scores.shape
    signed = scores * (codes.row_sign[:, None] * codes.col_sign[None, :]).to(scores.dtype)
    strips, blocks = len(codes.strip), len(codes.group_col) // g
    signed = torch.nn.functional.pad(signed, (0, blocks * g - cols, 0, strips * g - rows))
    signed = signed.view(b, strips, g, blocks, g)  # (batch, strip, i = r mod G, block, c mod G)
    i = torch.arange(g, device=scores.device)
    # the weight of row i in group column j of a block sits at column (j + i) mod G of the block
    index = ((i[None, :] + i[:, None]) % g).view(1, 1, g, 1, g).expand(b, strips, g, blocks, g)
    return signed.gather(4, index).sum(2).reshape(b, strips, blocks * g)


def bucket_index(codes: Codes, k: int):
    """(strips, group columns) int64 bucket of each group."""
    return (codes.strip[:, None].long() + codes.group_col[None, :].long()) % k


def sketch_into(acc, scores, codes: Codes) -> None:
    """Add the scores of a batch, (batch, rows, cols) non-negative, into ``acc`` (batch, k)."""
    k = acc.shape[-1]
    flat = bucket_index(codes, k).reshape(-1)
    sums = group_sums(scores, codes)
    for b in range(scores.shape[0]):
        acc[b].index_add_(0, flat, sums[b].reshape(-1))


def llmdcos(sketches: np.ndarray, norms: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """LLMDcos estimated from the sketches of one layer: ``sketches`` (n, k), exact ``norms`` (n,).
    All pairs as an (n, n) matrix (one matrix product), or, given ``pairs`` = (first, second)
    index arrays, one value per pair. Not clipped: an estimate can fall slightly outside [0, 1]."""
    s = np.asarray(sketches, np.float64)
    norms = np.asarray(norms, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if pairs is None:
            return (s @ s.T) / np.outer(norms, norms)
        first, second = pairs
        return np.einsum("pk,pk->p", s[first], s[second]) / (norms[first] * norms[second])
