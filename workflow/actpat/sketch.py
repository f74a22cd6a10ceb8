"""A compact per-sample, per-layer summary of |s| from which LLMDcos can be estimated.

LLMDcos(a, b) = Σ|a_i b_i| / (‖a‖ ‖b‖) per layer. Keeping full per-sample score vectors is out of
the question for large models (13 GB per sample for a 7B model), so each sample keeps, per layer:

* the exact L2 norm ‖a‖ (in the per-sample statistics), and
* a CountSketch of |a|: ``k`` buckets, each weight i added with a sign σ(i) ∈ {±1} into bucket
  β(i). Since β and σ come from a fixed hash of the weight's position, the sketches of all samples
  (of any domain, any shard, any machine) are coordinated. Over a random choice of hash,
  ⟨sketch(a), sketch(b)⟩ is an unbiased estimate of ⟨|a|, |b|⟩ with variance below
  (⟨a,b⟩² + ‖a‖²‖b‖²)/k. The workflow uses one fixed hash (``sketch_seed``), so for a given pair the
  estimate has a fixed error; ``benchmarks/sketch_error.py`` measures its size and its mean signed
  value (the bias at that hash) on real scores.

Estimating all pairs is then one matrix product. Measured on the default model with k = 32768
(0.93% of a layer's 3.5M weights): |error| of LLMDcos below 0.02 for well over 99% of pairs
(``benchmarks/sketch_error.py``; the test suite checks it too). Estimates are not clipped to
[0, 1] (clipping would bias them near the bounds); plots clip for display only.

The hash is pinned (``HASH_VERSION``): changing it would make new stores incomparable with old
ones, and stores record it so that the reductions refuse stores of another version.

Bucket and sign of weight (r, c) of a matrix come from a hash of its row and a hash of its column
(a "tensor sketch" of the matrix: the index (a_r + a_c) mod 2k of per-row and per-column codes): a
GPU keeps O(rows + cols) values per matrix instead of a hash per weight, and no 4-byte-per-weight
cache. The estimator
stays unbiased over the choice of hash; its error at the workflow's fixed hash is measured on real
scores by ``benchmarks/sketch_error.py``.
"""

from __future__ import annotations

import numpy as np

# 2: bucket and sign of weight (r, c) of a matrix from a hash of its row and a hash of its column
# (O(rows + cols) per matrix, no per-weight hash or cache); stores of version 1 are refused
HASH_VERSION = 2
_MASK = 0xFFFFFFFF


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


def axis_hash(n: int, layer: int, matrix: int, axis: int, seed: int, device="cpu"):
    """Hashes of the n rows (axis 0) or columns (axis 1) of matrix ``matrix`` of layer ``layer``:
    a separate stream of the mixer for every (layer, matrix, axis)."""
    return coordinate_hash(0, n, (layer * 256 + matrix) * 2 + axis, seed, device)


def bucket_index(h, k: int):
    """Index into a 2k-vector: bucket (h >> 1) % k, shifted by k where the sign is negative."""
    import torch

    return (((h >> 1) % k) + k * (h & 1)).to(torch.int32)


def axis_codes(n: int, layer: int, matrix: int, axis: int, k: int, seed: int, device="cpu"):
    """Each row's (axis 0) or column's (axis 1) code in [0, 2k): its bucket (the high bits of its
    hash, mod k) plus k when its sign bit (the low bit) is set."""
    h = axis_hash(n, layer, matrix, axis, seed, device)
    return (h >> 1) % k + k * (h & 1)


class LayerHasher:
    """The sketch's bucket and sign of every weight of a layer's matrices, from per-row and
    per-column codes: weight (r, c) of matrix j has index (a_r + a_c) mod 2k in a 2k-vector whose
    first half holds the positive and second half the negative contributions; its bucket is that
    index mod k, and its sign the parity of the row's sign bit, the column's sign bit and the wrap
    past k. Only O(rows + cols) values are kept per matrix (int32, on the weights' device); the
    per-weight index is formed (4 bytes a weight) when a batch is sketched, shared by its samples."""

    def __init__(self, shapes, k: int, seed: int):
        import torch

        if (2 * k) * 2 > torch.iinfo(torch.int32).max:
            raise ValueError(f"sketch size {k} is too large")
        self.shapes, self.k, self.seed = tuple(shapes), k, seed
        self._codes: dict = {}

    def codes(self, layer: int, j: int, device):
        """The (rows,) and (cols,) int32 codes in [0, 2k) of matrix j of a layer."""
        import torch

        key = (layer, j, str(device))
        if key not in self._codes:
            rows, cols = self.shapes[j]
            self._codes[key] = tuple(axis_codes(n, layer, j, axis, self.k, self.seed, device).to(torch.int32)
                                     for axis, n in ((0, rows), (1, cols)))
        return self._codes[key]

    def index(self, layer: int, j: int, device):
        """(rows, cols) int32 index into the 2k-vector."""
        ar, ac = self.codes(layer, j, device)
        idx = ar[:, None] + ac[None, :]  # < 4k
        two_k = 2 * self.k
        if two_k & (two_k - 1) == 0:
            return idx.bitwise_and_(two_k - 1)
        return idx.remainder_(two_k)


def sketch_into(acc, scores, index) -> None:
    """Add the scores of a batch, (batch, rows, cols) non-negative, into ``acc`` (batch, 2k)."""
    flat = index.reshape(-1)
    for b in range(scores.shape[0]):
        acc[b].index_add_(0, flat, scores[b].reshape(-1))


def finish(acc):
    """The sketch (…, k) from its (…, 2k) accumulator: positive half minus negative half."""
    k = acc.shape[-1] // 2
    return acc[..., :k] - acc[..., k:]


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
