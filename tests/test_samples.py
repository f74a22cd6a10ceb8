"""Token windows: provenance, determinism, held-out documents, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from actpat.models import prefix_tokens
from actpat.samples import SamplingError, make_samples, shard_slices
from actpat.sources import Document

TEXT = " ".join(f"word{i}" for i in range(400))


def _docs(n=12, text=TEXT):
    return [Document(f"doc{i}", f"{i} {text}") for i in range(n)]


def test_windows_are_real_slices_of_their_documents(smol_tokenizer):
    docs = _docs()
    s = make_samples("d", docs, smol_tokenizer, seq_len=16, n=10, seed=1, holdout_fraction=0.25)
    prefix = prefix_tokens(smol_tokenizer)
    by_id = {d.id: smol_tokenizer(d.text, add_special_tokens=False)["input_ids"] for d in docs}
    assert s.token_ids.shape == (10, 16) and s.token_ids.dtype == np.int32
    for row, doc, off in zip(s.token_ids, s.doc_ids, s.offsets):
        body = 16 - len(prefix)
        assert list(row) == prefix + by_id[doc][off : off + body]
        assert doc not in s.holdout_doc_ids
    assert len(set(zip(s.doc_ids, s.offsets))) == 10  # drawn without replacement
    assert s.sample_ids[0] == f"d:{s.doc_ids[0]}@{s.offsets[0]}"
    assert s.stats["n_holdout_documents"] == len(s.holdout_doc_ids) > 0


def test_same_seed_same_samples_and_domains_are_independent(smol_tokenizer):
    a = make_samples("d", _docs(), smol_tokenizer, 16, 8, seed=1)
    b = make_samples("d", _docs(), smol_tokenizer, 16, 8, seed=1)
    c = make_samples("d", _docs(), smol_tokenizer, 16, 8, seed=2)
    e = make_samples("e", _docs(), smol_tokenizer, 16, 8, seed=1)
    assert np.array_equal(a.token_ids, b.token_ids) and a.doc_ids == b.doc_ids
    assert not np.array_equal(a.token_ids, c.token_ids)
    assert not np.array_equal(a.token_ids, e.token_ids)


def test_short_documents_are_counted_and_too_few_windows_refused(smol_tokenizer):
    docs = _docs(6) + [Document(f"short{i}", "tiny text") for i in range(5)]
    s = make_samples("d", docs, smol_tokenizer, 32, 4, seed=1, holdout_fraction=0.0)
    assert s.stats["n_short_documents_skipped"] == 5
    with pytest.raises(SamplingError, match=r"domain d: only \d+ windows of 32 tokens available .*set pack: true"):
        make_samples("d", docs, smol_tokenizer, 32, 10_000, seed=1)


def test_packing_joins_short_texts(smol_tokenizer):
    docs = [Document(f"def{i}", f"Definition number {i} of a clinical term.") for i in range(60)]
    with pytest.raises(SamplingError):
        make_samples("m", docs, smol_tokenizer, 32, 4, seed=1, holdout_fraction=0.0)
    s = make_samples("m", docs, smol_tokenizer, 32, 4, seed=1, holdout_fraction=0.0, pack=True)
    assert s.token_ids.shape == (4, 32)
    assert all(d.startswith("def") for d in s.doc_ids)


def test_shards_cover_all_samples_once():
    sl = shard_slices(10, 4)
    assert [(x.start, x.stop) for x in sl] == [(0, 4), (4, 8), (8, 10)]


def test_shards_by_count_are_near_equal_and_cover_all():
    sl = shard_slices(50, n_shards=3)
    assert [(x.start, x.stop) for x in sl] == [(0, 17), (17, 33), (33, 50)]
    assert [(x.start, x.stop) for x in shard_slices(2, n_shards=4)] == [(0, 1), (1, 2)]


@pytest.mark.parametrize("kind, per_document, count, length", [
    ("samples", False, r"domains\.d\.samples \(default samples\.per_domain\)", r"samples\.seq_len"),
    ("calibration", False, r"pruning\.calibration\.windows", r"pruning\.calibration\.seq_len"),
    ("samples", True, r"domains\.d\.samples \(default samples\.per_domain\)", r"samples\.holdout_fraction"),
])
def test_a_sampling_job_short_of_text_names_the_settings_that_ask_for_it(tmp_path, tiny_checkpoint, kind, per_document,
                                                                          count, length):
    from actpat.samples import write_windows
    from actpat.settings import TextSource, WindowJob

    for i in range(4):
        (tmp_path / f"t{i}.txt").write_text(f"Text {i} tells of rivers, hills and towns. " * 4)
    spec = {"source": "files", "paths": [str(tmp_path / "*.txt")], "per_document": per_document}
    job = WindowJob(kind, TextSource("d", spec), 50, 16, 1, 0.2)
    with pytest.raises(SamplingError, match=rf"^domain d: only \d+ .*, 50 asked for by {count}; lower it or {length}"):
        write_windows(job, tiny_checkpoint, tmp_path / "out.zarr", log=lambda m: None)


@pytest.mark.parametrize("packed", [False, True], ids=["windows", "packed"])
def test_the_start_up_bound_on_windows_holds_for_a_real_tokenizer(tmp_path, smol_tokenizer, packed):
    """``preflight.most_windows`` counts no tokenizer's tokens, only bytes: it is never below what
    the tokenizer finds, on prose, code, digits, CJK and emoji, in txt and JSONL files."""
    import json

    from actpat.preflight import most_windows
    from actpat.sources import load_documents

    texts = [TEXT, "def f(x):\n    return [i ** 2 for i in range(x)]\n" * 9, "3.14159 2.71828 1.41421 " * 30,
             "\u6c34\u304c\u6d41\u308c\u308b\u3002" * 40, "\U0001f30a\U0001f3d4 waves and peaks " * 25, "short"]
    for i, text in enumerate(texts):
        (tmp_path / f"d{i}.txt").write_text(text)
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps({"text": t}, ensure_ascii=i % 2 == 0) for i, t in enumerate(texts)))
    spec = {"source": "files", "paths": [str(tmp_path / "*.txt"), str(tmp_path / "r.jsonl")]}
    docs = load_documents(spec)
    for seq_len in (8, 16, 64):
        found = make_samples("d", docs, smol_tokenizer, seq_len, 1, seed=1, holdout_fraction=0.0, pack=packed)
        assert found.stats["n_windows_available"] <= most_windows(spec, seq_len, len(prefix_tokens(smol_tokenizer)),
                                                                  False, packed)
    assert most_windows({"source": "files", "paths": [str(tmp_path / "*.txt")]}, 16, 0, True, False) == len(texts)
    assert most_windows({**spec, "encoding": "latin-1"}, 16, 0, False, packed) is None  # bytes bound UTF-8 only
