"""The statistics every reduction shares: bootstrap resampling, percentile intervals, rank
correlations with intervals. One place, so that every number in the reports is computed alike."""

from __future__ import annotations

import warnings

import numpy as np

LEVEL = 0.95


def interval(values, level: float = LEVEL) -> list[float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; NaN when all are)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).any():
        return [float("nan"), float("nan")]
    lo, hi = np.nanquantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def resample(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) indices of ``n_boot`` bootstrap resamples of ``n`` items."""
    return rng.integers(0, n, size=(n_boot, n))


def perplexity(nll: np.ndarray, count: np.ndarray) -> float:
    """exp(Σ NLL / Σ predicted tokens) of windows' summed NLL and token counts."""
    return float(np.exp(nll.sum() / count.sum()))


def bootstrap_perplexity(nll: np.ndarray, count: np.ndarray, n_boot: int, seed: int) -> list[float]:
    """The interval of the perplexity over windows resampled."""
    idx = resample(len(nll), n_boot, np.random.default_rng(seed))
    return interval(np.exp(nll[idx].sum(1) / count[idx].sum(1)))


def spearman(x, y) -> tuple[float, float]:
    """Spearman's rho and its p-value; NaN where it is undefined (constant input, n < 3)."""
    from scipy.stats import spearmanr

    if len(x) < 3:
        return float("nan"), float("nan")
    with warnings.catch_warnings():  # a constant input gives nan, reported as such
        warnings.simplefilter("ignore")
        res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def spearman_with_ci(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    """Spearman's rho of paired values with a bootstrap interval that resamples the pairs."""
    rho, p = spearman(x, y)
    boots = [spearman(x[idx], y[idx])[0] for idx in resample(len(y), n_boot, rng)]
    return {"rho": rho, "p_value": p, "ci95": interval(boots), "n_pairs": int(len(y))}


# ----------------------------------------------------------------------------------------------
# When a statistic is defined

# The smallest sample a bootstrap interval (and so a verdict) is computed from. With n items, a
# resample repeats a single item with probability n**(1 - n): 1/2, 1/9, 1/64 for n = 2, 3, 4. Up to
# n = 3 that is more than the 2.5% tail of a 95% interval, so the interval's bound is a degenerate
# resample (the interval of one observation, [x, x], is the extreme case). Below this n a verdict
# is "undefined (n too small)", never "yes" or "no".
MIN_N = 4


def undefined_because(**counts: int) -> str | None:
    """Why a verdict is undefined: the first count below MIN_N (``n_samples=3`` → "n_samples = 3 <
    4"), or None when every count is large enough."""
    for name, n in counts.items():
        if n < MIN_N:
            return f"n too small: {name.replace('_', ' ')} = {n} < {MIN_N}"
    return None


# ----------------------------------------------------------------------------------------------
# Dependent data


def clustered_standard_error(values, clusters) -> float | None:
    """Standard error of the mean of ``values`` whose observations are independent only between
    ``clusters`` (items cut from one evaluation window share its text): the cluster-robust
    (sandwich) estimate with the usual G/(G-1) correction,

        se² = G/(G-1) · Σ_g (Σ_{i in g} (x_i - x̄))² / n².

    With one observation per cluster it is the textbook std(ddof=1)/√n; with clusters of equal
    size, the standard error of the mean of the cluster means. ``None`` under two clusters (no
    spread between them to estimate it from)."""
    x = np.asarray(values, dtype=np.float64)
    labels = np.asarray(clusters)
    if labels.shape != x.shape:
        raise ValueError(f"{len(x)} values but {len(labels)} cluster labels")
    _, g = np.unique(labels, return_inverse=True)
    n, n_clusters = len(x), int(g.max()) + 1 if len(x) else 0
    if n_clusters < 2:
        return None
    totals = np.bincount(g, weights=x - x.mean(), minlength=n_clusters)
    return float(np.sqrt(n_clusters / (n_clusters - 1) * np.sum(totals ** 2)) / n)


def multiplicities(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) how often each of n items is drawn in each bootstrap resample (a resample of
    the items themselves, expressed as counts so that pair statistics can be rebuilt from them)."""
    return np.stack([np.bincount(idx, minlength=n) for idx in resample(n, n_boot, rng)])


def permutation_p(observed: float, null: np.ndarray) -> float:
    """One-sided permutation p-value P(null >= observed), counting the observed arrangement
    (Phipson & Smyth 2010); null replicates that are undefined (NaN) are left out. NaN when the
    observed value is undefined."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or len(null) == 0:
        return float("nan")
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def _spearman_weighted(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Spearman's rho of the sample in which observation p appears w[p] times (midranks of the
    expanded sample). The definition, kept as the reference of ``_spearman_weighted_many``."""
    keep = w > 0
    return spearman(np.repeat(x[keep], w[keep]), np.repeat(y[keep], w[keep]))[0]


def _midranks_weighted(v: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, n): the midrank each observation of ``v`` has in the sample that repeats observation p
    ``weights[b, p]`` times: (weight of smaller values) + (weight of equal values + 1) / 2."""
    order = np.argsort(v, kind="stable")
    vs = v[order]
    new_group = np.r_[True, vs[1:] != vs[:-1]]
    group_of = np.cumsum(new_group) - 1
    tied = np.add.reduceat(weights[:, order].astype(np.float64), np.flatnonzero(new_group), axis=1)
    mid = np.cumsum(tied, axis=1) - tied + (tied + 1) / 2
    ranks = np.empty(weights.shape, dtype=np.float64)
    ranks[:, order] = mid[:, group_of]
    return ranks


def _pearson_weighted(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) Pearson's r of rows of ``a`` and ``b`` with observation weights; NaN where a side is
    constant or the weighted sample has fewer than 3 observations (as ``spearman``)."""
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        da = a - (weights * a).sum(1, keepdims=True) / total[:, None]
        db = b - (weights * b).sum(1, keepdims=True) / total[:, None]
        r = (weights * da * db).sum(1) / np.sqrt((weights * da * da).sum(1) * (weights * db * db).sum(1))
    r[total < 3] = np.nan
    return np.clip(r, -1.0, 1.0)


def _spearman_weighted_many(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``_spearman_weighted`` for every row of ``weights`` (B, n) at once, without expanding the
    samples: equal to it up to float rounding (tested)."""
    weights = np.asarray(weights, dtype=np.float64)
    return _pearson_weighted(_midranks_weighted(x, weights), _midranks_weighted(y, weights), weights)


def dyadic_spearman(x: np.ndarray, y: np.ndarray, first: np.ndarray, second: np.ndarray, n_units: int, n_boot: int,
                    rng: np.random.Generator, complete: bool | None = None) -> dict:
    """Spearman's rho between two measures of pairs of units (texts) that share units.

    Pairs sharing a text are not independent, so the interval resamples texts: a resample draws
    texts with replacement and keeps every pair among the drawn texts, a pair counted as often as
    the product of its texts' draws. The p-value (one-sided, rho > 0) permutes the text labels of
    ``y`` when the pairs form a complete matrix (a Mantel test); otherwise it is the share of text
    resamples with rho <= 0. The p-value that treats pairs as independent is kept for comparison."""
    rho, p_independent = spearman(x, y)
    counts = multiplicities(n_units, n_boot, rng)
    vectorised = len(x) > 0 and np.isfinite(x).all() and np.isfinite(y).all()  # else scipy's NaN handling, one by one
    if vectorised:
        boots = _spearman_weighted_many(x, y, counts[:, first] * counts[:, second])
    else:
        boots = np.asarray([_spearman_weighted(x, y, c[first] * c[second]) for c in counts])
    if complete is None:
        complete = len(x) == n_units * (n_units - 1) // 2 and len({(min(a, b), max(a, b)) for a, b in zip(first, second)}) == len(x)
    if complete:
        perms = np.stack([rng.permutation(n_units) for _ in range(n_boot)])
        if vectorised:  # a relabelling only rearranges y, so its ranks are y's ranks rearranged alike
            from scipy.stats import rankdata

            ranks = np.full((n_units, n_units), np.nan)
            ranks[first, second] = ranks[second, first] = rankdata(y)
            ones = np.ones((n_boot, len(x)))
            null = _pearson_weighted(np.broadcast_to(rankdata(x), ones.shape), ranks[perms[:, first], perms[:, second]], ones)
        else:
            matrix = np.full((n_units, n_units), np.nan)
            matrix[first, second] = matrix[second, first] = y
            null = np.asarray([spearman(x, matrix[perm[first], perm[second]])[0] for perm in perms])
        p, method = permutation_p(rho, null), "Mantel permutation of text labels (one-sided, rho > 0)"
    else:
        finite = boots[np.isfinite(boots)]
        p = float((1 + np.sum(finite <= 0)) / (1 + len(finite))) if np.isfinite(rho) and len(finite) else float("nan")
        method = "share of text resamples with rho <= 0 (one-sided)"
    return {"rho": rho, "ci95": interval(boots), "p_value": p, "p_method": method,
            "p_value_independent_pairs": p_independent, "n_pairs": int(len(x)), "n_texts": int(n_units),
            "interval": "bootstrap over texts (pairs among the drawn texts)"}
