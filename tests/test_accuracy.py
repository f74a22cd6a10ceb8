"""Zero-shot accuracy: last-word items read off the perplexity pass against lm-evaluation-harness
and an independent greedy check, named custom tasks on local files, paired differences."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from actpat.errors import AccuracyError
from actpat.accuracy import lastword_accuracy, lastword_items, run_tasks, token_cut
from test_stats import sandwich_se

TEXT = ("half-word the quick brown fox jumps over the lazy dog and then the fox sleeps under a tree while "
        "the dog barks at 3 cats, which run away quickly. End")


def test_lastword_items_are_whole_words_with_their_context():
    items = lastword_items([TEXT, "too short"], ["w0", "w1"], per_window=3, context_words=5)
    assert 1 <= len(items) <= 3 and all(it.window == 0 for it in items)
    words = TEXT.split()
    for it in items:
        # the item is the text itself, after a single space; at least 5 whole words (not the cut first one) before it
        assert TEXT[it.start:it.start + len(it.target)] == it.target and TEXT[it.start - 1] == " "
        assert re.fullmatch(r"[A-Za-z]{2,}", it.target)
        assert len(TEXT[:it.start].split()) - 1 >= 5
        # never the first word (it may be cut) nor the last one
        assert it.start > TEXT.index(words[1]) and it.start < TEXT.rindex(words[-1])
    assert len({it.id for it in items}) == len(items)
    # "3" and "cats," are not targets as such: digits never, and a word is taken without its comma
    assert all(it.target not in {"3"} for it in items)
    many = lastword_items([TEXT], ["w0"], per_window=100, context_words=2)
    assert "cats" in {it.target for it in many} and "half" not in {it.target for it in many}
    assert "End" not in {it.target for it in many}
    with pytest.raises(AccuracyError):
        lastword_items([TEXT], ["w0"], per_window=0, context_words=2)


def test_token_cuts_are_exact_prefixes(smol_tokenizer):
    """Every cut found decodes to exactly the start of the window's text, including around
    characters of several bytes that byte-level tokens split (never a cut inside one), and every
    word after a space starts at one."""
    text = "Le café naïve — 東京 was where the ÆSIR sailed, 🙂 twice: a Ñandú ran, 🙂🙂 then stopped."
    ids = smol_tokenizer(text)["input_ids"]
    assert smol_tokenizer.decode(ids) == text
    cuts = {at: token_cut(smol_tokenizer, ids, text, at) for at in range(len(text) + 1)}
    for at, i in cuts.items():
        assert i is None or smol_tokenizer.decode(ids[:i]) == text[:at]
    by_prefix = {len(smol_tokenizer.decode(ids[:i])): i for i in range(len(ids) + 1)
                 if text.startswith(smol_tokenizer.decode(ids[:i]))}
    assert {at: i for at, i in cuts.items() if i is not None} == by_prefix  # all of them, by brute force
    # some token ends inside a character here (that prefix is no cut); every word start is one
    assert len(by_prefix) < len(ids) + 1
    assert all(cuts[m.start() - 1] is not None for m in re.finditer(r"(?<= )\w", text))
    # cuts that share their decoded prefixes (as the items of one window do), in any order, find the same
    memo: dict[int, str] = {}
    order = np.random.default_rng(0).permutation(len(text) + 1)
    assert {int(at): token_cut(smol_tokenizer, ids, text, int(at), memo) for at in order} == cuts
    assert 0 < len(memo) <= len(ids) + 1


def _harness_positions(tokenizer, text: str, it) -> tuple[int, int]:
    """The target's tokens as the harness finds them, independently of ``token_boundaries``: the
    context without its trailing space encoded alone, then with the target (space included)."""
    a = len(tokenizer(text[:it.start - 1])["input_ids"])
    b = len(tokenizer(text[:it.start + len(it.target)])["input_ids"])
    return a, b


def _doc_windows(tokenizer, n: int, length: int) -> np.ndarray:
    """Windows that each start at a document's start, so that encoding any prefix of a window's
    text gives back the window's own tokens (the harness re-encodes the context)."""
    from actpat.sources import PACKAGED

    docs = [d.text for d in PACKAGED["enwiki-excerpt"][0]()][:40]
    rows = [ids[:length] for ids in (tokenizer(d)["input_ids"] for d in docs) if len(ids) >= length]
    assert len(rows) >= n
    return np.asarray(rows[:n])


def test_lastword_items_are_read_off_the_right_positions(smol_tokenizer):
    """An item is correct exactly when the greedy hits at its target's tokens all hold: checked
    against the positions the harness's own tokenization gives, on random hit patterns."""
    windows = _doc_windows(smol_tokenizer, 4, 80)
    ids = [f"w{i}" for i in range(4)]
    rng = np.random.default_rng(0)
    hits = rng.random((4, 79)) < 0.7
    result = lastword_accuracy(smol_tokenizer, windows, ids, hits, per_window=5, context_words=8)
    texts = [smol_tokenizer.decode(row.tolist()) for row in windows]
    items = lastword_items(texts, ids, 5, 8)
    assert result["n_items"] == len(items) >= 12 and result["n_unaligned"] == 0
    assert result["item_ids"] == [it.id for it in items] and result["item_windows"] == [it.window for it in items]
    expected = []
    for it in items:
        a, b = _harness_positions(smol_tokenizer, texts[it.window], it)
        assert list(windows[it.window, :b]) == smol_tokenizer(texts[it.window][:it.start + len(it.target)])["input_ids"]
        expected.append(float(hits[it.window, a - 1:b - 1].all()))
    assert result["item_correct"] == expected and 0 < sum(expected) < len(expected)
    assert result["value"] == pytest.approx(np.mean(expected))
    # clustered by window (items of a window share its text), against the textbook sandwich estimate
    assert result["stderr"] == pytest.approx(sandwich_se(expected, result["item_windows"]), rel=1e-9)
    assert result["stderr_clusters"] == "window" and result["n_windows"] == 4
    assert lastword_accuracy(smol_tokenizer, windows, ids, np.ones_like(hits), 5, 8)["value"] == 1.0
    with pytest.raises(AccuracyError, match="shape"):
        lastword_accuracy(smol_tokenizer, windows, ids, hits[:, :-1], 5, 8)
    none = lastword_accuracy(smol_tokenizer, windows[:, :10], ids, hits[:, :9], 5, 8)
    assert none["value"] is None and none["n_items"] == 0 and "context" in none["undefined"]


def _greedy_correct(model, tokenizer, context: str, target: str) -> bool:
    """LAMBADA's accuracy written out: greedy decoding reproduces the target's tokens after the
    context (the whitespace before the target belongs to the continuation, as in the harness)."""
    stripped = context.rstrip()
    full = tokenizer(stripped + context[len(stripped):] + target)["input_ids"]
    ctx = tokenizer(stripped)["input_ids"]
    cont = full[len(ctx):]
    with torch.no_grad():
        logits = model(torch.tensor([full])).logits[0]
    predicted = logits[len(ctx) - 1:len(full) - 1].argmax(-1).tolist()
    return predicted == cont


def _harness_lastword(model, tokenizer, items: list[tuple[str, str, str]], tmp_path, batch_size: int = 4) -> list[float]:
    """The same items (id, context, target) as a harness ``loglikelihood`` task over a local file:
    its ``acc`` per item, in our order."""
    data = tmp_path / "lastword.jsonl"
    data.write_text("".join(json.dumps({"id": i, "context": c, "target": t}) + "\n" for i, c, t in items))
    task = {"task": "lastword_ref", "dataset_path": "json", "test_split": "test", "output_type": "loglikelihood",
            "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(tmp_path / "cache")},
            "doc_to_text": "context", "doc_to_target": "target", "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    r = run_tasks(model, tokenizer, [task], batch_size, "cpu")["lastword_ref"]
    by_id = dict(zip(r["item_ids"], r["item_correct"]))
    assert len(by_id) == len(items)
    return [by_id[i] for i, _, _ in items]


@pytest.mark.slow
def test_lastword_accuracy_matches_the_harness_and_an_independent_greedy_check(smol_checkpoint, tmp_path):
    """The items read off the perplexity pass score as lm-evaluation-harness scores the same items
    (the window before the target as context), and as a greedy check written out here."""
    from actpat.evaluate import window_nll
    from actpat.models import load_checkpoint

    model, tokenizer, _ = load_checkpoint(smol_checkpoint)
    windows = _doc_windows(tokenizer, 4, 96)
    window_ids = [f"w{i}" for i in range(4)]
    _, _, hits = window_nll(model, windows)
    result = lastword_accuracy(tokenizer, windows, window_ids, hits, per_window=4, context_words=20)
    texts = [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in windows]
    items = lastword_items(texts, window_ids, 4, 20)
    assert result["item_ids"] == [it.id for it in items] and result["n_items"] == len(items) >= 12
    expected = [float(_greedy_correct(model, tokenizer, texts[it.window][:it.start], it.target)) for it in items]
    assert result["item_correct"] == expected and 0 < sum(expected) < len(expected)
    harness = _harness_lastword(model, tokenizer, [(it.id, texts[it.window][:it.start], it.target) for it in items], tmp_path)
    assert result["item_correct"] == harness


@pytest.mark.slow
def test_named_custom_task_from_local_files(smol_checkpoint, tmp_path):
    """A user's own harness task (YAML over a local JSON file, through include_path), scored like a
    multiple-choice benchmark: the chosen answer is the one of highest log-likelihood."""
    from actpat.models import load_checkpoint

    model, tokenizer, _ = load_checkpoint(smol_checkpoint)
    rows = [{"question": "The capital of France is", "choices": [" Paris", " banana", " seven"], "label": 0},
            {"question": "Two plus two equals", "choices": [" purple", " four", " chair"], "label": 1},
            {"question": "The sky on a clear day is", "choices": [" loud", " heavy", " blue"], "label": 2},
            {"question": "Water freezes at zero degrees", "choices": [" Celsius", " metres", " apples"], "label": 0}]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    task = ("dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: " + str(data) + "\n"
            "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
            "doc_to_target: label\ntarget_delimiter: ''\nmetric_list:\n  - metric: acc\n    aggregation: mean\n"
            "    higher_is_better: true\n")
    # a task that asks for 3 examples in its prompt is run zero-shot all the same
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text("task: tiny_mc\nnum_fewshot: 3\nfewshot_split: test\n" + task)
    (tmp_path / "tasks" / "tiny_mc2.yaml").write_text("task: tiny_mc2\n" + task)
    (tmp_path / "tasks" / "tiny_group.yaml").write_text(
        "group: tiny_group\ntask:\n  - tiny_mc\n  - tiny_mc2\naggregate_metric_list:\n  - metric: acc\n"
        "    aggregation: mean\n    weight_by_size: true\n")
    result = run_tasks(model, tokenizer, ["tiny_group"], batch_size=4, device="cpu", include_path=str(tmp_path / "tasks"))
    assert set(result) == {"tiny_group", "tiny_mc", "tiny_mc2"}
    group = result["tiny_group"]
    assert sorted(group["subtasks"]) == ["tiny_mc", "tiny_mc2"] and group["n_items"] == 8 and group["item_ids"] == []
    assert result["tiny_mc"]["n_shot"] == 0
    r = result["tiny_mc"]

    def loglik(context: str, choice: str) -> float:
        ctx, full = tokenizer(context)["input_ids"], tokenizer(context + choice)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        return float(sum(logp[i - 1, full[i]] for i in range(len(ctx), len(full))))

    expected = [float(np.argmax([loglik(q["question"], c) for c in q["choices"]]) == q["label"]) for q in rows]
    assert r["metric"] == "acc" and r["n_items"] == 4
    assert sorted(zip(r["item_ids"], r["item_correct"])) == sorted(zip(map(str, range(4)), expected))
    assert result["tiny_mc2"]["item_correct"] == r["item_correct"]  # the same items, the same prompts: zero-shot both
    assert group["value"] == pytest.approx(np.mean(expected))
    one = run_tasks(model, tokenizer, ["tiny_mc"], batch_size=4, device="cpu", include_path=str(tmp_path / "tasks"), limit=1)
    assert one["tiny_mc"]["n_items"] == 1 and one["tiny_mc"]["stderr"] is None  # no standard error of one item
    with pytest.raises(AccuracyError, match="cannot build"):
        run_tasks(model, tokenizer, ["no_such_task_here"], batch_size=4, device="cpu", include_path=str(tmp_path / "tasks"))


def test_a_bfloat16_model_is_scored_with_float32_log_probabilities(tiny_checkpoint, monkeypatch, tmp_path):
    """In bfloat16 the harness would round every continuation's log-likelihood to 1/16-1/8 nat
    and break near-ties by order; its log-softmax must run in float32 whatever the model's dtype."""
    import torch.nn.functional as F

    from actpat.models import load_checkpoint

    model, tokenizer, _ = load_checkpoint(tiny_checkpoint, "bfloat16")
    seen, original = [], F.log_softmax

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(F, "log_softmax", spy)
    context = "The council rebuilt the old bridge in stone after the river flooded the lower town in the "
    correct = _harness_lastword(model, tokenizer, [("a", context, "spring"), ("b", context, "autumn")], tmp_path, 2)
    assert len(correct) == 2 and seen and set(seen) == {torch.float32}


def test_paired_accuracy_difference_resamples_windows():
    from actpat.pruning_report import paired_accuracy_difference

    windows = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    a = {"item_ids": [str(i) for i in range(16)], "item_windows": windows, "item_correct": [1.0] * 8 + [0.0] * 8}
    b = {**a, "item_correct": [0.0] * 16}
    diff, ci = paired_accuracy_difference(a, b, 2000, 0)
    assert diff == 0.5
    # resampling four windows (two all right, two all wrong) is much wider than resampling 16 items
    assert ci[0] < 0.2 and ci[1] > 0.8
    same, same_ci = paired_accuracy_difference(a, a, 200, 0)
    assert same == 0.0 and same_ci == [0.0, 0.0]
    with pytest.raises(ValueError):
        paired_accuracy_difference(a, {**b, "item_ids": list("abcdefghijklmnop")}, 10, 0)


@pytest.mark.slow
def test_zero_shot_job_and_its_table(smol_checkpoint, tmp_path):
    """The zero-shot command on the dense model with a local custom task, read back by the report."""
    from actpat.cli import main
    from actpat.pruning_report import read_zero_shot, zero_shot_table
    from actpat.settings import ZeroShotJob
    from actpat.settings_json import encode

    rows = [{"id": f"q{i}", "context": f"Item {i}: the colour of snow is", "target": " white"} for i in range(5)]
    data = tmp_path / "snow.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "snow.yaml").write_text(
        f"task: snow\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: loglikelihood\ndoc_to_text: context\ndoc_to_target: target\ntarget_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    dense = tmp_path / "dense"
    dense.mkdir()
    job = ZeroShotJob("float32", ("snow",), str(tasks), 3, 2)
    assert main(["zero-shot", "--settings", encode(job), "--model-dir", str(smol_checkpoint), "--device", "cpu",
                 "--threads", "2", "--out", str(dense / "zeroshot.json")]) in (0, None)
    z = json.loads((dense / "zeroshot.json").read_text())
    assert z["run"] == "dense" and z["limit"] == 3 and z["harness"].startswith("lm-eval")
    snow = z["results"]["snow"]
    assert snow["n_items"] == 3 and snow["item_ids"] == ["q0", "q1", "q2"]  # limit: the first items
    # read back as the report reads it: its checksum, the model and run, each task's value against its items
    table = zero_shot_table([], {"zero_shot": read_zero_shot(dense / "zeroshot.json", smol_checkpoint.name, "dense", None)})
    assert table.to_dict("records") == [{"method": "dense", "structure": "-", "sparsity": 0.0, "calibration": "-",
                                          "task": "snow", "kind": "task", "metric": "acc", "value": snow["value"],
                                          "stderr": snow["stderr"], "n_items": 3, "harness": z["harness"],
                                          "dtype": "float32", "attention": "eager"}]
    assert z["dtype"] == "float32" and z["attention"] == "eager"  # the CPU's kernel (evaluate.EAGER_ATTENTION)
