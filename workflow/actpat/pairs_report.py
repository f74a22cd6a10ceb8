"""Validation 3 report: per-layer Spearman of LLMDcos against human similarity, with baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from actpat.errors import StoreError
from actpat.pairs import bag_of_tokens, cosine_rows, layer_ranges
from actpat.provenance import REPORTED
from actpat.reduce import layer_sketches, open_domain, sample_norms
from actpat.results import write_json
from actpat.sketch import llmdcos as sketch_llmdcos
from actpat.stats import spearman_with_ci
from actpat.store import open_samples, sample_tokens


def pair_measures(texts_path: Path, store_paths: list[Path]) -> dict:
    """LLMDcos (layer, pair), hidden-state cosine (layer, pair), bag-of-tokens cosine (pair,),
    and the human scores, aligned on the pair set's text order."""
    texts = open_samples(texts_path)
    stores = open_domain(store_paths)
    ids = np.asarray([str(x) for ds in stores for x in ds["sample"].values], dtype=object)
    want = np.asarray([str(x) for x in texts["sample"].values], dtype=object)
    if sorted(ids) != sorted(want):
        raise StoreError(f"score stores {', '.join(map(str, store_paths))} do not hold exactly the texts of {texts_path}")
    order = np.argsort(ids)[np.argsort(np.argsort(want))]  # position in ids of each wanted id
    first, second = texts["pair_first"].values, texts["pair_second"].values
    norms = sample_norms(stores)[order]
    n_layers = stores[0].sizes["layer"]
    llmdcos = np.zeros((n_layers, len(first)))
    for i in range(n_layers):
        llmdcos[i] = sketch_llmdcos(layer_sketches(stores, i)[order], norms[:, i], (first, second))
    hidden = np.concatenate([ds["hidden_mean"].values for ds in stores])[order]  # (text, layer + 1, dim)
    hidden_cos = cosine_rows(hidden[:, 1:], first, second)  # layer outputs, (layer, pair)
    tokens = [list(t) for t in sample_tokens(texts)]
    return {
        "llmdcos": llmdcos,
        "hidden_cos": hidden_cos,
        "bag_of_tokens": bag_of_tokens(tokens, first, second),
        "human": texts["human_score"].values,
        "texts": texts,
        "attrs": stores[0].attrs,
    }


def write_pairs_report(job, texts_path: Path, store_paths: list[Path], out_dir: Path, log=print) -> dict:
    """The pairs_report job (``job``: ``actpat.settings.AnalysisJob``). Pairs share texts (each
    Lee document is in 49 of its 1,225 pairs), so intervals resample texts and p-values permute
    text labels (``actpat.stats.dyadic_spearman``)."""
    from actpat import plots
    from actpat.provenance import code_version
    from actpat.stats import dyadic_spearman, spearman_with_ci, undefined_because

    m = pair_measures(texts_path, store_paths)
    n_boot = job.analysis.bootstrap
    rng = np.random.default_rng(job.seed)
    human = m["human"]
    first, second = m["texts"]["pair_first"].values, m["texts"]["pair_second"].values
    n_texts = int(m["texts"].sizes["sample"])

    def corr(x):
        return dyadic_spearman(np.asarray(x, dtype=np.float64), human, first, second, n_texts, n_boot, rng)

    n_layers = m["llmdcos"].shape[0]
    rows = []
    for i in range(n_layers):
        for measure in ("llmdcos", "hidden_cos"):
            rows.append({"layer": i, "measure": measure, **_flat(corr(m[measure][i]))})
    bot = corr(m["bag_of_tokens"])
    rows.append({"layer": -1, "measure": "bag_of_tokens", **_flat(bot)})
    by_layer = pd.DataFrame(rows)
    ranges = []
    for name, (a, b) in layer_ranges(job.analysis, n_layers).items():
        for measure in ("llmdcos", "hidden_cos"):
            summed = m[measure][a:b].sum(0)  # the authors sum per-layer values over the range
            ranges.append({"range": name, "start": a, "stop": b, "measure": measure, **_flat(corr(summed))})
    ranges = pd.DataFrame(ranges)

    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    by_layer.to_csv(out_dir / "spearman_by_layer.csv", index=False)
    ranges.to_csv(out_dir / "spearman_ranges.csv", index=False)
    name = m["texts"].attrs["domain"]
    deep = layer_ranges(job.analysis, n_layers)["deep"]
    deep_row = ranges[(ranges.range == "deep") & (ranges.measure == "llmdcos")].iloc[0]
    why = undefined_because(texts=n_texts, pairs=len(human))
    summary = {
        "pair_set": name,
        "model": m["attrs"]["model"],
        "provenance": {k: m["attrs"].get(k) for k in REPORTED},
        "code_version": code_version(),
        "n_texts": n_texts,
        "n_pairs": int(len(human)),
        "max_tokens": int(m["texts"].attrs["seq_len"]),
        "n_truncated": int(m["texts"].attrs.get("n_truncated", 0)),
        "deep_layers": list(deep),
        "claim": "deep-layer LLMDcos correlates with human similarity",
        "rule": "holds when the 95% interval of Spearman rho (bootstrap over texts) lies above 0",
        "holds": None if why else bool(np.isfinite(deep_row.ci_lo) and deep_row.ci_lo > 0),
        "undefined": why,
        "ranges": ranges.to_dict(orient="records"),
        # for comparison: the interval that treats pairs as independent (too narrow: pairs share texts)
        "deep_interval_resampling_pairs": spearman_with_ci(m["llmdcos"][deep[0]:deep[1]].sum(0), human, n_boot, rng)["ci95"],
        "bag_of_tokens": bot,
        "best_layer_llmdcos": by_layer[by_layer.measure == "llmdcos"].sort_values("rho").iloc[-1].to_dict(),
        "best_layer_hidden_cos": by_layer[by_layer.measure == "hidden_cos"].sort_values("rho").iloc[-1].to_dict(),
        "paper_for_comparison": {"STS-B, Llama2-7B": 0.66, "SICK, Llama2-7B": 0.51, "note": "different data and model"},
        "n_bootstrap": n_boot,
    }
    write_json(summary, out_dir / "summary.json", "pairs")
    plots.pairs_rho_by_layer(by_layer, out_dir / "figures" / "rho_by_layer", f"{name} — {m['attrs']['model']}, n = {len(human)} pairs")
    plots.pairs_scatter(m["llmdcos"][deep[0]:deep[1]].mean(0), human, out_dir / "figures" / "scatter_deep",
                        f"{name}: mean LLMDcos over layers [{deep[0]}, {deep[1]}) vs human score — {m['attrs']['model']}")
    log(f"{name}: Spearman rho of deep-layer LLMDcos with human scores = {deep_row.rho:.3f} "
        f"[{deep_row.ci_lo:.3f}, {deep_row.ci_hi:.3f}] (texts resampled), p = {deep_row.p_value:.2g}, "
        f"n = {len(human)} pairs of {n_texts} texts; bag of tokens {bot['rho']:.3f}")
    return summary


def _flat(d: dict) -> dict:
    return {"rho": d["rho"], "p_value": d["p_value"], "ci_lo": d["ci95"][0], "ci_hi": d["ci95"][1], "n_pairs": d["n_pairs"],
            "p_value_independent_pairs": d["p_value_independent_pairs"], "p_method": d["p_method"]}
