"""An independent reference for the score, written without actpat: plain autograd on a copy of
the model with every parameter requiring grad and full logits."""

from __future__ import annotations

import copy

import torch


def reference_scores(model, input_ids: torch.Tensor, target: str = "max_logit") -> dict[str, torch.Tensor]:
    """{parameter name: |w * dD/dw|} for every 2-D parameter inside the decoder layers."""
    ref = copy.deepcopy(model)
    if ref.dtype != torch.float32:
        ref = ref.float()
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
        out[n] = (g * params[n].detach()).abs()
    return out


def llmdcos_exact(a, b) -> float:
    """The paper's LLMDcos of two score vectors: Σ|a·b| / (‖a‖ ‖b‖), in float64."""
    import numpy as np

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.abs(a * b).sum() / denom) if denom > 0 else float("nan")


def sketch_dense(vector, layer: int, k: int, seed: int):
    """The CountSketch of a whole layer vector at once, written from the hash definition (a
    reference for the per-matrix path of the scorer)."""
    import numpy as np

    from actpat.sketch import bucket_index, coordinate_hash

    idx = bucket_index(coordinate_hash(0, vector.size, layer, seed), k).long().numpy()
    out = np.bincount(idx, weights=np.abs(vector).astype(np.float64), minlength=2 * k)
    return (out[:k] - out[k:]).astype(np.float32)
