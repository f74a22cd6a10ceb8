"""The LLMDcos sketch: pinned hash, agreement of the per-matrix and whole-vector paths, and the
estimate against the exact LLMDcos on real scores of the default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actpat.sketch import GROUP_ROWS, coordinate_hash, llmdcos, matrix_codes
from reference import llmdcos_exact, sketch_dense


def test_llmdcos_exact_by_hand():
    a = np.array([1.0, -2.0, 0.0, 2.0])
    b = np.array([-3.0, 0.0, 4.0, 0.0])
    # Σ|a b| = 3, ‖a‖ = 3, ‖b‖ = 5
    assert llmdcos_exact(a, b) == pytest.approx(3 / 15)
    assert llmdcos_exact(a, a) == pytest.approx(1.0)


def test_hash_is_pinned_and_device_independent():
    h = coordinate_hash(0, 5, layer=0, seed=0)
    assert h.tolist() == coordinate_hash(0, 5, 0, 0).tolist()
    # pinned values: changing the hash makes old stores incomparable (bump HASH_VERSION)
    assert h.tolist() == PINNED
    assert (h >= 0).all() and (h < 2**32).all()
    assert coordinate_hash(3, 2, 0, 0).tolist() == h[3:5].tolist()
    assert coordinate_hash(0, 5, 1, 0).tolist() != h.tolist()
    codes = matrix_codes(16 * 20_000, 100_000, layer=0, matrix=0, k=64, seed=0)
    for name in ("strip", "group_col"):
        counts = np.bincount(getattr(codes, name).numpy(), minlength=64)
        assert len(counts) == 64 and counts.min() > 0.7 * counts.mean()  # roughly uniform buckets
    for name in ("row_sign", "col_sign"):
        signs = getattr(codes, name).numpy()
        assert set(np.unique(signs)) == {-1.0, 1.0} and abs(signs.mean()) < 0.02


PINNED = [33350994, 2672842292, 127880910, 260803382, 1795018525]


def test_fixed_hash_error_on_synthetic_vectors():
    """At the workflow's hash (seed 0), heavy-tailed synthetic score vectors of a 200 x 200 matrix
    (13 row groups) in 1024 buckets (about 39 weights a bucket, the default model has about 107):
    errors within the estimator's spread, and estimates not clipped (an estimate may leave [0, 1]
    by its error). The errors of all pairs at one hash share a part (the hash's own bias); its
    size is measured against its spread over other hashes."""
    rng = np.random.default_rng(1)
    vecs = rng.pareto(2.0, (12, 40_000))
    k, shapes = 1024, [(200, 200)]
    norms = np.linalg.norm(vecs, axis=1)
    iu = np.triu_indices(12, 1)
    exact = np.array([llmdcos_exact(vecs[a], vecs[b]) for a, b in zip(*iu)])

    def estimates(seed):
        return llmdcos(np.stack([sketch_dense(v, 0, k, seed, shapes) for v in vecs]), norms)

    est = estimates(0)
    err = est[iu] - exact
    # 4 standard deviations of the estimator: variance about (cos² + 1)(1/k + (G - 1)/n), the
    # second term from the G rows of a group that always share a column's bucket
    bound = 4 * np.sqrt(2 * (1 / k + (GROUP_ROWS - 1) / vecs.shape[1]))
    assert np.abs(err).max() < bound
    other_hashes = [(estimates(seed)[iu] - exact).mean() for seed in range(1, 9)]
    assert abs(err.mean()) < 3 * np.std(other_hashes)
    diag = np.diag(est)  # a vector with itself: 1 up to the sketch's error, on both sides of 1
    assert np.abs(diag - 1).max() < bound and diag.max() > 1.0 > diag.min()


def test_per_matrix_sketch_equals_the_definition():
    """The scorer's path (per matrix, a batch at a time, indices from row and column hashes)
    equals the sketch written from the hash's definition over the whole layer vector."""
    from actpat.sketch import LayerHasher, sketch_into

    shapes = ((3, 4), (130, 21), (64, 16))  # partial strips and column blocks; whole ones
    rng = np.random.default_rng(0)
    mats = [torch.tensor(rng.random((2, *s)), dtype=torch.float32) for s in shapes]  # a batch of 2
    hasher = LayerHasher(shapes, 8, seed=0)
    acc = torch.zeros(2, 8)
    for j, m in enumerate(mats):
        sketch_into(acc, m, hasher.codes(1, j, "cpu"))
    got = acc.numpy()
    for b in range(2):
        want = sketch_dense(np.concatenate([m[b].numpy().ravel() for m in mats]), layer=1, k=8, seed=0, shapes=shapes)
        np.testing.assert_allclose(got[b], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())  # signed sums cancel


def test_estimate_is_unbiased_over_random_hashes():
    """The estimator's guarantee is over the choice of hash (40 seeds here); the workflow uses one
    fixed hash, whose error the next tests and benchmarks/sketch_error.py measure."""
    rng = np.random.default_rng(0)
    a, b = rng.pareto(2.0, 20_000), rng.pareto(2.0, 20_000)
    exact = llmdcos_exact(a, b)
    ests = [llmdcos(np.stack([sketch_dense(a, 0, 512, s, [(160, 125)]), sketch_dense(b, 0, 512, s, [(160, 125)])]),
                    np.array([np.linalg.norm(a), np.linalg.norm(b)]))[0, 1] for s in range(40)]
    assert np.mean(ests) == pytest.approx(exact, abs=3 * np.std(ests) / np.sqrt(40) + 1e-3)


@pytest.mark.slow
def test_estimate_matches_exact_llmdcos_on_the_default_model(smollm2):
    """Full score vectors of 8 real samples (2 per domain-like text), 4 layers: every estimate
    within 0.02 of the exact value, 99% at least."""
    from actpat.decoder import weight_layout
    from actpat.scoring import ShardScorer
    from conftest import scoring
    from actpat.sources import load_documents

    model, tokenizer = smollm2
    layout = weight_layout(model)
    texts = []
    for name in ("python-stdlib", "lee-news", "spdx-licenses", "shakespeare"):
        docs = [d for d in load_documents({"source": "packaged", "name": name}) if len(d.text) > 2000]
        texts += [docs[3].text, docs[7].text]
    layers = [2, 10, 20, 28]
    full = {i: [] for i in layers}
    sketches, norms = [], []
    scorer = ShardScorer(model, layout, scoring())
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids[:, 200:264]
        for layer in scorer.sums:  # so that the sums hold this sample's |s| alone
            for acc in layer:
                acc.zero_()
        res = scorer.score(ids)
        for i in layers:
            full[i].append(np.concatenate([acc.numpy().ravel() for acc in scorer.sums[i]]))
        sketches.append(res.sketch)
        norms.append(np.sqrt((res.l2**2).sum(axis=1)))
    sketches, norms = np.stack(sketches), np.stack(norms)
    errors = []
    for i in layers:
        est = llmdcos(sketches[:, i], norms[:, i])
        for x in range(len(texts)):
            for y in range(x + 1, len(texts)):
                errors.append(est[x, y] - llmdcos_exact(full[i][x], full[i][y]))
    errors = np.asarray(errors)
    assert np.quantile(np.abs(errors), 0.99) < 0.02, np.abs(errors).max()
    # at the one fixed hash the workflow uses, the errors are not systematically of one sign
    assert abs(errors.mean()) < 3 * errors.std() / np.sqrt(len(errors)) + 1e-3
