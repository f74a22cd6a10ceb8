"""Validation 3: pair-set loaders, the statistics by hand, and LLMDcos of identical texts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from actpat.errors import PairsError
from actpat.pairs import bag_of_tokens, cosine_rows, layer_ranges, load_pairs
from actpat.sketch import llmdcos
from actpat.stats import spearman_with_ci


def test_lee_documents_are_50_texts_with_1225_pairs():
    p = load_pairs({"source": "packaged", "name": "lee-documents"})
    assert len(p.texts) == 50 and len(p.score) == 1225
    assert (p.first < p.second).all() and 0 <= p.score.min() and p.score.max() <= 1
    assert "Democrats" in p.texts[0]


@pytest.mark.parametrize("name, n_pairs", [("wordsim353", 353), ("simlex999", 999)])
def test_word_pair_sets(name, n_pairs):
    p = load_pairs({"source": "packaged", "name": name})
    assert len(p.score) == n_pairs and len(p.texts) == len(set(p.texts))
    assert p.texts[p.first[0]] in ("love", "old")


def test_sts_and_sick_formats_from_local_files(tmp_path):
    sts = [{"sentence1": "A man plays guitar.", "sentence2": "A man is playing a guitar.", "score": 4.8},
           {"sentence1": "A cat sleeps.", "sentence2": "Stocks fell today.", "score": 0.2},
           {"sentence1": "A cat sleeps.", "sentence2": "A kitten is asleep.", "score": 4.0}]
    path = tmp_path / "stsb.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in sts))
    p = load_pairs({"source": "files", "path": str(path)})
    assert len(p.texts) == 5 and list(p.score) == [4.8, 0.2, 4.0]
    assert p.texts[p.first[2]] == "A cat sleeps." and p.first[1] == p.first[2]
    d = load_pairs({"source": "datasets", "name": "json", "data_files": str(path), "split": "train"})
    assert list(d.score) == list(p.score)
    sick = tmp_path / "sick.tsv"
    sick.write_text("sentence_A\tsentence_B\trelatedness_score\nA dog runs.\tA dog is running.\t4.9\n")
    s = load_pairs({"source": "files", "path": str(sick), "text1": "sentence_A", "text2": "sentence_B", "score": "relatedness_score"})
    assert s.score.tolist() == [4.9]


def test_bad_pair_files_are_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"sentence1": "a", "sentence2": "b", "score": None}))
    with pytest.raises(PairsError, match="pair 0 has no score"):
        load_pairs({"source": "files", "path": str(path)})
    path.write_text(json.dumps({"s1": "a", "s2": "b", "score": 1}))
    with pytest.raises(PairsError, match=r"no field\(s\) \['sentence1', 'sentence2'\]"):
        load_pairs({"source": "files", "path": str(path)})
    with pytest.raises(PairsError, match="does not exist"):
        load_pairs({"source": "files", "path": str(tmp_path / "none.tsv")})


def test_statistics_by_hand():
    rng = np.random.default_rng(0)
    human = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    x = np.array([0.1, 0.3, 0.2, 0.5, 0.9])
    res = spearman_with_ci(x, human, 200, rng)
    # ranks of x: 1 3 2 4 5 -> d² = 0 1 1 0 0 -> rho = 1 - 6*2/(5*24) = 0.9
    assert res["rho"] == pytest.approx(0.9) and res["n_pairs"] == 5
    # range sums: the authors sum per-layer values over [a, b)
    per_layer = np.stack([x, 2 * x, human])
    assert spearmanr(per_layer[0:2].sum(0), human).statistic == pytest.approx(0.9)  # sum of layers 0 and 1 = 3x


@pytest.mark.parametrize("n_layers, deep", [(30, (15, 28)), (31, (15, 29)), (40, (20, 38))])
def test_validation3_uses_the_findings_layer_ranges(n_layers, deep):
    """One definition: the paper's range(L // 2, L - 2), for odd L too, and analysis.deep_layers."""
    import dataclasses

    from conftest import default_settings

    analysis = default_settings().analysis
    r = layer_ranges(analysis, n_layers)
    assert r["deep"] == deep == (int(analysis.deep(n_layers)[0]), int(analysis.deep(n_layers)[-1]) + 1)
    assert r["shallow"] == (0, n_layers // 2) and r["[0, L)"] == (0, n_layers)
    assert r["[2L/3, L-2)"] == ((2 * n_layers) // 3, n_layers - 2) and r["[20, L-2) (paper)"] == (20, n_layers - 2)
    other = layer_ranges(dataclasses.replace(analysis, deep_layers=(0.75, -1)), n_layers)
    assert other["deep"] == (int(0.75 * n_layers), n_layers - 1)


def test_validation3_ranges_of_a_shallow_model():
    """A 6-layer model: [2L/3, L-2) = [4, 4) is empty and left out, not an error; deep and shallow
    are still there (an empty configured range is an error)."""
    import dataclasses

    from conftest import default_settings

    analysis = default_settings().analysis
    r = layer_ranges(analysis, 6)
    assert r["deep"] == (3, 4) and r["shallow"] == (0, 3) and "[2L/3, L-2)" not in r
    assert r["[L/3, L-2)"] == (2, 4) and "[20, L-2) (paper)" not in r
    with pytest.raises(ValueError, match="empty"):
        layer_ranges(dataclasses.replace(analysis, deep_layers=(0.9, -2)), 6)


def test_pair_measures_by_hand():
    sk = np.array([[3.0, 4.0], [3.0, 4.0], [4.0, -3.0]])  # (text, k) of one layer
    norms = np.array([5.0, 5.0, 5.0])
    got = llmdcos(sk, norms, (np.array([0, 0]), np.array([1, 2])))
    assert got.shape == (2,) and got[0] == pytest.approx(1.0) and got[1] == pytest.approx(0.0)
    np.testing.assert_allclose(llmdcos(sk, norms)[[0, 0], [1, 2]], got)  # all pairs agree
    h = np.array([[[1.0, 0.0]], [[1.0, 1.0]]])
    assert cosine_rows(h, np.array([0]), np.array([1]))[0, 0] == pytest.approx(1 / np.sqrt(2))
    bot = bag_of_tokens([[1, 2, 2], [2, 3]], np.array([0]), np.array([1]))
    # counts [0,1,2,0] and [0,0,1,1]: 2 / (sqrt 5 * sqrt 2)
    assert bot[0] == pytest.approx(2 / np.sqrt(10))


@pytest.mark.slow
def test_identical_texts_have_llmdcos_one_within_sketch_error(smollm2):
    import torch

    from actpat.decoder import weight_layout
    from actpat.scoring import ShardScorer
    from conftest import scoring

    model, tokenizer = smollm2
    scorer = ShardScorer(model, weight_layout(model), scoring())
    ids = tokenizer("The river rose until it covered the lower fields of the valley.", return_tensors="pt").input_ids
    a, b = scorer.score(ids), scorer.score(ids.clone())
    sk = np.stack([a.sketch, b.sketch])
    norms = np.stack([np.sqrt((a.l2**2).sum(1)), np.sqrt((b.l2**2).sum(1))])
    est = np.array([llmdcos(sk[:, i], norms[:, i], (np.array([0]), np.array([1])))[0] for i in range(sk.shape[1])])
    assert np.abs(est - 1.0).max() < 0.02  # identical texts: exactly 1, up to the sketch's error (not clipped)
    np.testing.assert_array_equal(a.sketch, b.sketch)
    assert a.hidden_mean.shape == (31, 576)
    torch.testing.assert_close(torch.tensor(a.hidden_mean), torch.tensor(b.hidden_mean))


def test_limit_keeps_the_first_pairs_and_their_texts():
    full = load_pairs({"source": "packaged", "name": "wordsim353"})
    p = load_pairs({"source": "packaged", "name": "wordsim353", "limit": 5})
    assert len(p.score) == 5 and list(p.score) == list(full.score[:5])
    assert [(p.texts[a], p.texts[b]) for a, b in zip(p.first, p.second)] == [
        (full.texts[a], full.texts[b]) for a, b in zip(full.first[:5], full.second[:5])]
    assert len(p.texts) == len(set(p.first) | set(p.second))
