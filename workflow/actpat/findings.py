"""The statistics of findings 1–3, each with its uncertainty and a plain verdict.

* Finding 1 (density falls in deep layers): deep-half over shallow-half activated share, and the
  Spearman correlation of the share with the layer index; bootstrap over samples.
* Finding 2 (cross-domain similarity drops with depth, same-domain does not): the drop
  Δ = (same − cross)_deep − (same − cross)_shallow of mean LLMDcos; bootstrap over sample pairs.
* Finding 3 (deep similarity tracks relevance): Spearman ρ between deep-layer mean LLMDcos and the
  domains' relevance across cross-domain pairs, with its p-value, a Mantel permutation p-value
  (domain pairs are not independent), and the same in shallow layers for contrast.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import xarray as xr
from scipy.stats import spearmanr

from actpat.reduce import domain_means, paper_pairs
from actpat.stats import interval


def layer_range(start: float, stop: float, n_layers: int) -> np.ndarray:
    """Layers [start, stop): a number in (-1, 1) is a fraction of the depth, an integer an index
    (negative counts from the end). (0.5, -2) is the paper's [L/2, L−2)."""

    def resolve(x):
        if isinstance(x, float) and -1 < x < 1:
            return int(round(x * n_layers)) if x >= 0 else n_layers + int(round(x * n_layers))
        return int(x) if x >= 0 else n_layers + int(x)

    a, b = resolve(start), resolve(stop)
    if not 0 <= a < b <= n_layers:
        raise ValueError(f"layer range ({start}, {stop}) is empty for {n_layers} layers")
    return np.arange(a, b)


def finding1(densities: dict[str, xr.Dataset], threshold: float, multiple: float, shallow, deep, n_boot=1000, seed=0) -> dict:
    """Deep/shallow ratio of the per-sample activated share, scale-free (above ``multiple`` × the
    sample's mean score; the primary statistic) and absolute (above ``threshold``), with bootstrap
    intervals over samples within each domain; and the exact mean-score density ratios under every
    definition (point values)."""
    primary = _finding1_stat(densities, "sample_share_rel", "multiple", multiple, shallow, deep, n_boot, seed)
    absolute = _finding1_stat(densities, "sample_share_abs", "threshold", threshold, shallow, deep, n_boot, seed)
    exact = {}
    for d, ds in densities.items():
        entry = {}
        for t in ds["threshold"].values:
            entry[f"abs>{t:g}"] = _ratio(ds["active_abs_share"].sel(threshold=t).values, shallow, deep)
        for m in ds["multiple"].values:
            entry[f"rel>{m:g}x_mean"] = _ratio(ds["active_rel_share"].sel(multiple=m).values, shallow, deep)
        for q in ds["q"].values:
            entry[f"mass_share_q{q:g}"] = _ratio(ds["mass_share"].sel(q=q).values, shallow, deep)
        exact[d] = entry
    return {
        "claim": "fewer weights are activated in deep layers than in shallow ones",
        "statistic": f"deep/shallow ratio of the per-sample share of weights above {multiple:g} x the sample's mean score (mean over domains)",
        **primary,
        "holds": bool(primary["ci95"][1] < 1.0),
        "absolute_threshold": {"threshold": float(threshold), **absolute},
        "exact_mean_score_ratios": exact,
        "n_bootstrap": n_boot,
    }


def _finding1_stat(densities, var, dim, value, shallow, deep, n_boot, seed) -> dict:
    rng = np.random.default_rng(seed)
    per_domain = {d: ds[var].sel({dim: value}, method="nearest").values for d, ds in densities.items()}

    def stats(profiles: list[np.ndarray]) -> tuple[float, float]:
        prof = np.mean(profiles, axis=0)  # (layer,) averaged over domains
        ratio = prof[deep].mean() / prof[shallow].mean()
        rho = spearmanr(np.arange(len(prof)), prof).statistic
        return ratio, rho

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


def finding2(sim: xr.Dataset, domains: list[str], shallow, deep, n_boot=1000, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    values = paper_protocol_values(sim, domains)

    def stat(vals):
        same = np.mean([vals[(d, d)].mean(1) for d in domains], axis=0)  # (layer,)
        cross = np.mean([v.mean(1) for (a, b), v in vals.items() if a != b], axis=0)
        gap = same - cross
        return gap[deep].mean() - gap[shallow].mean(), same, cross

    point, same, cross = stat(values)
    boots = []
    for _ in range(n_boot):
        resampled = {k: v[:, rng.integers(0, v.shape[1], v.shape[1])] for k, v in values.items()}
        boots.append(stat(resampled)[0])
    ci = interval(np.asarray(boots))
    all_means = domain_means(sim["llmdcos"].values, sim["domain_a"].values, domains, "all")
    off = ~np.eye(len(domains), dtype=bool)
    return {
        "claim": "cross-domain LLMDcos falls in deep layers relative to same-domain LLMDcos",
        "statistic": "(same - cross)_deep - (same - cross)_shallow of mean LLMDcos, paper pairing",
        "value": float(point),
        "ci95": ci,
        "holds": bool(ci[0] > 0),
        "same_domain_shallow": float(same[shallow].mean()),
        "same_domain_deep": float(same[deep].mean()),
        "cross_domain_shallow": float(cross[shallow].mean()),
        "cross_domain_deep": float(cross[deep].mean()),
        "all_pairs_protocol": {
            "same_shallow": float(np.mean([all_means[shallow, i, i].mean() for i in range(len(domains))])),
            "same_deep": float(np.mean([all_means[deep, i, i].mean() for i in range(len(domains))])),
            "cross_shallow": float(all_means[shallow][:, off].mean()),
            "cross_deep": float(all_means[deep][:, off].mean()),
        },
        "n_pairs_per_domain_pair": {f"{a}|{b}": int(v.shape[1]) for (a, b), v in values.items()},
        "n_bootstrap": n_boot,
    }


def finding3(sim: xr.Dataset, domains: list[str], relevance: np.ndarray, shallow, deep, n_perm=10000, seed=0) -> dict:
    means = domain_means(sim["llmdcos"].values, sim["domain_a"].values, domains, "all")
    iu = np.triu_indices(len(domains), 1)
    deep_sim = means[deep].mean(0)[iu]
    shallow_sim = means[shallow].mean(0)[iu]
    rel = relevance[iu]
    with warnings.catch_warnings():  # a constant input gives nan, reported as such
        warnings.simplefilter("ignore")
        rho_deep = spearmanr(deep_sim, rel)
        rho_shallow = spearmanr(shallow_sim, rel)
    # Mantel test: permute the domain labels of the relevance matrix
    rng = np.random.default_rng(seed)
    deep_mat = means[deep].mean(0)
    hits = 0
    for _ in range(n_perm):
        p = rng.permutation(len(domains))
        if spearmanr(deep_mat[iu], relevance[p][:, p][iu]).statistic >= rho_deep.statistic:
            hits += 1
    mantel_p = (hits + 1) / (n_perm + 1)
    note = None if len(rel) >= 3 else "undefined: a rank correlation needs at least 3 domain pairs (3 domains)"
    return {
        "note": note,
        "claim": "deep-layer LLMDcos between domains tracks how related the domains are",
        "relevance": "1 - Jensen-Shannon distance of token unigram distributions of the scored windows",
        "statistic": "Spearman rho(deep-layer mean LLMDcos, relevance) over cross-domain pairs",
        "value": float(rho_deep.statistic),
        "p_value": float(rho_deep.pvalue),
        "mantel_p_value": float(mantel_p),
        "n_pairs": int(len(rel)),
        "shallow_rho": float(rho_shallow.statistic),
        "shallow_p_value": float(rho_shallow.pvalue),
        "holds": bool(rho_deep.statistic > 0 and mantel_p < 0.05 and rho_deep.statistic > rho_shallow.statistic),
        "n_permutations": n_perm,
    }


def write_findings(densities, similarity, samples, out_dir, job, log=print) -> dict:
    """The findings job (``job``: ``actpat.settings.FindingsJob``): read the reductions, compute
    findings 1–3, write findings.json, tidy CSVs and figures."""
    a = job.analysis
    threshold, multiple, shallow, deep, n_boot, seed = (a.density_threshold, a.density_multiple, a.shallow_layers,
                                                        a.deep_layers, a.bootstrap, job.seed)
    from pathlib import Path

    from actpat import plots
    from actpat.provenance import code_version
    from actpat.reduce import token_relevance
    from actpat.store import open_reduction, open_samples, write_json

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
    sh, dp = layer_range(*shallow, n_layers), layer_range(*deep, n_layers)

    rel_domains, rel = token_relevance({open_samples(p).attrs["domain"]: p for p in samples})
    order = [rel_domains.index(d) for d in domains]
    rel = rel[np.ix_(order, order)]

    f1 = finding1(dens, threshold, multiple, sh, dp, n_boot, seed)
    f2 = finding2(sim, domains, sh, dp, n_boot, seed)
    f3 = finding3(sim, domains, rel, sh, dp, seed=seed)
    result = {
        "model": model,
        "domains": domains,
        "layers": {"n": n_layers, "shallow": [int(sh[0]), int(sh[-1]) + 1], "deep": [int(dp[0]), int(dp[-1]) + 1]},
        "provenance": {k: sim.attrs.get(k) for k in ("seed", "seq_len", "target", "sketch_size", "checkpoint_sha256", "code_version")},
        "code_version": code_version(),
        "finding1_density": f1,
        "finding2_similarity": f2,
        "finding3_relevance": f3,
    }
    write_json(result, out_dir / "findings.json")

    # tidy tables
    import pandas as pd

    rows = []
    for d, ds in dens.items():
        for var, dim in (("active_abs_share", "threshold"), ("active_rel_share", "multiple"), ("mass_share", "q")):
            for val in ds[dim].values:
                for layer, v in enumerate(ds[var].sel({dim: val}).values):
                    rows.append({"domain": d, "definition": f"{var}:{val:g}", "layer": layer, "share": float(v)})
    pd.DataFrame(rows).to_csv(out_dir / "density.csv", index=False)
    means = {p: domain_means(sim["llmdcos"].values, sim["domain_a"].values, domains, p) for p in ("all", "paper")}
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
        f"Finding 3: Spearman rho deep {f3['value']:.2f} (p {f3['p_value']:.2g}, Mantel p {f3['mantel_p_value']:.2g}), "
        f"shallow {f3['shallow_rho']:.2f}, n = {f3['n_pairs']} domain pairs — {model}",
    )
    for key in ("finding1_density", "finding2_similarity", "finding3_relevance"):
        f = result[key]
        log(f"{key}: {f['statistic']} = {f['value']:.4f} {f.get('ci95', '')} -> holds: {f['holds']}"
            + (f" ({f['note']})" if f.get("note") else ""))
    return result
