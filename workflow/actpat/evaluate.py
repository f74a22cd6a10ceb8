"""Perplexity on held-out text (the WikiText-2 protocol of Wanda/SparseGPT, on any text).

The windows are cut by ``actpat.samples.eval_windows`` (non-overlapping, of an explicit
``seq_len``). Every window predicts its tokens 2..seq_len from the ones before; perplexity is
exp(Σ NLL / Σ predicted tokens). Bootstrap intervals resample windows; the per-window NLL is kept so
that methods evaluated on the same windows can be compared pair by pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from actpat.errors import ActpatError
from actpat.stats import interval, resample


class EvaluationError(ActpatError):
    """Not enough evaluation text, or windows that do not fit the model."""


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


def bootstrap_perplexity(nll: np.ndarray, count: np.ndarray, n_boot: int, seed: int) -> list[float]:
    idx = resample(len(nll), n_boot, np.random.default_rng(seed))
    return interval(np.exp(nll[idx].sum(1) / count[idx].sum(1)))


def write_perplexity(job, model_dir: Path, window_stores: list[Path], out: Path, device: str, threads: int,
                     log=print) -> None:
    """The perplexity job (``job``: ``actpat.settings.BootstrapJob``): a checkpoint's perplexity on
    each evaluation set (named by its windows store), with the per-window NLL."""
    import sys
    import time

    from tqdm import tqdm

    from actpat.models import load_checkpoint, pick_device
    from actpat.provenance import code_version
    from actpat.store import open_samples, write_json

    torch.set_num_threads(threads)
    device = pick_device(device)
    t0 = time.time()
    model, _, checkpoint = load_checkpoint(model_dir, "float32", device)
    out_json = {"model_dir": str(model_dir), "pruning": checkpoint.get("pruning"), "code_version": code_version(),
                "device": device, "sets": {}}
    for path in window_stores:
        windows = open_samples(path)
        name = windows.attrs["domain"]
        tokens = windows["token_ids"].values
        bar = tqdm(total=len(tokens), desc=f"perplexity {name}", unit="window", file=sys.stderr, mininterval=5, ascii=True)
        nll, count = window_nll(model, tokens, device, progress=lambda j: bar.update(1))
        bar.close()
        ppl = perplexity(nll, count)
        ci = bootstrap_perplexity(nll, count, job.bootstrap, job.seed)
        out_json["sets"][name] = {
            "perplexity": ppl, "ci95": ci, "seq_len": int(tokens.shape[1]), "n_windows": int(len(tokens)),
            "tokens_predicted": int(count.sum()), "window_nll": nll, "window_tokens": count,
            "source": windows.attrs["source"], "held_out_only": windows.attrs.get("held_out_only"),
            "window_ids": windows["sample"].values.tolist()}
        log(f"{name}: perplexity {ppl:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] over {len(tokens)} windows of {tokens.shape[1]} tokens")
    out_json["seconds"] = time.time() - t0
    write_json(out_json, out)
