"""Pruning masks (True = pruned): which entries of a score matrix are the smallest, per row, per
matrix or per N:M block, and how a mask store (a pruned model) is applied to the dense checkpoint.

Masks are found by selection, not by sorting, with ties broken towards the lower index, so that
they equal the first k of a stable ascending sort (tested against one).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from actpat.decoder import WeightLayout, layer_weights
from actpat.errors import PruningError


def nm_mask(metric: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Prune the ``n`` smallest of every ``m`` consecutive entries of each row."""
    rows, cols = metric.shape
    if cols % m:
        raise PruningError(f"N:M pruning needs the input width {cols} to be a multiple of M = {m}")
    blocks = metric.reshape(rows, cols // m, m)
    idx = torch.topk(blocks, n, dim=-1, largest=False).indices
    mask = torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(rows, cols)


def row_mask(metric: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune the ``round(cols · ratio)`` smallest entries of each row (Wanda's comparison group;
    rounding rather than Wanda's floor, so layer-wise targets are not biased towards less pruning).
    Ties at the cut go to the lower column, as a stable sort would take them."""
    return _smallest(metric, round(metric.shape[1] * ratio))


def matrix_mask(metric: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune the ``round(numel · ratio)`` smallest entries of the whole matrix (ties at the cut:
    the first in row-major order)."""
    return _smallest(metric.reshape(1, -1), round(metric.numel() * ratio)).reshape(metric.shape)


def _smallest(metric: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` smallest entries of each row, ties broken towards the lower index: the first ``k``
    of a stable ascending sort, found by selection (the k-th value, then the ties up to it) in
    linear time rather than by sorting. NaN counts as the largest value, as in a sort."""
    rows, cols = metric.shape
    mask = torch.zeros_like(metric, dtype=torch.bool)
    if k <= 0:
        return mask
    if k >= cols:
        return mask.fill_(True)
    if torch.isnan(metric).any():  # selection's order of NaN is undefined: sort such rare matrices
        mask.scatter_(1, torch.sort(metric, dim=1, stable=True).indices[:, :k], True)
        return mask
    cut = torch.kthvalue(metric, k, dim=1, keepdim=True).values
    torch.lt(metric, cut, out=mask)
    ties = metric == cut
    room = k - mask.sum(1, keepdim=True)  # how many of the tied entries each row still takes
    return mask.logical_or_(ties & (ties.cumsum(1) <= room))


def expected_share(shape: tuple[int, int], ratio: float, nm: tuple[int, int] | None, per_row: bool,
                   block: int | None = None) -> float:
    """Share of a matrix's weights a mask of this kind zeroes (integer rounding included): chosen
    per row (``per_row``), per block of ``block`` columns over all rows, or over the whole matrix."""
    rows, cols = shape
    if nm:
        return nm[0] / nm[1]
    if per_row:
        return round(cols * ratio) / cols
    if block:
        widths = [min(block, cols - c) for c in range(0, cols, block)]
        return sum(round(rows * w * ratio) for w in widths) / (rows * cols)
    return round(rows * cols * ratio) / (rows * cols)


def zero_where(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """``weight[mask] = 0`` in place, exactly (+0.0, also over a NaN or an infinity): the weight's
    bits ANDed with 0 where ``mask`` holds and with all ones elsewhere. On the CPU boolean indexing
    writes scattered elements one by one; this is one streaming pass (``benchmarks/load_cost.py``)."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}.get(weight.element_size())
    if ints is None or weight.is_complex() or not weight.is_contiguous() or mask.shape != weight.shape:
        weight.masked_fill_(mask, 0)
        return
    weight.view(ints).bitwise_and_(mask.to(ints).sub_(1))  # True -> 0, False -> -1 (all bits set)


def apply_mask(model: nn.Module, layout: WeightLayout, mask) -> float:
    """Make ``model`` the pruned model of a mask store (``actpat.store.open_mask``): zero its
    pruned weights and, for methods that change the kept ones, set those to the values stored (in
    the checkpoint's dtype: bit for bit in a model of that dtype). Returns the pruned share of the
    scored weights, checked against the store's own record."""
    from actpat.store import kept_values

    if list(mask.attrs["matrices"]) != list(layout.matrices) or [list(s) for s in layout.shapes] != mask.attrs["shapes"] \
            or mask.attrs["n_layers"] != layout.n_layers:
        raise PruningError("the mask was made for other weight matrices than this model's")
    kept = mask.attrs.get("kept_weights")
    if mask.attrs.get("changed_weights") and not kept:
        raise PruningError("the mask store holds every scored weight in float32, as actpat wrote it before storing only "
                           "the kept weights in the checkpoint's dtype; delete its run directory to prune it again")
    weights = layer_weights(model, layout)
    pruned = 0
    with torch.no_grad():
        for j, (name, (rows, cols)) in enumerate(zip(layout.matrices, layout.shapes)):
            bits = mask[name].values
            for i in range(layout.n_layers):
                w = weights[i][j]
                unpacked = np.unpackbits(bits[i], axis=1, count=cols, bitorder="little").view(bool)
                n_pruned = int(np.count_nonzero(unpacked))  # numpy counts bools in one pass; torch widens them first
                m = torch.from_numpy(unpacked).to(w.device)
                if kept:
                    values = kept_values(mask, name, i)
                    if values.numel() != m.numel() - n_pruned:
                        raise PruningError(f"the mask store holds {values.numel()} kept weights of layer {i}'s {name}, "
                                           f"its mask keeps {m.numel() - n_pruned}")
                    w.masked_scatter_(~m, values.to(device=w.device, dtype=w.dtype))
                zero_where(w, m)
                pruned += n_pruned
    share = pruned / (layout.weights_per_layer * layout.n_layers)
    if abs(share - mask.attrs["overall_sparsity"]) > 1e-9:
        raise PruningError(f"the mask prunes {share:.6f} of the weights, its record says {mask.attrs['overall_sparsity']:.6f}")
    return share
