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
