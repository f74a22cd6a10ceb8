"""The shared statistics: intervals that cover the truth as often as they claim, resampling that
respects dependence between pairs, permutation p-values, and verdicts only where n allows."""

from __future__ import annotations

import numpy as np
import pytest

from actpat.stats import MIN_N, clustered_standard_error, dyadic_spearman, interval, permutation_p, resample, spearman, spearman_with_ci, undefined_because


def test_percentile_interval_covers_the_mean_about_95_percent_of_the_time():
    """Repeated samples from a known distribution: the bootstrap interval of the mean contains the
    true mean in about 95% of them (a wrong quantile level or a wrong resample would miss)."""
    rng = np.random.default_rng(0)
    hits = 0
    reps = 300
    for _ in range(reps):
        x = rng.exponential(1.0, 60)  # true mean 1
        lo, hi = interval(x[resample(len(x), 400, rng)].mean(1))
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / reps <= 0.99, hits / reps


def test_interval_of_undefined_replicates_is_undefined():
    assert all(np.isnan(interval([np.nan, np.nan])))
    assert interval([1.0, np.nan, 3.0] * 10) == pytest.approx([1.0, 3.0])


def test_minimum_n_is_where_degenerate_resamples_leave_the_tail():
    """n**(1 - n) is the chance that a resample repeats one item: above the 2.5% tail up to n = 3."""
    assert all(n ** (1 - n) > 0.025 for n in range(2, MIN_N)) and MIN_N ** (1 - MIN_N) < 0.025
    assert undefined_because(samples=3) == "n too small: samples = 3 < 4"
    assert undefined_because(samples=4, windows=16) is None


def test_permutation_p_counts_the_observed_arrangement():
    assert permutation_p(5.0, np.array([1.0, 2.0, 3.0])) == pytest.approx(1 / 4)
    assert permutation_p(2.0, np.array([1.0, 2.0, 3.0, np.nan])) == pytest.approx(3 / 4)
    assert np.isnan(permutation_p(np.nan, np.array([1.0])))


def _dyadic(n_texts: int, seed: int, effect: float):
    """All pairs of n texts; each text has a latent value; the human score and the measure of a
    pair both depend on its two texts (shared texts make pairs dependent)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=n_texts)
    u = effect * t + rng.normal(size=n_texts)
    first, second = np.triu_indices(n_texts, 1)
    human = t[first] + t[second] + 0.3 * rng.normal(size=len(first))
    measure = u[first] + u[second] + 0.3 * rng.normal(size=len(first))
    return measure, human, first, second


def test_text_resampling_widens_the_interval_of_dependent_pairs():
    """With 15 texts in 105 pairs the information is in the texts: resampling pairs as if
    independent gives a far narrower interval than resampling texts."""
    x, y, first, second = _dyadic(15, seed=1, effect=0.5)
    rng = np.random.default_rng(0)
    texts = dyadic_spearman(x, y, first, second, 15, 400, rng)
    pairs = spearman_with_ci(x, y, 400, rng)
    assert texts["rho"] == pytest.approx(spearman(x, y)[0])
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(texts["ci95"]) > 1.5 * width(pairs["ci95"])
    assert texts["p_method"].startswith("Mantel")  # all pairs among the texts: label permutation


def test_dyadic_p_value_is_calibrated_under_the_null():
    """No relation between the measure and the human scores: the Mantel p-value is below 0.05 in
    about 5% of data sets (pairs treated as independent would reject far more often)."""
    rejections, naive = 0, 0
    reps = 60
    for seed in range(reps):
        x, y, first, second = _dyadic(12, seed=100 + seed, effect=0.0)
        res = dyadic_spearman(x, y, first, second, 12, 200, np.random.default_rng(seed))
        rejections += res["p_value"] < 0.05
        naive += res["p_value_independent_pairs"] / 2 < 0.05 and res["rho"] > 0
    assert rejections / reps <= 0.15, rejections
    assert naive > rejections


def test_incomplete_pair_sets_use_the_text_bootstrap_p():
    x, y, first, second = _dyadic(12, seed=3, effect=2.0)
    keep = np.arange(0, len(first), 2)
    res = dyadic_spearman(x[keep], y[keep], first[keep], second[keep], 12, 300, np.random.default_rng(0))
    assert res["p_method"].startswith("share of text resamples") and res["p_value"] < 0.05 and res["ci95"][0] > 0


def test_weighted_spearman_of_many_resamples_equals_expanding_each_sample():
    """The vectorised resample statistic against its definition: scipy's Spearman of the sample
    expanded by the weights (ties in both measures, zero weights, a constant resample)."""
    from scipy.stats import spearmanr

    from actpat.stats import _spearman_weighted_many

    rng = np.random.default_rng(5)
    x = rng.integers(0, 6, size=40).astype(float)  # many ties
    y = np.round(x + rng.normal(size=40), 1)
    weights = rng.integers(0, 3, size=(50, 40)) * rng.integers(0, 2, size=(50, 40))
    weights[0] = 0
    weights[0, :2] = [2, 1]  # 3 observations of two values
    weights[1] = 0
    weights[1, 7] = 5  # one observation, repeated: constant
    got = _spearman_weighted_many(x, y, weights)
    for b, w in enumerate(weights):
        keep = w > 0
        xs, ys = np.repeat(x[keep], w[keep]), np.repeat(y[keep], w[keep])
        want = spearmanr(xs, ys).statistic if len(xs) >= 3 and np.ptp(xs) and np.ptp(ys) else np.nan
        assert got[b] == pytest.approx(want, abs=1e-12, nan_ok=True), b


def test_dyadic_spearman_equals_resampling_texts_one_by_one():
    """The text bootstrap and the Mantel null computed at once equal the same draws done one
    resample at a time with scipy (the definition)."""
    from scipy.stats import spearmanr

    x, y, first, second = _dyadic(14, seed=9, effect=0.7)
    x = np.round(x, 1)  # ties
    res = dyadic_spearman(x, y, first, second, 14, 300, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    counts = np.stack([np.bincount(i, minlength=14) for i in rng.integers(0, 14, size=(300, 14))])
    boots = []
    for c in counts:
        w = c[first] * c[second]
        keep = w > 0
        xs, ys = np.repeat(x[keep], w[keep]), np.repeat(y[keep], w[keep])
        boots.append(spearmanr(xs, ys).statistic if len(xs) >= 3 else np.nan)
    assert res["ci95"] == pytest.approx(list(np.nanquantile(boots, [0.025, 0.975])), abs=1e-12)
    matrix = np.zeros((14, 14))
    matrix[first, second] = matrix[second, first] = y
    rho = spearmanr(x, y).statistic
    null = np.array([spearmanr(x, matrix[p[first], p[second]]).statistic for p in (rng.permutation(14) for _ in range(300))])
    assert res["p_value"] == (1 + np.sum(null >= rho - 1e-12)) / 301
    assert res["p_method"].startswith("Mantel")


def test_dyadic_spearman_of_no_pairs_is_undefined():
    res = dyadic_spearman(np.array([]), np.array([]), np.array([], int), np.array([], int), 3, 20, np.random.default_rng(0))
    assert np.isnan(res["rho"]) and all(np.isnan(res["ci95"]))


def sandwich_se(values, clusters) -> float:
    """Reference: the mean as least squares on a constant, its cluster-robust covariance written out
    as bread · meat · bread with the G/(G-1) correction (the econometrics textbook's CR1 for K = 1)."""
    y = np.asarray(values, dtype=float)
    X = np.ones((len(y), 1))
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    u = y - X @ beta
    bread = np.linalg.inv(X.T @ X)
    labels = sorted(set(clusters))
    meat = sum((X[[c == g for c in clusters]].T @ u[[c == g for c in clusters]])[:, None]
               @ (X[[c == g for c in clusters]].T @ u[[c == g for c in clusters]])[None, :] for g in labels)
    G = len(labels)
    return float(np.sqrt(G / (G - 1) * (bread @ meat @ bread)[0, 0]))


def test_clustered_standard_error_is_the_sandwich_estimate_and_reduces_to_the_textbook_cases():
    rng = np.random.default_rng(3)
    x = rng.random(37) < 0.4
    g = rng.integers(0, 9, 37)
    assert clustered_standard_error(x, g) == pytest.approx(sandwich_se(x, list(g)), rel=1e-12)
    # one item per cluster: the harness's std(ddof=1)/sqrt(n)
    assert clustered_standard_error(x, np.arange(37)) == pytest.approx(np.std(x, ddof=1) / np.sqrt(37), rel=1e-12)
    # clusters of equal size: the standard error of the mean of the cluster means
    y = rng.normal(size=(6, 4))
    labels = np.repeat(np.arange(6), 4)
    assert clustered_standard_error(y.ravel(), labels) == pytest.approx(np.std(y.mean(1), ddof=1) / np.sqrt(6), rel=1e-12)
    # labels of any kind, in any order
    assert clustered_standard_error(y.ravel(), [f"w{k}" for k in labels[::-1]]) == pytest.approx(
        clustered_standard_error(y.ravel()[::-1], labels))
    assert clustered_standard_error([1.0, 0.0, 1.0], [0, 0, 0]) is None  # one cluster: no spread to estimate from
    assert clustered_standard_error([], []) is None
    with pytest.raises(ValueError, match="cluster labels"):
        clustered_standard_error([1.0, 0.0], [0])
    with pytest.raises(ValueError, match="cluster labels"):
        clustered_standard_error([1.0], [])


def test_clustered_standard_error_matches_the_spread_of_means_of_dependent_items():
    """Items that share a window's difficulty: over many draws the clustered standard error is, on
    average, the true spread of the mean, while std/sqrt(n), which takes the items as independent,
    is far too small (it would fail this test)."""
    rng = np.random.default_rng(4)
    windows, per = 16, 8
    labels = np.repeat(np.arange(windows), per)
    means, clustered, naive = [], [], []
    for _ in range(2000):
        p = np.clip(rng.normal(0.3, 0.2, windows), 0, 1)  # each window's own difficulty
        x = (rng.random((windows, per)) < p[:, None]).ravel().astype(float)
        means.append(x.mean())
        clustered.append(clustered_standard_error(x, labels))
        naive.append(np.std(x, ddof=1) / np.sqrt(x.size))
    true_se = np.std(means)
    assert np.mean(clustered) == pytest.approx(true_se, rel=0.08)
    assert np.mean(naive) < 0.75 * true_se
