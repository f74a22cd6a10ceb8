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


# a target word: letters only, after whitespace, not followed by more of a word
TARGET_WORD = re.compile(r"(?<=\s)([^\W\d_]{2,})(?![\w'’-])")
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


def lastword_task(name: str, items_file: Path) -> dict:
    """The harness task config of a last-word item file (JSON lines of ``Item``)."""
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(items_file)}},
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


def run_tasks(model, tokenizer, tasks: list, batch_size: int, device: str, include_path: str | None = None,
              limit: int | None = None) -> dict[str, dict]:
    """Run harness tasks (names or config dicts) on an in-memory Hugging Face model. Returns, per
    task with a reported metric: the metric's name and value, the harness's standard error, the
    number of items, and every item's id and score (for paired comparisons)."""
    import logging

    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:
        # indexing the harness's own task files takes seconds: only when a task is named
        named = any(isinstance(t, str) for t in tasks)
        manager = TaskManager(verbosity="ERROR", include_path=include_path, include_defaults=named)
        task_dict = get_task_dict(tasks, manager)
    except Exception as exc:  # the harness raises bare KeyError/ValueError for unknown tasks
        raise AccuracyError(f"lm-evaluation-harness cannot build the tasks {tasks}: {exc!r}") from exc
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    out = evaluate(lm=lm, task_dict=task_dict, limit=limit, log_samples=True, bootstrap_iters=1000, verbosity="ERROR")
    results: dict[str, dict] = {}
    for task, values in out["results"].items():
        metric = next((m for m in METRICS if f"{m},none" in values), None)
        if metric is None:
            continue
        samples = out.get("samples", {}).get(task, [])
        stderr = values.get(f"{metric}_stderr,none")
        results[task] = {
            "metric": metric, "value": float(values[f"{metric},none"]),
            "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
            "n_items": int(out.get("n-samples", {}).get(task, {}).get("effective", len(samples))),
            "item_ids": [str(s["doc"].get("id", s["doc_id"])) for s in samples],
            "item_windows": [s["doc"].get("window") for s in samples],
            "item_correct": [float(s[metric]) for s in samples],
        }
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
        result = run_tasks(model, tokenizer, [lastword_task("actpat_lastword", path)], batch_size, device)
    result = result["actpat_lastword"]
    # the harness returns items in its own order: put them back in ours
    order = {it.id: i for i, it in enumerate(items)}
    rank = sorted(range(len(result["item_ids"])), key=lambda i: order[result["item_ids"][i]])
    for key in ("item_ids", "item_windows", "item_correct"):
        result[key] = [result[key][i] for i in rank]
    if result["item_ids"] != [it.id for it in items]:
        raise AccuracyError("the harness did not score every last-word item exactly once")
    return {**base, **result}
