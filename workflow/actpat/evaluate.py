"""Perplexity on held-out text (the WikiText-2 protocol of Wanda/SparseGPT, on any text).

The windows are cut by ``actpat.samples.eval_windows`` (non-overlapping, of an explicit
``seq_len``). Every window predicts its tokens 2..seq_len from the ones before; perplexity is
exp(Σ NLL / Σ predicted tokens). Bootstrap intervals resample windows; the per-window NLL is kept so
that methods evaluated on the same windows can be compared pair by pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from actpat.errors import EvaluationError
from actpat.modeljob import JobRuntime, LoadedModel, ModelRef
from actpat.stats import perplexity


@torch.no_grad()
def window_nll(model, token_ids: np.ndarray, device: str = "cpu", progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summed next-token NLL (nats, float64) and predicted-token count of every window, and its greedy
    hits: ``hits[j, t]`` is whether the most likely token after window ``j``'s first ``t + 1`` tokens
    is the one that follows (last-word accuracy reads its items off them: ``actpat.accuracy``)."""
    nll = np.zeros(len(token_ids))
    count = np.zeros(len(token_ids), dtype=np.int64)
    hits = np.zeros((len(token_ids), max(token_ids.shape[1] - 1, 0)), dtype=bool)
    for j, row in enumerate(token_ids):
        ids = torch.as_tensor(np.asarray(row, dtype=np.int64), device=device).unsqueeze(0)
        logits = model(ids, use_cache=False).logits[0, :-1]
        loss = summed_nll(logits, ids[0, 1:])
        if not math.isfinite(loss):
            raise EvaluationError(f"window {j}: the loss is not finite ({loss}); the model's outputs overflow")
        nll[j] = loss
        count[j] = ids.shape[1] - 1
        # ties go to the lowest token id (torch's argmax), as in the harness's greedy check
        hits[j] = (logits.argmax(-1) == ids[0, 1:]).cpu().numpy()
        if progress:
            progress(j)
    return nll, count, hits


def summed_nll(logits: torch.Tensor, targets: torch.Tensor, rows: int = 32) -> float:
    """Σ of the next-token NLL of one window's positions: each position's in float32, the sum in
    float64. The logits are widened to float32 ``rows`` positions at a time: a whole window's
    logits widened at once (tens of MB with a large vocabulary) leave the cache and take several
    times as long."""
    return sum(F.cross_entropy(logits[a:a + rows].float(), targets[a:a + rows], reduction="sum").item()
               for a in range(0, len(targets), rows))


# Devices where evaluation runs transformers' eager attention instead of SDPA: on the CPU it is
# the faster for windows of a few hundred tokens (benchmarks/evaluation_dtype.py; perplexity differs
# by rounding only, the softmax in float32 in both). Each result records its attention kernel.
EAGER_ATTENTION = ("cpu",)


def attention_of(model) -> str:
    """The attention kernel a loaded model computes with (transformers' setting)."""
    return str(getattr(model.config, "_attn_implementation", None) or "unknown")


@dataclass(frozen=True)
class EvaluationFiles:
    """An evaluation job's files: the pruning run's mask store (None: the dense model), the
    evaluation windows (perplexity jobs only) and the result it writes; and what the job evaluates,
    which its inputs must have been made for: the run's key (None: the dense model) and the
    evaluation set."""

    mask: Path | None
    windows: Path | None
    out: Path
    run: str | None = None
    evalset: str | None = None


def evaluated_mask(files: EvaluationFiles, model: ModelRef) -> int | None:
    """The content id of the mask this job applies (None: the dense model), after checking that it
    was made for the run and model the job evaluates: a mask copied from another run is refused
    before the model is loaded."""
    from actpat.provenance import check_made_for
    from actpat.store import content_id, open_mask

    if (files.mask is None) != (files.run is None):
        raise EvaluationError(f"a pruning run is evaluated with both its mask and its key (given: mask {files.mask}, "
                              f"run {files.run})")
    if files.mask is None:
        return None
    check_made_for(files.mask, open_mask(files.mask).attrs, EvaluationError, run=files.run, model=model.name)
    return content_id(files.mask)


def start_evaluation(what: str, model: ModelRef, mask: Path | None, runtime: JobRuntime, dtype: str) -> tuple[LoadedModel, str | None]:
    """The model an evaluation job measures (``actpat.modeljob.start``), in ``dtype`` (``auto``:
    ``actpat.models.pick_dtype``) with eager attention on the devices in ``EAGER_ATTENTION``: the
    dense checkpoint, or it with a pruning run's mask applied (checked to be made for this
    checkpoint; zeroing a weight commutes with rounding it). Returns it and the run's key (None:
    dense)."""
    from actpat.masks import apply_mask
    from actpat.models import pick_dtype
    from actpat.modeljob import start
    from actpat.store import open_mask

    loaded = start(what, model, runtime, lambda device: pick_dtype(dtype, device, runtime.log))
    if loaded.device in EAGER_ATTENTION:
        loaded.model.set_attn_implementation("eager")
    if mask is None:
        return loaded, None
    masks = open_mask(mask)
    if masks.attrs["checkpoint_sha256"] != loaded.identity:
        raise EvaluationError(f"{mask}: made for another checkpoint than {model.dir}")
    share = apply_mask(loaded.model, loaded.layout, masks)
    runtime.log(f"applied {mask}: {100 * share:.2f}% of the scored weights pruned")
    return loaded, masks.attrs["run"]


def load_evaluated_model(model_dir: Path, mask: Path | None, device: str, dtype: str = "float32", log=print):
    """``start_evaluation`` outside a job (benchmarks, tests): (model, tokenizer, checkpoint
    provenance, run key or None)."""
    runtime = JobRuntime(device, torch.get_num_threads(), log=log)
    loaded, run = start_evaluation("evaluation", ModelRef.at(model_dir), mask, runtime, dtype)
    return loaded.model, loaded.tokenizer, loaded.checkpoint, run


def write_perplexity(job, model: ModelRef, files: EvaluationFiles, runtime: JobRuntime) -> None:
    """The perplexity job (``job``: ``actpat.settings.EvaluateJob``): one model (the dense
    checkpoint, or it with a pruning run's mask applied) on one evaluation set, with the NLL of
    every window, so that models evaluated on the same windows compare pair by pair; and, unless
    ``job.lastword`` is 0, last-word accuracy on items cut from the same windows
    (``actpat.accuracy``), with every item's result. Intervals are the report's."""
    import sys

    from tqdm import tqdm

    from actpat.provenance import check_made_for, code_version
    from actpat.results import write_json
    from actpat.store import open_samples, window_tokens

    log = runtime.log
    windows = open_samples(files.windows)
    check_made_for(files.windows, windows.attrs, EvaluationError, domain=files.evalset, purpose="evaluation")
    name = windows.attrs["domain"]
    mask_id = evaluated_mask(files, model)
    loaded, run = start_evaluation(f"perplexity on {name}", model, files.mask, runtime, job.dtype)
    tokens = window_tokens(windows)
    window_ids = windows["sample"].values.tolist()
    bar = tqdm(total=len(tokens), desc=f"perplexity {name}", unit="window", file=sys.stderr, mininterval=5, ascii=True)
    nll, count, hits = window_nll(loaded.model, tokens, loaded.device, progress=lambda j: bar.update(1))
    bar.close()
    ppl = perplexity(nll, count)
    log(f"{run or 'dense'} on {name}: perplexity {ppl:.3f} over {len(tokens)} windows of {tokens.shape[1]} tokens "
        f"({loaded.dtype}) in {loaded.seconds():.1f}s")
    accuracy = None
    if job.lastword:
        from actpat.accuracy import lastword_accuracy

        accuracy = lastword_accuracy(loaded.tokenizer, tokens, window_ids, hits, job.lastword, job.context_words)
        if accuracy["value"] is None:
            log(f"last-word accuracy undefined: {accuracy['undefined']}")
        else:
            log(f"{run or 'dense'} on {name}: last-word accuracy {accuracy['value']:.4f} ± {_se(accuracy['stderr'])} "
                f"over {accuracy['n_items']} items from {len(tokens)} windows")
        if accuracy["n_unaligned"]:
            log(f"{accuracy['n_unaligned']} last-word targets left out: their words do not begin and end at token boundaries")
    write_json({
        "model": model.name, "run": run or "dense", "mask_crc32c": mask_id, "set": name, "perplexity": ppl,
        "seq_len": int(tokens.shape[1]),
        "n_windows": int(len(tokens)), "tokens_predicted": int(count.sum()), "window_nll": nll, "window_tokens": count,
        "source": windows.attrs["source"], "held_out_only": windows.attrs.get("held_out_only"),
        "window_ids": window_ids, "accuracy": accuracy, "checkpoint_sha256": loaded.checkpoint["checkpoint_sha256"],
        "code_version": code_version(), "device": loaded.device, "dtype": loaded.dtype,
        "attention": attention_of(loaded.model), "threads": loaded.threads, "seconds": loaded.seconds(),
    }, files.out, "perplexity")


def _se(stderr: float | None) -> str:
    """A standard error for a log line ("n/a" where the harness gives none, e.g. for one item)."""
    return "n/a" if stderr is None else f"{stderr:.4f}"


def write_zero_shot(job, model: ModelRef, files: EvaluationFiles, runtime: JobRuntime) -> None:
    """The zero-shot job (``job``: ``actpat.settings.ZeroShotJob``): one model on the named
    lm-evaluation-harness tasks, each with its metric, standard error and every item's result."""
    from actpat.accuracy import harness_version, run_tasks
    from actpat.provenance import code_version
    from actpat.results import write_json

    mask_id = evaluated_mask(files, model)
    loaded, run = start_evaluation("zero-shot tasks", model, files.mask, runtime, job.dtype)
    results = run_tasks(loaded.model, loaded.tokenizer, list(job.tasks), job.batch_size, loaded.device, job.include_path,
                        job.limit)
    for task, r in results.items():
        runtime.log(f"{run or 'dense'} {task}: {r['metric']} {r['value']:.4f} ± {_se(r['stderr'])} ({r['n_items']} items)")
    write_json({
        "model": model.name, "run": run or "dense", "mask_crc32c": mask_id, "tasks": list(job.tasks), "limit": job.limit,
        "include_path": job.include_path,
        "harness": harness_version(), "results": results, "checkpoint_sha256": loaded.checkpoint["checkpoint_sha256"],
        "code_version": code_version(), "device": loaded.device, "dtype": loaded.dtype,
        "attention": attention_of(loaded.model), "threads": loaded.threads, "seconds": loaded.seconds(),
    }, files.out, "zero-shot")
