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
ones, and stores record it so that the reductions can refuse to mix versions.
"""

from __future__ import annotations

import numpy as np
import torch

from actpat.models import WeightLayout

HASH_VERSION = 1
_MASK = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32 without int64 overflow (same result on any device)."""
    lo, hi = c & 0xFFFF, c >> 16
    return ((x * lo) + (((x * hi) & 0xFFFF) << 16)) & _MASK


def coordinate_hash(start: int, count: int, layer: int, seed: int, device="cpu") -> torch.Tensor:
    """32-bit hash (as int64) of flat positions ``start .. start+count-1`` of a layer's vector."""
    x = torch.arange(start, start + count, dtype=torch.int64, device=device)
    x = (x + ((layer + 1) * 0x9E3779B9 + seed * 0x85EBCA6B)) & _MASK
    # "lowbias32" integer mixer (Chris Wellons' hash-prospector)
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def bucket_index(h: torch.Tensor, k: int) -> torch.Tensor:
    """Index into a 2k-vector: bucket (h >> 1) % k, shifted by k where the sign is negative."""
    return (((h >> 1) % k) + k * (h & 1)).to(torch.int32)


class LayerHasher:
    """Bucket indices of every scored weight, per layer and matrix, cached on the device
    (4 bytes per weight) unless ``cache`` is False (then recomputed for each sample)."""

    def __init__(self, layout: WeightLayout, k: int, seed: int, device, cache: bool = True):
        self.layout, self.k, self.seed, self.device, self.cache = layout, k, seed, device, cache
        self._cached: dict[int, list[torch.Tensor]] = {}

    def layer(self, i: int) -> list[torch.Tensor]:
        if i in self._cached:
            return self._cached[i]
        out = []
        for offset, (r, c) in zip(self.layout.offsets, self.layout.shapes):
            out.append(bucket_index(coordinate_hash(offset, r * c, i, self.seed, self.device), self.k))
        if self.cache:
            self._cached[i] = out
        return out


def sketch_scores(scores: list[torch.Tensor], indices: list[torch.Tensor], k: int) -> torch.Tensor:
    """CountSketch (float32, length k) of a layer's non-negative scores, given per matrix."""
    acc = torch.zeros(2 * k, dtype=torch.float32, device=scores[0].device)
    for s, idx in zip(scores, indices):
        acc.index_add_(0, idx, s.reshape(-1))
    return acc[:k] - acc[k:]


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
