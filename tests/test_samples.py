"""Token windows: provenance, determinism, held-out documents, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from actpat.samples import SamplingError, make_samples, prefix_tokens, shard_slices
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
