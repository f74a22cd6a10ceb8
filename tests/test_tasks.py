"""Task sources: the paper's zero-shot prompts of six tasks, read from local files in each dataset's
own field layout. The expected prompts are written out by hand from the authors' formats."""

from __future__ import annotations

import copy
import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actpat.config import ConfigError, validate_config
from actpat.preflight import preflight
from actpat.samples import SamplingError, make_samples
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


def test_schema_accepts_task_domains_and_packs_them_by_default(tmp_path):
    cfg = validate_config({**MINIMAL, "domains": {"piqa": {"source": "task", "name": "piqa", "path": str(tmp_path / "p.jsonl")}}})
    assert cfg["domains"]["piqa"] == {"source": "task", "name": "piqa", "path": str(tmp_path / "p.jsonl"), "pack": True, "samples": 64}
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
    """PIQA prompts are shorter than a window: alone they give none; packed (a task's default)
    they are joined with blank lines into one stream and tiled."""
    path = tmp_path / "piqa.jsonl"
    _jsonl(path, PIQA * 8)
    docs = load_documents({"source": "task", "name": "piqa", "path": str(path)})
    assert max(len(smol_tokenizer(d.text)["input_ids"]) for d in docs) < 64
    with pytest.raises(SamplingError, match="only 0 windows"):
        make_samples("piqa", docs, smol_tokenizer, seq_len=64, n=4, seed=1, holdout_fraction=0.0)
    s = make_samples("piqa", docs, smol_tokenizer, seq_len=64, n=4, seed=1, holdout_fraction=0.0, pack=True)
    assert s.token_ids.shape == (4, 64) and set(s.doc_ids) <= {d.id for d in docs}
