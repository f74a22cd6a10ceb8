"""An independent reference for the score, written without actpat: plain autograd on a copy of
the model with every parameter requiring grad and full logits."""

from __future__ import annotations

import copy

import torch


def reference_scores(model, input_ids: torch.Tensor, target: str = "max_logit", upcast: bool = True) -> dict[str, torch.Tensor]:
    """{parameter name: |w * dD/dw|} for every 2-D parameter inside the decoder layers (in the
    model's dtype when ``upcast`` is False, else in float32)."""
    ref = copy.deepcopy(model)
    if upcast and ref.dtype != torch.float32:
        ref = ref.float()
    for p in ref.parameters():
        p.requires_grad_(True)
    params = dict(ref.named_parameters())
    names = [n for n, p in params.items() if p.ndim == 2 and ".layers." in n]
    logits = ref(input_ids=input_ids).logits[0]
    if target == "max_logit":
        d = logits[-1].max()
    else:
        logp = torch.log_softmax(logits[:-1], dim=-1)
        d = logp[torch.arange(input_ids.shape[1] - 1), input_ids[0, 1:]].mean()
    grads = torch.autograd.grad(d, [params[n] for n in names], allow_unused=True)
    out = {}
    for n, g in zip(names, grads):
        g = torch.zeros_like(params[n]) if g is None else g
        out[n] = (g.float() * params[n].detach().float()).abs()
    return out


def llmdcos_exact(a, b) -> float:
    """The paper's LLMDcos of two score vectors: Σ|a·b| / (‖a‖ ‖b‖), in float64."""
    import numpy as np

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.abs(a * b).sum() / denom) if denom > 0 else float("nan")


def sketch_dense(vector, layer: int, k: int, seed: int, shapes=None):
    """The CountSketch of a whole layer vector (the layer's matrices flattened and concatenated in
    ``shapes`` order; one 1 x n matrix by default), written weight by weight from the hash's
    definition (version 3), G the group size: in matrix j, weight (r, c) belongs to the group of
    strip r // G and column c' = G (c // G) + ((c mod G) - (r mod G)) mod G; it adds s_r t_c |value|
    to bucket (u + v) mod k, where s_r, t_c are the signs of the low bits of hashes h_rows(r),
    h_cols(c) (a set bit: -1), u = (h_strips(r // G) >> 1) mod k and v = (h_groupcols(c') >> 1) mod k."""
    import numpy as np

    from actpat.sketch import GROUP_ROWS as G, axis_hash

    vector = np.abs(np.asarray(vector, dtype=np.float64)).ravel()
    shapes = shapes or [(1, vector.size)]
    out = np.zeros(k)
    pos = 0
    for j, (rows, cols) in enumerate(shapes):
        h_rows = axis_hash(rows, layer, j, 0, seed).numpy()
        h_cols = axis_hash(cols, layer, j, 1, seed).numpy()
        h_strips = axis_hash(-(-rows // G), layer, j, 2, seed).numpy()
        h_groupcols = axis_hash(G * -(-cols // G), layer, j, 3, seed).numpy()
        for r in range(rows):
            c = np.arange(cols)
            group_col = G * (c // G) + (c % G - r % G) % G
            bucket = ((h_strips[r // G] >> 1) % k + (h_groupcols[group_col] >> 1) % k) % k
            sign = (-1.0 if h_rows[r] & 1 else 1.0) * np.where(h_cols & 1, -1.0, 1.0)
            out += np.bincount(bucket, weights=sign * vector[pos + r * cols : pos + (r + 1) * cols], minlength=k)
        pos += rows * cols
    return out.astype(np.float32)


def sparsegpt_reference(weight, x, ratio: float, block: int, damp: float = 0.01, nm=None):
    """SparseGPT written from its paper's sequential form (optimal brain surgeon, one column at a
    time): the inverse Hessian of the columns not yet processed is inverted directly
    (``inv(H[i:, i:])``, no Cholesky factor), and each pruned weight's error is applied to all
    remaining columns at once (no lazy block updates). Masks: per block of ``block`` columns the
    round(ratio · size) smallest w²/[H_i⁻¹]_00 taken at the block's start; N:M: per group of M
    columns of a row, the N smallest, taken when the group is reached. Returns (weights, mask)."""
    w = weight.double().clone()
    h = x.double().T @ x.double()
    rows, cols = w.shape
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h = h + damp * torch.diagonal(h).mean() * torch.eye(cols, dtype=torch.float64)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    inv = [torch.linalg.inv(h[i:, i:]) for i in range(cols)]

    def saliency(j):
        return w[:, j] ** 2 / inv[j][0, 0]

    for i in range(cols):
        if nm is None and i % block == 0:
            end = min(i + block, cols)
            metric = torch.stack([saliency(j) for j in range(i, end)], dim=1)
            k = round(metric.numel() * ratio)
            chosen = torch.zeros(metric.numel(), dtype=torch.bool)
            chosen[torch.sort(metric.flatten(), stable=True).indices[:k]] = True
            mask[:, i:end] = chosen.reshape(metric.shape)
        if nm is not None and i % nm[1] == 0:
            metric = torch.stack([saliency(j) for j in range(i, i + nm[1])], dim=1)
            idx = torch.topk(metric, nm[0], dim=1, largest=False).indices
            group = torch.zeros_like(metric, dtype=torch.bool).scatter_(1, idx, True)
            mask[:, i:i + nm[1]] = group
        err = torch.where(mask[:, i], w[:, i], torch.zeros_like(w[:, i]))  # w − q
        w[:, i:] -= err[:, None] * inv[i][0][None, :] / inv[i][0, 0]
        w[:, i] = torch.where(mask[:, i], torch.zeros_like(w[:, i]), w[:, i])
    return w, mask
