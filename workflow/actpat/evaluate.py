"""Perplexity on held-out text (the WikiText-2 protocol of Wanda/SparseGPT, on any text).

The evaluation texts are tokenized and joined with blank lines into one stream (after the
tokenizer's own leading special tokens, e.g. Llama's BOS, once), and cut into non-overlapping windows of an explicit
``seq_len``. Every window predicts its tokens 2..seq_len from the ones before; perplexity is
exp(Σ NLL / Σ predicted tokens). With more windows than ``max_windows``, evenly spaced windows are
kept, so the text is covered end to end. Bootstrap intervals resample windows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from actpat.errors import ActpatError
from actpat.samples import SampleSet, prefix_tokens
from actpat.sources import Document


class EvaluationError(ActpatError):
    """Not enough evaluation text, or windows that do not fit the model."""


def eval_windows(name: str, docs: list[Document], tokenizer, seq_len: int, max_windows: int, log=print) -> SampleSet:
    if not docs:
        raise EvaluationError(f"evaluation set {name}: no documents")
    prefix = prefix_tokens(tokenizer)
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    encoded = tokenizer([d.text for d in docs], add_special_tokens=False)["input_ids"]
    stream, starts = list(prefix), []
    for k, doc_ids in enumerate(encoded):
        starts.append(len(stream))
        stream.extend(doc_ids if k == len(encoded) - 1 else doc_ids + sep)
    ids = np.asarray(stream, dtype=np.int64)
    n_avail = len(ids) // seq_len
    if n_avail < 1:
        raise EvaluationError(
            f"evaluation set {name}: {len(ids)} tokens of held-out text, fewer than one window of {seq_len}; "
            "lower pruning.evaluation.seq_len or raise samples.holdout_fraction"
        )
    keep = np.unique(np.linspace(0, n_avail - 1, min(max_windows, n_avail)).round().astype(int))
    tokens = np.stack([ids[k * seq_len : (k + 1) * seq_len] for k in keep]).astype(np.int32)
    # the document each window starts in, for provenance
    doc_of = [docs[max(0, int(np.searchsorted(starts, k * seq_len, side="right")) - 1)].id for k in keep]
    log(f"evaluation set {name}: {len(docs)} documents, {len(ids)} tokens, {n_avail} windows of {seq_len}, {len(keep)} kept")
    return SampleSet(
        domain=name,
        token_ids=tokens,
        doc_ids=doc_of,
        offsets=[int(k * seq_len) for k in keep],
        stats={"n_documents": len(docs), "n_tokens": int(len(ids)), "n_windows_available": int(n_avail)},
    )


@torch.no_grad()
def window_nll(model, token_ids: np.ndarray, device: str = "cpu", progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token NLL (nats, float64) and predicted-token count of every window."""
    nll = np.zeros(len(token_ids))
    count = np.zeros(len(token_ids), dtype=np.int64)
    for j, row in enumerate(token_ids):
        ids = torch.as_tensor(np.asarray(row, dtype=np.int64), device=device).unsqueeze(0)
        logits = model(ids, use_cache=False).logits[0, :-1].float()
        loss = F.cross_entropy(logits, ids[0, 1:], reduction="sum")
        if not torch.isfinite(loss):
            raise EvaluationError(f"window {j}: the loss is not finite ({loss.item()}); the model's outputs overflow")
        nll[j] = loss.item()
        count[j] = ids.shape[1] - 1
        if progress:
            progress(j)
    return nll, count


def perplexity(nll: np.ndarray, count: np.ndarray) -> float:
    return float(np.exp(nll.sum() / count.sum()))


def bootstrap_perplexity(nll: np.ndarray, count: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> list[float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(nll), size=(n_boot, len(nll)))
    values = np.exp(nll[idx].sum(1) / count[idx].sum(1))
    a = (1 - level) / 2
    return [float(np.quantile(values, a)), float(np.quantile(values, 1 - a))]
