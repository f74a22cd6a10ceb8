"""Reductions against hand computations on small synthetic stores."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from actpat.findings import finding2, finding3, layer_range
from actpat.models import WeightLayout
from actpat.reduce import density, domain_means, mass_share, similarity, _hist
from actpat.scoring import SampleScores
from actpat.store import StoreError, write_scores

LAYOUT = WeightLayout("model.layers", 4, ("a", "b"), ((2, 3), (3, 2)))
THRESHOLDS = (0.5, 2.0)
MULTIPLES = (1.0, 3.0)


def _sample_scores(rng, n):
    """n samples of per-weight scores: list of (layer, matrix) arrays."""
    return [[[rng.exponential(1.0, s) for s in LAYOUT.shapes] for _ in range(LAYOUT.n_layers)] for _ in range(n)]


def _write(path, scores, domain, ids, identity_sketch=True):
    import torch

    results = []
    for per_layer in scores:
        flat = [np.concatenate([m.ravel() for m in layer]) for layer in per_layer]
        results.append(SampleScores(
            target_value=1.0, target_token=0,
            l1=np.asarray([[m.sum() for m in layer] for layer in per_layer]),
            l2=np.asarray([[np.sqrt((m**2).sum()) for m in layer] for layer in per_layer]),
            above=np.asarray([[[(m > t).sum() for t in THRESHOLDS] for m in layer] for layer in per_layer]),
            above_rel=np.asarray([[[(m > k * np.mean(np.concatenate([x.ravel() for lay in per_layer for x in lay]))).sum()
                                     for k in MULTIPLES] for m in layer] for layer in per_layer]),
            zeros=np.zeros((4, 2), dtype=np.int64),
            sketch=np.stack(flat).astype(np.float32),  # identity "sketch": estimates are exact
        ))
    sums = [[torch.tensor(sum(s[i][j] for s in scores), dtype=torch.float32) for j in range(2)] for i in range(4)]
    samples = xr.Dataset({"doc_id": ("sample", np.asarray(ids, dtype=object)), "offset": ("sample", np.zeros(len(ids), dtype=np.int64))},
                         coords={"sample": np.asarray([f"{domain}:{i}" for i in ids], dtype=object)})
    attrs = {"model": "toy", "checkpoint_sha256": "x", "seed": 1, "seq_len": 8, "target": "max_logit", "dtype": "float32",
             "sketch_size": 12, "sketch_seed": 0, "sketch_hash_version": 1, "domain": domain, "shard": 0, "code_version": "t"}
    write_scores(path, LAYOUT, sums, samples, results, THRESHOLDS, attrs, MULTIPLES)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    x, y = _sample_scores(rng, 4), _sample_scores(rng, 4)
    _write(root / "x0.zarr", x[:2], "x", ["d0", "d1"])
    _write(root / "x1.zarr", x[2:], "x", ["d2", "d3"])
    _write(root / "xall.zarr", x, "x", ["d0", "d1", "d2", "d3"])
    _write(root / "y0.zarr", y, "y", ["e0", "e1", "e2", "e3"])
    return root, x, y


def test_density_by_hand(toy):
    root, x, _ = toy
    ds = density([root / "x0.zarr", root / "x1.zarr"], mass_shares=[0.5])
    for i in range(4):
        mean = [sum(s[i][j] for s in x) / 4 for j in range(2)]
        for t_idx, t in enumerate(THRESHOLDS):
            assert list(ds["active_abs"].values[t_idx, i]) == [(m > t).sum() for m in mean]
        model_mean = sum(s[k][j].sum() for s in x for k in range(4) for j in range(2)) / 4 / 48
        assert list(ds["active_rel"].values[0, i]) == [(m > model_mean).sum() for m in mean]
        assert list(ds["active_rel"].values[1, i]) == [(m > 3 * model_mean).sum() for m in mean]
        flat = np.sort(np.concatenate([m.ravel() for m in mean]))[::-1]
        k = np.searchsorted(np.cumsum(flat), 0.5 * flat.sum()) + 1  # weights needed for half the mass
        assert abs(ds["mass_share"].values[0, i] - k / 12) <= 1 / 12
        for t_idx, t in enumerate(THRESHOLDS):
            want = [sum((m > t).sum() for m in s[i]) / 12 for s in x]
            np.testing.assert_allclose(ds["sample_share_abs"].values[:, i, t_idx], want)
        for k_idx, k in enumerate(MULTIPLES):
            want = [sum((m > k * np.concatenate([v.ravel() for lay in s for v in lay]).mean()).sum() for m in s[i]) / 12 for s in x]
            np.testing.assert_allclose(ds["sample_share_rel"].values[:, i, k_idx], want)
    assert ds.attrs["n_samples"] == 4 and ds.attrs["n_shards"] == 2


def test_density_is_shard_count_invariant(toy):
    root, _, _ = toy
    two = density([root / "x0.zarr", root / "x1.zarr"], [0.5, 0.9])
    one = density([root / "xall.zarr"], [0.5, 0.9])
    for v in ("active_abs", "active_rel", "sample_share_abs", "sample_share_rel"):
        np.testing.assert_array_equal(two[v].values, one[v].values)
    # the stores hold float32 sums: summing 2 shards rounds differently from summing 4 samples at once
    np.testing.assert_allclose(two["mass_share"].values, one["mass_share"].values, rtol=1e-5)


def test_mixing_domains_or_duplicate_samples_is_refused(toy):
    root, _, _ = toy
    with pytest.raises(StoreError, match="domain 'y' differs"):
        density([root / "x0.zarr", root / "y0.zarr"], [0.5])
    with pytest.raises(StoreError, match="also appear in another shard"):
        density([root / "x0.zarr", root / "xall.zarr"], [0.5])


def test_mass_share_against_sorting():
    rng = np.random.default_rng(1)
    v = rng.pareto(1.5, 100_000)
    c, m = _hist(v)
    srt = np.sort(v)[::-1]
    for q in (0.5, 0.9):
        exact = (np.searchsorted(np.cumsum(srt), q * srt.sum()) + 1) / len(v)
        assert mass_share(c, m, len(v), q) == pytest.approx(exact, rel=0.02)


def test_similarity_and_domain_means_by_hand(toy):
    root, x, y = toy
    sim = similarity([root / "x0.zarr", root / "x1.zarr", root / "y0.zarr"])
    vecs = [np.concatenate([m.ravel() for m in s[2]]) for s in x + y]  # layer 2
    cos = lambda a, b: (a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    np.testing.assert_allclose(sim["llmdcos"].values[2, 1, 6], cos(vecs[1], vecs[6]), rtol=1e-5)
    labels = sim["domain_a"].values
    means = domain_means(sim["llmdcos"].values, labels, ["x", "y"], "all")
    want_xx = np.mean([cos(vecs[a], vecs[b]) for a in range(4) for b in range(4) if a != b])
    want_xy = np.mean([cos(vecs[a], vecs[b]) for a in range(4) for b in range(4, 8)])
    assert means[2, 0, 0] == pytest.approx(want_xx, rel=1e-5)
    assert means[2, 0, 1] == pytest.approx(want_xy, rel=1e-5)
    paper = domain_means(sim["llmdcos"].values, labels, ["x", "y"], "paper")
    assert paper[2, 0, 0] == pytest.approx(np.mean([cos(vecs[0], vecs[2]), cos(vecs[1], vecs[3])]), rel=1e-5)
    assert paper[2, 0, 1] == pytest.approx(np.mean([cos(vecs[i], vecs[4 + i]) for i in range(4)]), rel=1e-5)


def _toy_similarity(gram, labels):
    ids = np.arange(len(labels)).astype(str).astype(object)
    return xr.Dataset({"llmdcos": (("layer", "sample_a", "sample_b"), gram)},
                      coords={"sample_a": ids, "sample_b": ids, "domain_a": ("sample_a", labels), "domain_b": ("sample_b", labels)})


def test_finding2_by_hand():
    # 4 layers, 2 domains x 2 samples; same-domain pairs 0.8 everywhere; cross 0.6 shallow, 0.2 deep
    labels = np.asarray(["x", "x", "y", "y"], dtype=object)
    gram = np.zeros((4, 4, 4))
    for layer in range(4):
        cross = 0.6 if layer < 2 else 0.2
        for a in range(4):
            for b in range(4):
                gram[layer, a, b] = 1.0 if a == b else (0.8 if labels[a] == labels[b] else cross)
    f = finding2(_toy_similarity(gram, labels), ["x", "y"], np.arange(0, 2), np.arange(2, 4), n_boot=50)
    # gap shallow = 0.8 - 0.6, deep = 0.8 - 0.2: drop 0.4, no variance
    assert f["value"] == pytest.approx(0.4)
    assert f["ci95"] == pytest.approx([0.4, 0.4]) and f["holds"]


def test_finding3_by_hand():
    labels = np.asarray(["a", "b", "c", "d"], dtype=object)
    rel = np.array([[1, .9, .5, .1], [.9, 1, .4, .2], [.5, .4, 1, .3], [.1, .2, .3, 1.]])
    gram = np.stack([np.ones((4, 4)) * 0.5, rel.copy()])  # layer 0 flat, layer 1 equal to relevance
    f = finding3(_toy_similarity(gram, labels), list(labels), rel, np.arange(0, 1), np.arange(1, 2), n_perm=200)
    assert f["value"] == pytest.approx(1.0) and f["n_pairs"] == 6
    assert np.isnan(f["shallow_rho"])  # constant shallow similarity has no rank correlation


def test_layer_range():
    assert list(layer_range(0.5, -2, 30)) == list(range(15, 28))
    assert list(layer_range(0.0, 0.5, 30)) == list(range(0, 15))
    assert list(layer_range(20, -2, 32)) == list(range(20, 30))
    with pytest.raises(ValueError):
        layer_range(0.9, 0.1, 30)
