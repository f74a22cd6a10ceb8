"""The statistics of findings 1–3, each with its uncertainty and a verdict that is "yes", "no", or
undefined when n cannot support it (``actpat.stats.MIN_N``).

* Finding 1 (density falls in deep layers): deep-half over shallow-half activated share, and the
  Spearman correlation of the share with the layer index; bootstrap over samples within domains.
* Finding 2 (cross-domain similarity drops with depth, same-domain does not): the drop
  Δ = (same − cross)_deep − (same − cross)_shallow of mean LLMDcos over all pairs of samples,
  same-domain pairs excluding two windows of one document. The interval resamples samples within
  each domain and rebuilds every pair from the resample: the same samples enter (A, A) and every
  (A, B), so pairs are not resampled independently.
* Finding 3 (deep similarity tracks relevance): Spearman ρ between deep-layer mean LLMDcos and the
  domains' relevance across cross-domain pairs. Domain pairs share domains, so p-values permute the
  domain labels of the relevance matrix (Mantel). The verdict: ρ_deep > 0 with Mantel p < 0.05, and
  deep layers track relevance more than shallow ones: ρ_deep − ρ_shallow > 0 with permutation
  p < 0.05 (an undefined shallow ρ, a flat shallow profile, counts as 0).
"""

from __future__ import annotations

import itertools

import numpy as np
import xarray as xr

from actpat.provenance import REPORTED
from actpat.reduce import domain_means, paper_pairs, valid_pairs
from actpat.stats import MIN_N, interval, multiplicities, permutation_p, spearman, undefined_because

ALPHA = 0.05


def finding1(densities: dict[str, xr.Dataset], threshold: float, multiple: float, shallow, deep, n_boot=1000, seed=0) -> dict:
    """Deep/shallow ratio of the per-sample activated share, scale-free (above ``multiple`` × the
    sample's mean score; the primary statistic) and absolute (above ``threshold``), with bootstrap
    intervals over samples within each domain; and the exact mean-score density ratios under every
    definition (point values)."""
    primary = _finding1_stat(densities, "sample_share_rel", "multiple", multiple, shallow, deep, n_boot, seed)
    absolute = _finding1_stat(densities, "sample_share_abs", "threshold", threshold, shallow, deep, n_boot, seed)
    exact, shares = {}, {}
    for d, ds in densities.items():
        entry = {}
        for t in ds["threshold"].values:
            entry[f"abs>{t:g}"] = _ratio(ds["active_abs_share"].sel(threshold=t).values, shallow, deep)
        for m in ds["multiple"].values:
            entry[f"rel>{m:g}x_mean"] = _ratio(ds["active_rel_share"].sel(multiple=m).values, shallow, deep)
        for q in ds["q"].values:
            entry[f"mass_share_q{q:g}"] = _ratio(ds["mass_share"].sel(q=q).values, shallow, deep)
        exact[d] = entry
    for t in next(iter(densities.values()))["threshold"].values:
        shares[f"{t:g}"] = float(np.mean([ds["active_abs_share"].sel(threshold=t).values.mean() for ds in densities.values()]))
    why = undefined_because(samples_per_domain=min(primary["n_samples"].values()))
    return {
        "claim": "fewer weights are activated in deep layers than in shallow ones",
        "statistic": f"deep/shallow ratio of the per-sample share of weights above {multiple:g} x the sample's mean score (mean over domains)",
        **primary,
        "holds": None if why else bool(primary["ci95"][1] < 1.0),
        "undefined": why,
        "rule": "holds when the 95% interval of the ratio lies below 1",
        "absolute_threshold": {"threshold": float(threshold), **absolute},
        "share_above_absolute_thresholds": shares,
        "exact_mean_score_ratios": exact,
        "n_bootstrap": n_boot,
    }


def _finding1_stat(densities, var, dim, value, shallow, deep, n_boot, seed) -> dict:
    rng = np.random.default_rng(seed)
    per_domain = {d: ds[var].sel({dim: value}, method="nearest").values for d, ds in densities.items()}

    def stats(profiles: list[np.ndarray]) -> tuple[float, float]:
        prof = np.mean(profiles, axis=0)  # (layer,) averaged over domains
        s = prof[shallow].mean()
        ratio = prof[deep].mean() / s if s > 0 else float("nan")
        return ratio, spearman(np.arange(len(prof)), prof)[0]

    point = stats([v.mean(0) for v in per_domain.values()])
    boots = np.asarray([
        stats([v[rng.integers(0, len(v), len(v))].mean(0) for v in per_domain.values()]) for _ in range(n_boot)
    ])
    return {
        "value": float(point[0]),
        "ci95": interval(boots[:, 0]),
        "spearman_share_vs_layer": float(point[1]),
        "spearman_ci95": interval(boots[:, 1]),
        "n_samples": {d: int(v.shape[0]) for d, v in per_domain.items()},
    }


def _ratio(profile: np.ndarray, shallow, deep) -> float:
    s = profile[shallow].mean()
    return float(profile[deep].mean() / s) if s > 0 else float("nan")


def paper_protocol_values(sim: xr.Dataset, domains: list[str]) -> dict[tuple[str, str], np.ndarray]:
    """(layer, pair) LLMDcos for each ordered domain pair under the paper's pairing."""
    gram = sim["llmdcos"].values
    labels = sim["domain_a"].values
    out = {}
    for a, b in itertools.combinations_with_replacement(domains, 2):
        pa, pb = paper_pairs(np.flatnonzero(labels == a), np.flatnonzero(labels == b), same=a == b)
        out[(a, b)] = gram[:, pa, pb]
    return out


def _doc_ids(sim: xr.Dataset) -> np.ndarray | None:
    return sim["doc_a"].values if "doc_a" in sim.coords else None


class _GapStatistic:
    """(same − cross) of mean LLMDcos over a layer range, for any resample of the samples of each
    domain given as multiplicities: a pair of draws (u, v) counts c_u·c_v times, pairs of one
    sample with itself (and, with ``valid``, of one document) never."""

    def __init__(self, gram_mean: np.ndarray, labels: np.ndarray, domains: list[str], valid: np.ndarray):
        self.idx = {d: np.flatnonzero(labels == d) for d in domains}
        self.domains = domains
        self.blocks = {(a, b): gram_mean[np.ix_(self.idx[a], self.idx[b])] for a in domains for b in domains}
        self.valid = {d: valid[np.ix_(self.idx[d], self.idx[d])] for d in domains}

    def __call__(self, counts: dict[str, np.ndarray]) -> float:
        same = []
        for d in self.domains:
            c = counts[d].astype(np.float64)
            w = np.outer(c, c) * self.valid[d]
            same.append((w * self.blocks[(d, d)]).sum() / w.sum() if w.sum() > 0 else np.nan)
        cross = [counts[a] @ self.blocks[(a, b)] @ counts[b] / (counts[a].sum() * counts[b].sum())
                 for a, b in itertools.combinations(self.domains, 2)]
        return float(np.mean(same) - np.mean(cross))


def finding2(sim: xr.Dataset, domains: list[str], shallow, deep, n_boot=1000, seed=0) -> dict:
    gram, labels, docs = sim["llmdcos"].values, sim["domain_a"].values, _doc_ids(sim)
    n = {d: int((labels == d).sum()) for d in domains}
    rng = np.random.default_rng(seed)

    def drop(valid: np.ndarray) -> tuple[float, list[float]]:
        deep_gap = _GapStatistic(gram[deep].mean(0), labels, domains, valid)
        shallow_gap = _GapStatistic(gram[shallow].mean(0), labels, domains, valid)
        ones = {d: np.ones(k) for d, k in n.items()}
        point = deep_gap(ones) - shallow_gap(ones)
        draws = {d: multiplicities(k, n_boot, rng) for d, k in n.items()}
        boots = [deep_gap({d: draws[d][r] for d in domains}) - shallow_gap({d: draws[d][r] for d in domains})
                 for r in range(n_boot)]
        return point, interval(boots)

    independent = valid_pairs(labels, docs)
    value, ci = drop(independent)
    with_same_doc, ci_with_same_doc = drop(valid_pairs(labels, None))
    all_means = domain_means(gram, labels, domains, "all", docs)
    same = np.nanmean([all_means[:, i, i] for i in range(len(domains))], axis=0)  # (layer,)
    off = ~np.eye(len(domains), dtype=bool)
    cross = all_means[:, off].mean(1) if len(domains) > 1 else np.full(len(same), np.nan)
    same_doc_pairs = {d: int((~independent[np.ix_(labels == d, labels == d)] & ~np.eye(n[d], dtype=bool)).sum() // 2)
                      for d in domains}
    paper = domain_means(gram, labels, domains, "paper")
    why = undefined_because(domains=len(domains) + 2, samples_per_domain=min(n.values())) if len(domains) >= 2 else         "needs at least 2 domains"
    usable = {d: int((independent[np.ix_(labels == d, labels == d)]).sum() // 2) for d in domains}
    if not why and min(usable.values()) < 1:
        why = "a domain has no pair of samples from different documents"
    return {
        "claim": "cross-domain LLMDcos falls in deep layers relative to same-domain LLMDcos",
        "statistic": "(same - cross)_deep - (same - cross)_shallow of mean LLMDcos over all sample pairs "
                     "(same-domain pairs from different documents)",
        "value": float(value),
        "ci95": ci,
        "holds": None if why else bool(ci[0] > 0),
        "undefined": why,
        "rule": "holds when the 95% interval of the drop lies above 0; the interval resamples samples within "
                "each domain and rebuilds all pairs",
        "same_domain_shallow": float(same[shallow].mean()),
        "same_domain_deep": float(same[deep].mean()),
        "cross_domain_shallow": float(cross[shallow].mean()),
        "cross_domain_deep": float(cross[deep].mean()),
        "with_same_document_pairs": {"value": float(with_same_doc), "ci95": ci_with_same_doc},
        "same_document_pairs_removed": same_doc_pairs,
        "same_domain_pairs_used": usable,
        "paper_pairing": {
            "same_shallow": float(np.nanmean([paper[shallow, i, i].mean() for i in range(len(domains))])),
            "same_deep": float(np.nanmean([paper[deep, i, i].mean() for i in range(len(domains))])),
            "cross_shallow": float(paper[shallow][:, off].mean()) if len(domains) > 1 else None,
            "cross_deep": float(paper[deep][:, off].mean()) if len(domains) > 1 else None,
        },
        "n_samples": n,
        "n_bootstrap": n_boot,
    }


def finding3(sim: xr.Dataset, domains: list[str], relevance: np.ndarray, shallow, deep, n_perm=10000, seed=0) -> dict:
    means = domain_means(sim["llmdcos"].values, sim["domain_a"].values, domains, "all", _doc_ids(sim))
    iu = np.triu_indices(len(domains), 1)
    deep_sim, shallow_sim = means[deep].mean(0)[iu], means[shallow].mean(0)[iu]
    rel = relevance[iu]
    base = {
        "claim": "deep-layer LLMDcos between domains tracks how related the domains are, more than shallow-layer LLMDcos",
        "relevance": "1 - Jensen-Shannon distance of token unigram distributions of the scored windows",
        "statistic": "Spearman rho(deep-layer mean LLMDcos, relevance) over cross-domain pairs",
        "rule": "holds when rho_deep > 0 with Mantel p < 0.05 and rho_deep - rho_shallow > 0 with permutation p < 0.05 "
                "(domain labels of the relevance matrix permuted; an undefined shallow rho, a flat profile, counts as 0)",
        "n_pairs": int(len(rel)),
        "n_permutations": n_perm,
    }
    if len(rel) < 3:
        return {**base, "value": None, "p_value": None, "mantel_p_value": None, "shallow_rho": None,
                "difference": None, "difference_p_value": None, "holds": None,
                "undefined": f"n too small: {len(rel)} domain pair(s); a rank correlation needs at least 3 (3 domains)"}
    rho_deep, p_deep = spearman(deep_sim, rel)
    rho_shallow, p_shallow = spearman(shallow_sim, rel)
    diff = rho_deep - np.nan_to_num(rho_shallow)
    rng = np.random.default_rng(seed)
    null_deep, null_diff = [], []
    for _ in range(n_perm):
        p = rng.permutation(len(domains))
        r = relevance[p][:, p][iu]
        rd, rs = spearman(deep_sim, r)[0], spearman(shallow_sim, r)[0]
        null_deep.append(rd)
        null_diff.append(rd - np.nan_to_num(rs))
    mantel_p, diff_p = permutation_p(rho_deep, null_deep), permutation_p(diff, null_diff)
    why = None if np.isfinite(rho_deep) else "deep-layer similarity or relevance is constant across domain pairs"
    return {
        **base,
        "value": rho_deep,
        "p_value": p_deep,
        "mantel_p_value": mantel_p,
        "shallow_rho": rho_shallow,
        "shallow_p_value": p_shallow,
        "difference": float(diff),
        "difference_p_value": diff_p,
        "holds": None if why else bool(rho_deep > 0 and mantel_p < ALPHA and diff > 0 and diff_p < ALPHA),
        "undefined": why,
    }


def write_findings(densities, similarity, samples, out_dir, job, log=print) -> dict:
    """The findings job (``job``: ``actpat.settings.AnalysisJob``): read the reductions, compute
    findings 1–3, write findings.json, tidy CSVs and figures."""
    a = job.analysis
    threshold, multiple, n_boot, seed = a.density_threshold, a.density_multiple, a.bootstrap, job.seed
    from pathlib import Path

    from actpat import plots
    from actpat.provenance import code_version
    from actpat.reduce import token_relevance
    from actpat.results import write_json
    from actpat.store import open_reduction, open_samples

    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    dens = {}
    for p in densities:
        ds = open_reduction(p)
        dens[ds.attrs["domain"]] = ds
    sim = open_reduction(similarity).load()
    model = sim.attrs["model"]
    domains = list(dens)
    n_layers = sim.sizes["layer"]
    sh, dp = a.shallow(n_layers), a.deep(n_layers)

    rel_domains, rel = token_relevance({open_samples(p).attrs["domain"]: p for p in samples})
    order = [rel_domains.index(d) for d in domains]
    rel = rel[np.ix_(order, order)]

    ref_density = next(iter(dens.values())).attrs
    f1 = finding1(dens, threshold, multiple, sh, dp, n_boot, seed)
    f2 = finding2(sim, domains, sh, dp, n_boot, seed)
    f3 = finding3(sim, domains, rel, sh, dp, seed=seed)
    result = {
        "model": model,
        "domains": domains,
        "layers": {"n": n_layers, "shallow": [int(sh[0]), int(sh[-1]) + 1], "deep": [int(dp[0]), int(dp[-1]) + 1]},
        "architecture": ref_density.get("architecture"),
        "scored_matrices": dict(zip(ref_density.get("matrices", []), ref_density.get("shapes", []))),
        "provenance": {k: sim.attrs.get(k) for k in REPORTED},
        "code_version": code_version(),
        "finding1_density": f1,
        "finding2_similarity": f2,
        "finding3_relevance": f3,
    }
    write_json(result, out_dir / "findings.json", "findings")

    # tidy tables
    import pandas as pd

    rows = []
    for d, ds in dens.items():
        for var, dim in (("active_abs_share", "threshold"), ("active_rel_share", "multiple"), ("mass_share", "q")):
            for val in ds[dim].values:
                for layer, v in enumerate(ds[var].sel({dim: val}).values):
                    rows.append({"domain": d, "definition": f"{var}:{val:g}", "layer": layer, "share": float(v)})
    pd.DataFrame(rows).to_csv(out_dir / "density.csv", index=False)
    means = {p: domain_means(sim["llmdcos"].values, sim["domain_a"].values, domains, p, _doc_ids(sim)) for p in ("all", "paper")}
    rows = [
        {"protocol": p, "layer": layer, "domain_a": a, "domain_b": b, "mean_llmdcos": float(m[layer, i, j])}
        for p, m in means.items() for layer in range(n_layers)
        for i, a in enumerate(domains) for j, b in enumerate(domains)
    ]
    pd.DataFrame(rows).to_csv(out_dir / "similarity.csv", index=False)
    iu = np.triu_indices(len(domains), 1)
    deep_m, shallow_m = means["all"][dp].mean(0), means["all"][sh].mean(0)
    pd.DataFrame({
        "domain_a": [domains[i] for i in iu[0]], "domain_b": [domains[j] for j in iu[1]],
        "relevance": rel[iu], "deep_llmdcos": deep_m[iu], "shallow_llmdcos": shallow_m[iu],
    }).to_csv(out_dir / "relevance.csv", index=False)

    # figures
    figs = out_dir / "figures"
    plots.density_figure(dens, figs / "finding1_density", model)
    values = paper_protocol_values(sim, domains)
    pairs = [(domains[0], domains[0]), (domains[1], domains[1])] + [(domains[0], d) for d in domains[1:3]]
    plots.similarity_boxplots(values, pairs, figs / "finding2_similarity_boxplots", model)
    plots.similarity_heatmap(
        deep_m, domains, figs / "finding2_similarity_deep",
        f"mean LLMDcos in layers [{dp[0]}, {dp[-1] + 1}) (all pairs) — {model}",
    )
    plots.similarity_heatmap(
        shallow_m, domains, figs / "finding2_similarity_shallow",
        f"mean LLMDcos in layers [{sh[0]}, {sh[-1] + 1}) (all pairs) — {model}",
    )
    plots.relevance_scatter(
        rel[iu], deep_m[iu], shallow_m[iu], [f"{domains[i]}–{domains[j]}" for i, j in zip(*iu)],
        figs / "finding3_relevance",
        f"Finding 3: Spearman rho deep {_num(f3['value'], '.2f')} (Mantel p {_num(f3['mantel_p_value'], '.2g')}), "
        f"shallow {_num(f3['shallow_rho'], '.2f')}, difference p {_num(f3['difference_p_value'], '.2g')}, "
        f"n = {f3['n_pairs']} domain pairs — {model}",
    )
    for key in ("finding1_density", "finding2_similarity", "finding3_relevance"):
        f = result[key]
        verdict = f"undefined ({f['undefined']})" if f["holds"] is None else f["holds"]
        log(f"{key}: {f['statistic']} = {_num(f['value'], '.4f')} {f.get('ci95', '')} -> holds: {verdict}")
    return result


def _num(x, fmt: str) -> str:
    """A number for a title or a log line; 'undefined' for a statistic n cannot support."""
    return "undefined" if x is None or not np.isfinite(x) else format(x, fmt)
