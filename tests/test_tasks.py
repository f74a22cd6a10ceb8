"""Task sources: the paper's zero-shot prompts of six tasks, read from local files in each dataset's
own field layout. The expected prompts are written out by hand from the authors' formats."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actpat.errors import ConfigError
from actpat.config import validate_config
from actpat.preflight import preflight
from actpat.samples import PAD, SamplingError, document_samples, make_samples
from actpat.sources import SourceError, describe, load_documents

MINIMAL = {"models": {"m": {"source": "smollm2"}}, "domains": {"code": {"source": "packaged", "name": "python-stdlib"}}}


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))


def _json(path, rows):
    path.write_text(json.dumps(rows))


def _csv(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)


BOOLQ = [
    {"question": "is windows movie maker part of windows essentials", "answer": True,
     "passage": "Windows Movie Maker -- Windows Movie Maker (formerly known as Windows Live Movie Maker in Windows 7) "
                "is a discontinued video editing software by Microsoft. It is a part of Windows Essentials software suite."},
    {"question": "is confectionary sugar the same as powdered sugar", "answer": True,
     "passage": "Powdered sugar -- Powdered sugar, also called confectioners' sugar, icing sugar, and icing cake, is a "
                "finely ground sugar produced by milling granulated sugar into a powdered state."},
]
MMLU = [
    {"question": "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.",
     "subject": "abstract_algebra", "choices": ["0", "4", "2", "6"], "answer": 1},
    {"question": "Which of the following is the body cavity that contains the pituitary gland?",
     "subject": "anatomy", "choices": ["Abdominal", "Cranial", "Pleural", "Spinal"], "answer": 1},
]
SIQA = [
    {"context": "Tracy didn't go home that evening and resisted Riley's attacks.",
     "question": "What does Tracy need to do before this?",
     "answerA": "make a new plan", "answerB": "Go home and see Riley", "answerC": "Find somewhere to go", "label": "3"},
    {"context": "Sydney walked past a homeless woman asking for change but did not have any money they could give to her.",
     "question": "How would you describe Sydney?",
     "answerA": "sympathetic", "answerB": "like a person who was unable to help", "answerC": "incredulous", "label": "1"},
]
HELLASWAG = [
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx": "A man is sitting on a roof. he",
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
                 "starts pulling up roofing on a roof."], "label": "3"},
    {"ind": 92, "activity_label": "Clean and jerk", "ctx": "A lady walks to a barbell. She bends down and grabs the pole. the lady",
     "endings": ["swings and lands in her arms.", "pulls the barbell forward.", "pulls a rope attached to the barbell.",
                 "stands and lifts the weight over her head."], "label": "3"},
]
PIQA = [
    {"goal": "When boiling butter, when it's ready, you can", "sol1": "Pour it onto a plate", "sol2": "Pour it into a jar",
     "label": 1},
    {"goal": "To permanently attach metal legs to a chair, you can",
     "sol1": "Weld the metal together to get it to stay firmly in place",
     "sol2": "Nail the metal together to get it to stay firmly in place", "label": 0},
]
HUMANEVAL = [
    {"task_id": "HumanEval/0",
     "prompt": 'from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n'
               '    """ Check if in given list of numbers, are any two numbers closer to each other than\n'
               '    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    """\n',
     "canonical_solution": "    for idx, elem in enumerate(numbers):\n        for idx2, elem2 in enumerate(numbers):\n"
                           "            if idx != idx2:\n                distance = abs(elem - elem2)\n"
                           "                if distance < threshold:\n                    return True\n\n    return False\n",
     "test": "\n\ndef check(candidate):\n    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n",
     "entry_point": "has_close_elements"},
    {"task_id": "HumanEval/2",
     "prompt": '\n\ndef truncate_number(number: float) -> float:\n    """ Given a positive floating point number, return '
               'its decimal part.\n    >>> truncate_number(3.5)\n    0.5\n    """\n',
     "canonical_solution": "    return number % 1.0\n",
     "test": "\n\ndef check(candidate):\n    assert candidate(3.5) == 0.5\n", "entry_point": "truncate_number"},
]

# (task, file name, writer, rows, the row checked, its prompt written out, ids, texts that must not appear)
CASES = [
    ("boolq", "val.csv", _csv, BOOLQ, 0,
     "Windows Movie Maker -- Windows Movie Maker (formerly known as Windows Live Movie Maker in Windows 7) is a discontinued "
     "video editing software by Microsoft. It is a part of Windows Essentials software suite.\n"
     "Question: is windows movie maker part of windows essentials?\nAnswer:",
     ["boolq-0", "boolq-1"], ["True", "true", "yes"]),
    ("mmlu", "val.jsonl", _jsonl, MMLU, 1,
     "The following are multiple choice questions (with answers) about anatomy.\n\n"
     "Which of the following is the body cavity that contains the pituitary gland?\n"
     "A. Abdominal\nB. Cranial\nC. Pleural\nD. Spinal\nAnswer:",
     ["mmlu-0", "mmlu-1"], ["Answer: B", "Answer:B"]),
    ("siqa", "val.parquet", _parquet, SIQA, 0,
     "The following are multiple choice questions (with answers) about social interaction.\n"
     "Tracy didn't go home that evening and resisted Riley's attacks.\nWhat does Tracy need to do before this?\n"
     "A. make a new plan\nB. Go home and see Riley\nC. Find somewhere to go\nAnswer:",
     ["siqa-0", "siqa-1"], ["Answer: C", "Answer:C", "Answer: 3"]),
    ("hellaswag", "val.jsonl", _jsonl, HELLASWAG, 0,
     "The following are multiple choice to finish a sentence (with answer) about Roof shingle removal.\n\n"
     "A man is sitting on a roof. he...\nHow does the description likely end?\n\n"
     "A. is using wrap to wrap a pair of skis.\n\nB. is ripping level tiles off.\n\nC. is holding a rubik's cube.\n\n"
     "D. starts pulling up roofing on a roof.\n\nAnswer:",
     ["24", "92"], ["Answer: D", "Answer:D"]),
    ("piqa", "val.json", _json, PIQA, 0,
     "Question:When boiling butter, when it's ready, you can\n0. Pour it onto a plate\n1. Pour it into a jar\nAnswer:",
     ["piqa-0", "piqa-1"], ["Answer: 1", "Answer:1"]),
    ("humaneval", "test.jsonl", _jsonl, HUMANEVAL, 1,
     '\n\ndef truncate_number(number: float) -> float:\n    """ Given a positive floating point number, return its '
     'decimal part.\n    >>> truncate_number(3.5)\n    0.5\n    """\n',
     ["HumanEval/0", "HumanEval/2"], ["return number % 1.0", "def check(candidate)"]),
]


@pytest.mark.parametrize("task, filename, write, rows, row, prompt, ids, answers", CASES, ids=[c[0] for c in CASES])
def test_task_prompts_from_a_local_file(tmp_path, task, filename, write, rows, row, prompt, ids, answers):
    path = tmp_path / filename
    write(path, rows)
    docs = load_documents({"source": "task", "name": task, "path": str(path)})
    assert [d.id for d in docs] == ids
    assert docs[row].text == prompt
    for doc in docs:
        assert not any(answer in doc.text for answer in answers)  # the paper scores prompts without answers
        if task != "humaneval":
            assert doc.text.endswith("Answer:")


def test_limit_keeps_the_first_rows_and_ids_name_the_row(tmp_path):
    path = tmp_path / "piqa.jsonl"
    _jsonl(path, PIQA * 3)
    docs = load_documents({"source": "task", "name": "piqa", "path": str(path), "limit": 4})
    assert [d.id for d in docs] == ["piqa-0", "piqa-1", "piqa-2", "piqa-3"]
    assert describe({"source": "task", "name": "piqa", "path": str(path)}) == f"task:piqa from {path}"


def test_task_read_through_datasets_from_a_local_data_directory(tmp_path):
    """The datasets branch (``dataset``, default split), offline: a directory whose file names are
    the splits, as ``datasets.load_dataset`` reads a local dataset."""
    (tmp_path / "boolq").mkdir()
    _jsonl(tmp_path / "boolq" / "train.jsonl", BOOLQ[:1])
    _jsonl(tmp_path / "boolq" / "validation.jsonl", BOOLQ)
    spec = {"source": "task", "name": "boolq", "dataset": str(tmp_path / "boolq")}
    docs = load_documents(spec)
    assert [d.id for d in docs] == ["boolq-0", "boolq-1"]  # the task's default split: validation
    assert docs[1].text.endswith("Question: is confectionary sugar the same as powdered sugar?\nAnswer:")
    assert len(load_documents({**spec, "split": "train"})) == 1
    assert describe(spec) == f"task:boolq from {tmp_path / 'boolq'}:validation"
    assert describe({"source": "task", "name": "mmlu"}) == "task:mmlu from cais/mmlu/all:validation"


def test_a_row_without_a_needed_field_is_named(tmp_path):
    path = tmp_path / "siqa.jsonl"
    rows = copy.deepcopy(SIQA)
    del rows[1]["answerB"]
    _jsonl(path, rows)
    with pytest.raises(SourceError, match=r"task siqa: row 1 of .*siqa\.jsonl has no field 'answerB'"):
        load_documents({"source": "task", "name": "siqa", "path": str(path)})
    hellaswag = tmp_path / "hellaswag.jsonl"
    _jsonl(hellaswag, [{k: v for k, v in HELLASWAG[0].items() if k != "ind"}])  # its id field
    with pytest.raises(SourceError, match=r"task hellaswag: row 0 .* has no field 'ind'"):
        load_documents({"source": "task", "name": "hellaswag", "path": str(hellaswag)})


def test_schema_accepts_task_domains_and_scores_each_prompt_by_default(tmp_path):
    path = str(tmp_path / "p.jsonl")
    cfg = validate_config({**MINIMAL, "domains": {"piqa": {"source": "task", "name": "piqa", "path": path}}})
    assert cfg["domains"]["piqa"] == {"source": "task", "name": "piqa", "path": path, "per_document": True, "pack": False,
                                      "samples": 64}
    # other sources' settings (and so their rerun trigger) are as before
    assert validate_config(MINIMAL)["domains"]["code"] == {"source": "packaged", "name": "python-stdlib", "pack": False,
                                                          "samples": 64}
    packed = validate_config({**MINIMAL, "domains": {"piqa": {"source": "task", "name": "piqa", "path": path, "pack": True}}})
    assert packed["domains"]["piqa"]["pack"] is True and not packed["domains"]["piqa"].get("per_document")
    with pytest.raises(ConfigError, match=r"domains\.piqa: pack and per_document exclude each other"):
        validate_config({**MINIMAL, "domains": {"piqa": {"source": "task", "name": "piqa", "pack": True, "per_document": True}}})
    with pytest.raises(ConfigError, match=r"domains\.piqa\.name: 'pica' is not allowed; choose one of 'boolq', 'mmlu'"):
        validate_config({**MINIMAL, "domains": {"piqa": {"source": "task", "name": "pica"}}})
    with pytest.raises(ConfigError, match=r"domains\.piqa: unknown key\(s\) 'field'"):
        validate_config({**MINIMAL, "domains": {"piqa": {"source": "task", "name": "piqa", "field": "goal"}}})


def test_start_up_check_of_a_task_file(tmp_path):
    def check(spec):
        cfg = validate_config({**MINIMAL, "domains": {"t": spec}, "pruning": {"enabled": False}})
        preflight(cfg, [])

    with pytest.raises(ConfigError, match=r"domains\.t\.path: no file matches"):
        check({"source": "task", "name": "piqa", "path": str(tmp_path / "missing.jsonl")})
    _jsonl(tmp_path / "p.jsonl", PIQA)
    with pytest.raises(ConfigError, match=r"domains\.t\.path: path .* is read instead of a dataset; remove split"):
        check({"source": "task", "name": "piqa", "path": str(tmp_path / "p.jsonl"), "split": "train"})
    (tmp_path / "p.txt").write_text("Question:")
    with pytest.raises(ConfigError, match=r"task files must all be .jsonl/.json, .csv or .parquet \(got .txt\)"):
        check({"source": "task", "name": "piqa", "path": str(tmp_path / "p.txt")})
    check({"source": "task", "name": "piqa", "path": str(tmp_path / "p.jsonl")})


def test_short_prompts_become_windows_when_packed(tmp_path, smol_tokenizer):
    """PIQA prompts are shorter than a window: alone they give none; packed (``pack: true``, and a
    task domain's calibration windows) they are joined with blank lines into one stream and tiled."""
    path = tmp_path / "piqa.jsonl"
    _jsonl(path, PIQA * 8)
    docs = load_documents({"source": "task", "name": "piqa", "path": str(path)})
    assert max(len(smol_tokenizer(d.text)["input_ids"]) for d in docs) < 64
    with pytest.raises(SamplingError, match="only 0 windows"):
        make_samples("piqa", docs, smol_tokenizer, seq_len=64, n=4, seed=1, holdout_fraction=0.0)
    s = make_samples("piqa", docs, smol_tokenizer, seq_len=64, n=4, seed=1, holdout_fraction=0.0, pack=True)
    assert s.token_ids.shape == (4, 64) and set(s.doc_ids) <= {d.id for d in docs}


# ----------------------------------------------------------------------------------------------
# One prompt, one sample (per_document, a task domain's default)


class WithBos:
    """SmolLM2's tokenizer (which adds no special tokens) with a Llama-style BOS, id 1, before
    every text by default."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, add_special_tokens=True):
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if add_special_tokens:
            ids = [1] + ids if isinstance(text, str) else [[1] + row for row in ids]
        return {"input_ids": ids}


def _prompts(tmp_path, task, rows, copies=8):
    path = tmp_path / f"{task}.jsonl"
    _jsonl(path, rows * copies)
    return {d.id: d for d in load_documents({"source": "task", "name": task, "path": str(path)})}


@pytest.mark.parametrize("bos", [False, True], ids=["smollm2", "with-bos"])
def test_each_drawn_prompt_is_one_sample_ending_at_its_answer(tmp_path, smol_tokenizer, bos):
    tokenizer = WithBos(smol_tokenizer) if bos else smol_tokenizer
    docs = _prompts(tmp_path, "piqa", PIQA)
    s = document_samples("piqa", list(docs.values()), tokenizer, seq_len=64, n=6, seed=1, holdout_fraction=0.0)
    assert len(s.doc_ids) == len(set(s.doc_ids)) == 6 and s.offsets == [0] * 6
    assert s.token_ids.shape == (6, max(s.lengths)) and s.stats["n_truncated"] == 0
    assert len(set(s.lengths.tolist())) > 1  # prompts of different lengths, padded to the longest
    for row, n, doc in zip(s.token_ids, s.lengths, s.doc_ids):
        assert list(row[:n]) == tokenizer(docs[doc].text)["input_ids"]  # the whole prompt, BOS as the tokenizer puts it
        assert (row[n:] == PAD).all()
        assert smol_tokenizer.decode(row[n - 2 : n]) == "Answer:"  # the last real token ends "Answer:"
    again = document_samples("piqa", list(docs.values()), tokenizer, seq_len=64, n=6, seed=1, holdout_fraction=0.0)
    assert again.doc_ids == s.doc_ids


@pytest.mark.parametrize("bos", [False, True], ids=["smollm2", "with-bos"])
def test_a_prompt_longer_than_seq_len_keeps_its_end_and_is_counted(tmp_path, smol_tokenizer, bos):
    tokenizer = WithBos(smol_tokenizer) if bos else smol_tokenizer
    docs = _prompts(tmp_path, "boolq", BOOLQ, copies=2)
    lines = []
    s = document_samples("boolq", list(docs.values()), tokenizer, seq_len=16, n=4, seed=1, holdout_fraction=0.0,
                         log=lines.append)
    assert s.stats["n_truncated"] == 4 and "4 longer than 16 tokens kept their last" in lines[0]
    assert s.token_ids.shape == (4, 16) and (s.lengths == 16).all()
    for row, doc, offset in zip(s.token_ids, s.doc_ids, s.offsets):
        full = tokenizer(docs[doc].text, add_special_tokens=False)["input_ids"]
        body = 16 - bos
        assert list(row) == [1] * bos + full[-body:] and offset == len(full) - body > 0
        assert smol_tokenizer.decode(row[-2:]) == "Answer:"
    with pytest.raises(SamplingError, match=r"domain boolq: only 4 non-empty documents to score, one sample each"):
        document_samples("boolq", list(docs.values()), tokenizer, seq_len=16, n=5, seed=1, holdout_fraction=0.0)


def test_token_relevance_counts_the_prompts_tokens_not_the_padding(tmp_path, smol_tokenizer):
    """Stores of padded prompts: the relevance equals 1 − JS distance of unigram counts taken
    from each drawn prompt's own encoding, and the scorer's readers see the same tokens."""
    from scipy.spatial.distance import jensenshannon

    from actpat.reduce import token_relevance
    from actpat.errors import StoreError
    from actpat.store import open_samples, sample_lengths, sample_tokens, window_tokens, write_samples

    domains = {"piqa": _prompts(tmp_path, "piqa", PIQA), "boolq": _prompts(tmp_path, "boolq", BOOLQ)}
    paths, counts = {}, {}
    for name, docs in domains.items():
        s = document_samples(name, list(docs.values()), smol_tokenizer, 64, 5, seed=1, holdout_fraction=0.0)
        assert (s.token_ids == PAD).any()
        paths[name] = tmp_path / f"{name}.zarr"
        write_samples(paths[name], s, {"domain": name})
        encoded = [smol_tokenizer(docs[d].text)["input_ids"] for d in s.doc_ids]
        counts[name] = np.bincount(np.concatenate(encoded), minlength=len(smol_tokenizer))
        ds = open_samples(paths[name])
        assert [list(t) for t in sample_tokens(ds)] == encoded and list(sample_lengths(ds)) == [len(e) for e in encoded]
        with pytest.raises(StoreError, match="padded samples of different lengths, not of equal-length windows"):
            window_tokens(ds)  # what calibration and perplexity read
    domains_out, rel = token_relevance(paths)
    p, q = (counts[d] / counts[d].sum() for d in domains_out)
    assert rel[0, 1] == pytest.approx(1 - jensenshannon(p, q, base=2), abs=1e-12)


def test_the_job_scores_each_prompt_as_its_unpadded_self(tmp_path, tiny_checkpoint):
    """The sample_domain job of a task domain (per_document, the default) writes padded prompts
    with their lengths and truncation count; its calibration windows still tile the joined
    prompts; score_shard scores each padded prompt, in batches of mixed lengths, as it scores the
    prompt alone: D is the largest logit right after "Answer:"."""
    import torch

    from actpat.decoder import weight_layout
    from actpat.modeljob import JobRuntime, ModelRef
    from actpat.models import load_checkpoint
    from actpat.samples import write_windows
    from actpat.scoring import Shard, ShardScorer, score_shard
    from actpat.settings import ScoringJob, TextSource, WindowJob
    from actpat.store import open_samples, open_scores, sample_tokens
    from conftest import scoring

    path = tmp_path / "piqa.jsonl"
    _jsonl(path, PIQA * 6)
    spec = validate_config({**MINIMAL, "domains": {"piqa": {"source": "task", "name": "piqa", "path": str(path)}}})["domains"]["piqa"]
    text = TextSource("piqa", spec)
    write_windows(WindowJob("samples", text, 5, 64, 1, 0.2), tiny_checkpoint, tmp_path / "s.zarr", log=lambda m: None)
    write_windows(WindowJob("calibration", text, 2, 32, 1, 0.2), tiny_checkpoint, tmp_path / "c.zarr", log=lambda m: None)
    samples, calibration = open_samples(tmp_path / "s.zarr"), open_samples(tmp_path / "c.zarr")
    assert "length" in samples and samples.attrs["n_truncated"] == 0 and samples.sizes["sample"] == 5
    assert "length" not in calibration and calibration.sizes["position"] == 32

    settings = scoring(sketch_size=64)
    score_shard(ScoringJob(settings, 5, None), ModelRef("tiny", tiny_checkpoint), Shard(tmp_path / "s.zarr", 0, tmp_path / "scores.zarr"),
                JobRuntime("cpu", 1, batch_size=3, log=lambda m: None))
    scores = open_scores(tmp_path / "scores.zarr")
    model, _, _ = load_checkpoint(tiny_checkpoint)
    alone = ShardScorer(model, weight_layout(model), settings)
    for k, tokens in enumerate(sample_tokens(samples)):
        ids = torch.as_tensor(tokens.astype(np.int64))[None]
        ref = alone.score(ids)
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1]
        assert float(scores["target_value"][k]) == pytest.approx(last.max().item(), rel=1e-5)
        assert float(scores["target_value"][k]) == pytest.approx(ref.target_value, rel=1e-6)
        assert int(scores["target_token"][k]) == ref.target_token == int(last.argmax())
        np.testing.assert_allclose(scores["l1"].values[k], ref.l1, rtol=1e-5)
