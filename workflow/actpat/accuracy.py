"""Zero-shot accuracy: last-word prediction read off the perplexity pass, and named tasks through
EleutherAI's lm-evaluation-harness on the in-memory (pruned) model.

* **last-word prediction** (LAMBADA-style), offline, on the held-out text of perplexity: items are
  cut from each evaluation window (``lastword_items``): a target word (letters only, not the
  window's first or last word, which may be cut) with at least ``context_words`` words before it in
  the window. An item is correct when greedy decoding reproduces the word, space included, after all
  of the window before it: every one of its tokens is the most likely next token given the ones
  before (LAMBADA's metric, the harness's ``acc`` of a ``loglikelihood`` task). The perplexity pass
  has computed every position's prediction already (``actpat.evaluate.window_nll`` keeps which
  positions the model predicts greedily), so the items cost no forward pass of their own.
* **harness tasks by name** (``boolq``, ``piqa``, ``hellaswag``, ``social_iqa``, ``arc_easy``,
  ``winogrande``, ``mmlu``, ...): they download their data sets, so they need a network, unless
  ``include_path`` holds task YAML files over local data (the harness's custom tasks).

Every item's correctness is kept (``item_correct``, with its window in ``item_windows``), so that two
models evaluated on the same items compare pair by pair; a standard error comes with every accuracy
(for last-word items, clustered by window: items of one window are not independent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from actpat.errors import AccuracyError
from actpat.stats import clustered_standard_error


# a target word: letters only, after a single space that follows a non-space (not after a line
# break or an indent, which the model would have to predict too), not followed by more of a word
TARGET_WORD = re.compile(r"(?<=\S )([^\W\d_]{2,})(?![\w'’-])")
WORD = re.compile(r"\S+")
# metrics reported, in order of preference, when a task has them
METRICS = ("acc", "acc_norm", "exact_match")


@dataclass(frozen=True)
class Item:
    id: str
    window: int  # the evaluation window it was cut from (the unit of the paired bootstrap)
    start: int  # the target's first character in the window's decoded text (the space before it is start - 1)
    target: str


def lastword_items(texts: list[str], window_ids: list[str], per_window: int, context_words: int) -> list[Item]:
    """Up to ``per_window`` last-word items from each window's decoded text, evenly spaced over
    the candidate target words that have at least ``context_words`` whole words before them."""
    if per_window < 1 or context_words < 1:
        raise AccuracyError("last-word items need per_window >= 1 and context_words >= 1")
    items: list[Item] = []
    for w, (text, wid) in enumerate(zip(texts, window_ids)):
        words = list(WORD.finditer(text))
        if len(words) < context_words + 3:
            continue
        # whole words only: not the first (it may start mid-token stream) nor the last (it may be cut)
        first_start, last_start = words[1].start(), words[-1].start()
        starts = [m.start() for m in words]
        candidates = []
        for m in TARGET_WORD.finditer(text, first_start, last_start):
            k = int(np.searchsorted(starts, m.start()))  # index of the word the target starts
            if k - context_words >= 1:
                candidates.append(m)
        if not candidates:
            continue
        picks = np.unique(np.linspace(0, len(candidates) - 1, min(per_window, len(candidates))).round().astype(int))
        items += [Item(f"{wid}#{candidates[p].start()}", w, candidates[p].start(), candidates[p].group(1)) for p in picks]
    return items


def token_cut(tokenizer, ids: list[int], text: str, at: int, decoded_prefixes: dict[int, str] | None = None) -> int | None:
    """How many of a window's tokens decode to exactly ``text[:at]`` (``text``: the whole window
    decoded), or ``None`` where no token boundary falls there (inside a token, or inside a character
    of several bytes). A binary search over the decoded prefixes' lengths, then an exact check of
    the prefixes next to it: a few dozen decodes, whatever the window's length. Cuts in the same
    window share the prefixes they decode through ``decoded_prefixes`` (number of tokens: text)."""
    memo = {} if decoded_prefixes is None else decoded_prefixes

    def decoded(i: int) -> str:
        if i not in memo:
            memo[i] = tokenizer.decode(ids[:i], skip_special_tokens=True)
        return memo[i]

    lo, hi = 0, len(ids)
    while lo < hi:  # the fewest tokens whose text reaches ``at`` characters
        mid = (lo + hi) // 2
        if len(decoded(mid)) < at:
            lo = mid + 1
        else:
            hi = mid
    # a prefix that ends inside a character decodes to a replacement character: lengths are not
    # strictly monotone there, so the neighbours are checked too (the first exact one: a special
    # token that decodes to nothing is not part of what follows)
    return next((i for i in range(max(lo - 2, 0), min(lo + 3, len(ids) + 1)) if decoded(i) == text[:at]), None)


def lastword_accuracy(tokenizer, token_ids: np.ndarray, window_ids: list[str], hits: np.ndarray, per_window: int,
                      context_words: int) -> dict:
    """Last-word accuracy on items cut from evaluation windows (token ids), read off ``hits``:
    ``hits[j, t]`` says whether the model's most likely token after window ``j``'s first ``t + 1``
    tokens is token ``t + 1`` (``actpat.evaluate.window_nll``). An item is correct when all of its
    tokens are hits: the target word with the space before it, as the harness continues a context
    that ends with whitespace. An item whose word does not begin and end at token boundaries (the
    space merged into the token before, say) cannot be read off and is left out, and counted."""
    if hits.shape != (len(token_ids), token_ids.shape[1] - 1):
        raise AccuracyError(f"greedy hits of shape {hits.shape} for windows of shape {token_ids.shape}")
    rows = [[int(t) for t in row] for row in token_ids]
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in rows]
    items = lastword_items(texts, window_ids, per_window, context_words)
    base = {"task": "lastword", "metric": "acc", "per_window": per_window, "context_words": context_words,
            "context": "the window before the target"}
    kept, correct, unaligned = [], [], 0
    prefixes: dict[int, dict[int, str]] = {}  # per window, its prefixes decoded so far
    for it in items:
        ids, text, memo = rows[it.window], texts[it.window], prefixes.setdefault(it.window, {})
        a = token_cut(tokenizer, ids, text, it.start - 1, memo)
        b = token_cut(tokenizer, ids, text, it.start + len(it.target), memo) if a is not None else None
        if a is None or b is None or not 1 <= a < b:
            unaligned += 1
            continue
        kept.append(it)
        correct.append(float(hits[it.window, a - 1:b - 1].all()))
    if not kept:
        why = ("no window has a target word with enough context" if not items else
               "no last-word target begins and ends at token boundaries")
        return {**base, "value": None, "stderr": None, "n_items": 0, "n_unaligned": unaligned, "item_ids": [],
                "item_windows": [], "item_correct": [], "undefined": why}
    n = len(correct)
    # items of one window share its text: a standard error clustered by window (the harness's
    # std/√n when each window has one item; None with items from a single window)
    stderr = clustered_standard_error(correct, [it.window for it in kept])
    return {**base, "value": float(np.mean(correct)), "stderr": stderr, "stderr_clusters": "window",
            "n_windows": len({it.window for it in kept}), "n_items": n, "n_unaligned": unaligned,
            "item_ids": [it.id for it in kept], "item_windows": [it.window for it in kept], "item_correct": correct}


def harness_version() -> str:
    from importlib.metadata import version

    return f"lm-eval {version('lm_eval')}"


def _metric(values: dict) -> tuple[str, str] | None:
    """The reported metric of a task's results, and the harness's key for it: the first of
    ``METRICS`` present, under the ``none`` filter if it has one, else under its first filter
    (e.g. gsm8k's ``exact_match,strict-match``)."""
    for metric in METRICS:
        keys = [k for k in values if k.startswith(f"{metric},") and "_stderr" not in k]
        if keys:
            return metric, f"{metric},none" if f"{metric},none" in keys else sorted(keys)[0]
    return None


def run_tasks(model, tokenizer, tasks: list, batch_size: int, device: str, include_path: str | None = None,
              limit: int | None = None, seed: int = 1234) -> dict[str, dict]:
    """Run harness tasks (names or config dicts) zero-shot on an in-memory Hugging Face model (a
    task's own few-shot setting is overridden: 0 examples; the few-shot sampler is seeded anyway).
    Returns, per task or group with a reported metric: the metric's name and value, the harness's
    standard error (None where the harness gives none, e.g. one item), the number of items, every
    item's id and score (leaf tasks), and for a group its subtasks. A requested task without a
    reported metric is an error."""
    import logging

    import torch
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:
        # indexing the harness's own task files takes seconds: only when a task is named
        named = any(isinstance(t, str) for t in tasks)
        manager = TaskManager(verbosity="ERROR", include_path=include_path, include_defaults=named)
        loaded = manager.load(tasks)
    except Exception as exc:  # the harness raises bare KeyError/ValueError for unknown tasks
        raise AccuracyError(f"lm-evaluation-harness cannot build the tasks {tasks}: {exc!r}") from exc
    for task in loaded["tasks"].values():
        task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=seed)
    try:
        # log-probabilities in float32 whatever the model computes in (in bfloat16 a continuation's
        # log-likelihood would be rounded to steps of 1/16 to 1/8 nat, and near-ties broken by order)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device, softmax_dtype=torch.float32)
        out = evaluate(lm=lm, task_dict=loaded, limit=limit, log_samples=True, bootstrap_iters=1000, verbosity="ERROR")
    except Exception as exc:
        raise AccuracyError(f"lm-evaluation-harness failed on the tasks {tasks}: {exc!r}") from exc
    groups = {str(getattr(g, "group_name", g)): [str(getattr(t, "group_name", t)) for t in subs]
              for g, subs in (out.get("group_subtasks") or {}).items() if subs}
    results: dict[str, dict] = {}
    for task, values in out["results"].items():
        found = _metric(values)
        if found is None:
            continue
        metric, key = found
        stderr = values.get(key.replace(",", "_stderr,", 1))
        samples = out.get("samples", {}).get(task, [])
        entry = {"metric": metric, "metric_key": key, "value": float(values[key]),
                 "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                 "n_items": int(out.get("n-samples", {}).get(task, {}).get("effective", len(samples))),
                 "n_shot": (out.get("n-shot") or {}).get(task, 0),
                 "item_ids": [str(s["doc"].get("id", s["doc_id"])) for s in samples],
                 "item_correct": [float(s[metric]) for s in samples]}
        if task in groups:
            entry.update(subtasks=groups[task], n_items=int(values.get("sample_len") or 0))
        results[task] = entry
    for task, entry in results.items():
        if "subtasks" in entry and not entry["n_items"]:
            entry["n_items"] = sum(results[t]["n_items"] for t in entry["subtasks"] if t in results)
    missing = [t if isinstance(t, str) else t.get("task") for t in tasks]
    missing = [t for t in missing if t not in results]
    if missing:
        raise AccuracyError(f"lm-evaluation-harness reported no accuracy-like metric ({', '.join(METRICS)}) for {missing}")
    return results
