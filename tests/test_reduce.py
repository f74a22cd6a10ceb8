"""Reductions against hand computations on small synthetic stores."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from actpat.findings import finding2, finding3
from actpat.settings import layer_range
from actpat.decoder import WeightLayout
from actpat.reduce import density, domain_means, mass_share, similarity, _hist
from actpat.scoring import SampleScores
from actpat.sketch import HASH_VERSION
from actpat.errors import StoreError
from actpat.store import write_scores

LAYOUT = WeightLayout("model.layers", 4, ("a", "b"), ((2, 3), (3, 2)))
THRESHOLDS = (0.5, 2.0)
MULTIPLES = (1.0, 3.0)


def _sample_scores(rng, n):
    """n samples of per-weight scores: list of (layer, matrix) arrays."""
    return [[[rng.exponential(1.0, s) for s in LAYOUT.shapes] for _ in range(LAYOUT.n_layers)] for _ in range(n)]


def _write(path, scores, domain, ids, identity_sketch=True, hash_version=HASH_VERSION):
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
    attrs = {"model": "toy", "architecture": "ToyForCausalLM", "checkpoint_sha256": "x", "seed": 1, "seq_len": 8, "target": "max_logit", "dtype": "float32",
             "sketch_size": 12, "sketch_seed": 0, "sketch_hash_version": hash_version, "domain": domain, "shard": 0, "code_version": "t"}
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


def test_stores_of_an_older_sketch_hash_are_refused_with_the_advice_to_rescore(tmp_path):
    rng = np.random.default_rng(2)
    _write(tmp_path / "old.zarr", _sample_scores(rng, 2), "x", ["d0", "d1"], hash_version=HASH_VERSION - 1)
    with pytest.raises(StoreError, match=rf"hash version {HASH_VERSION - 1}, this code version {HASH_VERSION}; rescore it"):
        density([tmp_path / "old.zarr"], [0.5])


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


def _toy_similarity(gram, labels, docs=None):
    ids = np.arange(len(labels)).astype(str).astype(object)
    docs = ids if docs is None else np.asarray(docs, dtype=object)
    return xr.Dataset({"llmdcos": (("layer", "sample_a", "sample_b"), gram)},
                      coords={"sample_a": ids, "sample_b": ids, "domain_a": ("sample_a", labels), "domain_b": ("sample_b", labels),
                              "doc_a": ("sample_a", docs), "doc_b": ("sample_b", docs)})


def _two_domain_gram(n: int, seed: int, deep_cross: float, noise: float = 0.05):
    """4 layers (0-1 shallow, 2-3 deep), 2 domains of n samples: same-domain 0.8, cross 0.6 in
    shallow and ``deep_cross`` in deep layers, plus noise (symmetric)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(["x"] * n + ["y"] * n, dtype=object)
    gram = np.zeros((4, 2 * n, 2 * n))
    for layer in range(4):
        cross = 0.6 if layer < 2 else deep_cross
        base = np.where(labels[:, None] == labels[None, :], 0.8, cross)
        e = rng.normal(0, noise, base.shape)
        gram[layer] = base + (e + e.T) / 2
        np.fill_diagonal(gram[layer], 1.0)
    return gram, labels


def test_finding2_against_a_hand_computation():
    gram, labels = _two_domain_gram(6, seed=0, deep_cross=0.2)
    f = finding2(_toy_similarity(gram, labels), ["x", "y"], np.arange(0, 2), np.arange(2, 4), n_boot=200)
    same = lambda layers: np.mean([gram[layers].mean(0)[np.ix_(i, i)][~np.eye(6, dtype=bool)].mean()  # noqa: E731
                                   for i in (np.arange(6), np.arange(6, 12))])
    cross = lambda layers: gram[layers].mean(0)[:6, 6:].mean()  # noqa: E731
    want = (same([2, 3]) - cross([2, 3])) - (same([0, 1]) - cross([0, 1]))
    assert f["value"] == pytest.approx(want, rel=1e-9)
    assert f["ci95"][0] < f["value"] < f["ci95"][1] and f["ci95"][1] - f["ci95"][0] > 0.005  # the data vary
    assert f["holds"] is True and f["ci95"][0] > 0.2
    flat = finding2(_toy_similarity(*_two_domain_gram(6, seed=1, deep_cross=0.6)), ["x", "y"], np.arange(0, 2),
                    np.arange(2, 4), n_boot=200)
    assert flat["holds"] is False and flat["ci95"][0] < 0 < flat["ci95"][1]  # no drop: the interval covers 0


def test_finding2_leaves_out_pairs_of_one_document():
    """Two windows of one document are not two independent prompts: such pairs leave the
    same-domain mean, and the count removed is reported."""
    gram, labels = _two_domain_gram(6, seed=2, deep_cross=0.2)
    docs = ["d0", "d0", "d1", "d2", "d3", "d4", "e0", "e1", "e2", "e3", "e4", "e5"]
    gram[:, 0, 1] = gram[:, 1, 0] = 0.99  # windows of one document are near-identical
    with_docs = finding2(_toy_similarity(gram, labels, docs), ["x", "y"], np.arange(0, 2), np.arange(2, 4), n_boot=50)
    assert with_docs["same_document_pairs_removed"] == {"x": 1, "y": 0}
    assert with_docs["same_domain_pairs_used"] == {"x": 14, "y": 15}
    want_same_x = np.mean([gram[2:].mean(0)[a, b] for a in range(6) for b in range(6) if a != b and {a, b} != {0, 1}])
    assert with_docs["same_domain_deep"] == pytest.approx((want_same_x + np.mean(
        [gram[2:].mean(0)[a, b] for a in range(6, 12) for b in range(6, 12) if a != b])) / 2, rel=1e-9)
    assert with_docs["with_same_document_pairs"]["value"] != with_docs["value"]


def test_finding2_is_undefined_below_the_minimum_n():
    gram, labels = _two_domain_gram(3, seed=0, deep_cross=0.2)
    f = finding2(_toy_similarity(gram, labels), ["x", "y"], np.arange(0, 2), np.arange(2, 4), n_boot=50)
    assert f["holds"] is None and "n too small: samples per domain = 3 < 4" in f["undefined"]


def _relevance_case(deep_follows: bool, shallow_follows: bool, n_domains: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.asarray([f"d{i}" for i in range(n_domains)], dtype=object)
    x = rng.random((n_domains, 2))
    rel = 1 - np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))  # relatedness from positions
    noise = rng.random((n_domains, n_domains))
    noise = (noise + noise.T) / 2
    shallow = rel.copy() if shallow_follows else np.full_like(rel, 0.5)
    deep = rel.copy() if deep_follows else noise
    return _toy_similarity(np.stack([shallow, deep]), labels), list(labels), rel


def test_finding3_verdicts():
    """Deep tracks relevance and shallow is flat (the best case for the claim: shallow rho is
    undefined, counted as 0): holds. Deep is noise: does not. Deep and shallow both track it:
    deep does not track it *more*: does not."""
    sim, domains, rel = _relevance_case(deep_follows=True, shallow_follows=False)
    f = finding3(sim, domains, rel, np.arange(0, 1), np.arange(1, 2), n_perm=2000)
    assert f["value"] == pytest.approx(1.0) and f["n_pairs"] == 21 and np.isnan(f["shallow_rho"])
    assert f["mantel_p_value"] < 0.01 and f["difference"] == pytest.approx(1.0) and f["difference_p_value"] < 0.01
    assert f["holds"] is True
    sim, domains, rel = _relevance_case(deep_follows=False, shallow_follows=False)
    f = finding3(sim, domains, rel, np.arange(0, 1), np.arange(1, 2), n_perm=2000)
    assert f["mantel_p_value"] > 0.05 and f["holds"] is False
    sim, domains, rel = _relevance_case(deep_follows=True, shallow_follows=True)
    f = finding3(sim, domains, rel, np.arange(0, 1), np.arange(1, 2), n_perm=2000)
    assert f["mantel_p_value"] < 0.01 and f["difference"] == pytest.approx(0.0) and f["holds"] is False


def test_finding3_is_undefined_with_fewer_than_three_domain_pairs():
    sim, domains, rel = _relevance_case(deep_follows=True, shallow_follows=False, n_domains=2)
    f = finding3(sim, domains, rel, np.arange(0, 1), np.arange(1, 2), n_perm=100)
    assert f["holds"] is None and f["value"] is None and f["mantel_p_value"] is None and "at least 3" in f["undefined"]


def test_layer_range():
    assert list(layer_range(0.5, -2, 31)) == list(range(15, 29))  # floor, like the paper's L // 2
    assert list(layer_range(0.5, -2, 30)) == list(range(15, 28))
    assert list(layer_range(0.0, 0.5, 30)) == list(range(0, 15))
    assert list(layer_range(20, -2, 32)) == list(range(20, 30))
    with pytest.raises(ValueError):
        layer_range(0.9, 0.1, 30)


def test_finding1_verdict_is_undefined_below_the_minimum_n(toy):
    """Two samples in a domain: the interval is made of degenerate resamples; the verdict is
    undefined, never yes or no. Four samples per domain: defined."""
    from actpat.findings import finding1

    root, _, _ = toy
    small = {"x": density([root / "x0.zarr"], [0.5]), "y": density([root / "y0.zarr"], [0.5])}
    f = finding1(small, THRESHOLDS[0], MULTIPLES[0], np.arange(0, 2), np.arange(2, 4), n_boot=50)
    assert f["holds"] is None and f["undefined"] == "n too small: samples per domain = 2 < 4"
    enough = {"x": density([root / "xall.zarr"], [0.5]), "y": density([root / "y0.zarr"], [0.5])}
    f = finding1(enough, THRESHOLDS[0], MULTIPLES[0], np.arange(0, 2), np.arange(2, 4), n_boot=50)
    assert isinstance(f["holds"], bool) and f["undefined"] is None


def test_summary_prints_undefined_verdicts_as_undefined():
    import dataclasses

    from actpat.summary import build_summary
    from conftest import default_settings

    settings = {**dataclasses.asdict(default_settings().summary_job("m")), "code_version": "v"}
    f1 = {"value": 0.7, "ci95": [0.7, 0.7], "spearman_share_vs_layer": -0.5, "n_samples": {"code": 1}, "holds": None,
          "undefined": "n too small: samples per domain = 1 < 4", "absolute_threshold": {"threshold": 2e-6, "value": 1.0}}
    f2 = {"value": float("nan"), "ci95": [None, None], "holds": None, "undefined": "n too small: samples per domain = 1 < 4",
          "same_domain_deep": None, "cross_domain_deep": 0.2, "same_domain_shallow": None, "cross_domain_shallow": 0.3}
    f3 = {"value": None, "n_pairs": 1, "holds": None, "undefined": "n too small: 1 domain pair(s)"}
    findings = {"layers": {"n": 30}, "domains": ["code"], "finding1_density": f1, "finding2_similarity": f2,
                "finding3_relevance": f3}
    text = build_summary(findings, {}, None, settings)
    rows = [line for line in text.splitlines() if line.startswith("| Finding")]
    assert len(rows) == 3 and all("undefined (n too small" in r and "**no**" not in r and "**yes**" not in r for r in rows)
    assert "Verdicts need at least 4 samples per domain" in text
