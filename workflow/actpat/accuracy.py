"""Zero-shot accuracy through EleutherAI's lm-evaluation-harness, on the in-memory (pruned) model.

Two kinds of task:

* **last-word prediction** (LAMBADA-style), offline, from the same held-out text as perplexity:
  items are cut from each evaluation window (``lastword_items``): a target word (letters only, not
  the window's first or last word, which may be cut) with the ``context_words`` words before it. An
  item is correct when greedy decoding reproduces the word (the harness's ``acc`` of a
  ``loglikelihood`` task, i.e. LAMBADA's metric). The task is defined through the harness's own
  custom-task mechanism: a task config over a local JSON-lines file (``lastword_task``).
* **harness tasks by name** (``boolq``, ``piqa``, ``hellaswag``, ``social_iqa``, ``arc_easy``,
  ``winogrande``, ``mmlu``, ...): they download their data sets, so they need a network, unless
  ``include_path`` holds task YAML files over local data (the harness's custom tasks).

Every item's correctness is kept (``item_correct``), so that two models evaluated on the same items
compare pair by pair; the harness's standard error comes with every accuracy.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actpat.errors import ActpatError


class AccuracyError(ActpatError):
    """A task that cannot be built or run."""


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
    context: str  # ends with the whitespace before the target
    target: str


def lastword_items(texts: list[str], window_ids: list[str], per_window: int, context_words: int) -> list[Item]:
    """Up to ``per_window`` last-word items from each window's decoded text, evenly spaced over
    the candidate target words that have ``context_words`` whole words before them."""
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
                candidates.append((m, k))
        if not candidates:
            continue
        picks = np.unique(np.linspace(0, len(candidates) - 1, min(per_window, len(candidates))).round().astype(int))
        for p in picks:
            m, k = candidates[p]
            context = text[starts[k - context_words]:m.start()]
            items.append(Item(f"{wid}#{m.start()}", w, context, m.group(1)))
    return items


def lastword_task(name: str, items_file: Path, cache_dir: Path) -> dict:
    """The harness task config of a last-word item file (JSON lines of ``Item``); ``datasets``
    caches it under ``cache_dir`` (a job's temporary directory, not the user's cache)."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(items_file)}, "cache_dir": str(cache_dir)},
        "test_split": "test",
        "output_type": "loglikelihood",
        "doc_to_text": "context",
        "doc_to_target": "target",
        "target_delimiter": "",  # the context ends with the text's own whitespace
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


def write_items(items: list[Item], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps({"id": it.id, "window": it.window, "context": it.context, "target": it.target}) + "\n")


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


def lastword_accuracy(model, tokenizer, token_ids: np.ndarray, window_ids: list[str], per_window: int,
                      context_words: int, batch_size: int, device: str) -> dict:
    """Last-word accuracy of ``model`` on items cut from evaluation windows (token ids)."""
    texts = [tokenizer.decode([int(t) for t in row], skip_special_tokens=True) for row in token_ids]
    items = lastword_items(texts, window_ids, per_window, context_words)
    base = {"task": "lastword", "harness": harness_version(), "per_window": per_window, "context_words": context_words}
    if not items:
        return {**base, "metric": "acc", "value": None, "stderr": None, "n_items": 0, "item_ids": [],
                "item_windows": [], "item_correct": [], "undefined": "no window has a target word with enough context"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lastword.jsonl"
        write_items(items, path)
        result = run_tasks(model, tokenizer, [lastword_task("actpat_lastword", path, Path(tmp) / "cache")], batch_size, device)
    result = result["actpat_lastword"]
    # the harness returns items in its own order: put them back in ours
    order = {it.id: i for i, it in enumerate(items)}
    rank = sorted(range(len(result["item_ids"])), key=lambda i: order[result["item_ids"][i]])
    for key in ("item_ids", "item_correct"):
        result[key] = [result[key][i] for i in rank]
    if result["item_ids"] != [it.id for it in items]:
        raise AccuracyError("the harness did not score every last-word item exactly once")
    result["item_windows"] = [it.window for it in items]  # ours, not read back from the harness
    return {**base, **result}
