"""``results/MODELS.md``: every finding and validation of every configured model side by side.

A finding measured on one checkpoint may be a property of that checkpoint; the page puts the models
of one run next to each other under one protocol: per claim, each model's statistic, 95% interval
and verdict (from its ``findings.json``, ``pruning/summary.json`` and ``pairs/*/summary.json``,
the numbers its own SUMMARY.md reports); per target sparsity and pruning base, each allocation's
rank by perplexity and its ratio to the uniform allocation with the paired interval; what differs
by architecture (layer counts, and so the layer ranges; the share of weights above the absolute
thresholds, which decides whether a threshold means anything on a model); and finding 1's density
profile of every model on one plot, against the layer's position as a fraction of depth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actpat.summary import fmt, interval_text, verdict


def _interval(ci) -> str:
    text = interval_text(ci)
    return f" {text}" if text else ""


def claim_rows(results: dict[str, dict]) -> list[tuple[str, dict[str, str]]]:
    """(claim, {model: cell}) for each finding and validation some model has; a model without the
    result gets "not run"."""
    rows: list[tuple[str, dict[str, str]]] = []

    def row(claim: str, cell) -> None:
        cells = {m: cell(r) for m, r in results.items()}
        if any(c is not None for c in cells.values()):
            rows.append((claim, {m: c if c is not None else "not run" for m, c in cells.items()}))

    def finding(key: str, what: str):
        def cell(r):
            f = (r.get("findings") or {}).get(key)
            if f is None:
                return None
            return f"{what} {fmt(f.get('value'))}{_interval(f.get('ci95'))}; {verdict(f.get('holds'), f.get('undefined'))}"
        return cell

    row("Finding 1: fewer activated weights in deep layers (deep/shallow ratio of the per-sample activated share < 1)",
        finding("finding1_density", "ratio"))
    row("Finding 2: cross-domain similarity falls in deep layers (drop of the same − cross gap, interval above 0)",
        finding("finding2_similarity", "drop"))
    row("Finding 3: deep-layer similarity tracks domain relevance (Spearman ρ, Mantel test)",
        finding("finding3_relevance", "ρ"))
    for method, structure, sparsity in _paper_runs(results):
        def v1(r, key=(method, structure, sparsity)):
            rec = _v1_records(r).get(key)
            if rec is None:
                return None
            high = rec.get("vs_uniform_high")
            holds = None if high is None or rec.get("n_windows", 0) < 2 else bool(high < 1)
            return (f"ratio {fmt(rec.get('vs_uniform'))}{_interval([rec.get('vs_uniform_low'), high])}; "
                    f"{verdict(holds, 'no interval')}")
        row(f"Validation 1: {method} beats its uniform allocation at {sparsity:g} {structure} (perplexity ratio's "
            "interval below 1)", v1)

    def v2(r):
        v = ((r.get("pruning") or {}).get("validation2")) or {}
        if "holds" not in v:
            return None
        if "mean_log_ppl_advantage" not in v:
            return verdict(v["holds"], v.get("undefined"))
        return (f"{v['diagonal_best_count']} of {v['n_columns']} diagonal; advantage "
                f"{fmt(v['mean_log_ppl_advantage'], 4)}{_interval(v.get('mean_log_ppl_advantage_ci95'))} nats/token; "
                f"{verdict(v['holds'], v.get('undefined'))}")
    row("Validation 2: calibrating on a domain keeps its perplexity best (advantage's interval below 0)", v2)
    for name in sorted({p for r in results.values() for p in r.get("pairs", {})}):
        def v3(r, name=name):
            p = r.get("pairs", {}).get(name)
            if p is None:
                return None
            deep = next((x for x in p.get("ranges", []) if x["range"] == "deep" and x["measure"] == "llmdcos"), None)
            if deep is None:
                return None
            return f"ρ {fmt(deep['rho'])}{_interval([deep['ci_lo'], deep['ci_hi']])}; {verdict(p.get('holds'), p.get('undefined'))}"
        row(f"Validation 3 ({name}): deep-layer LLMDcos correlates with human similarity (interval above 0)", v3)
    return rows


def _v1_records(r: dict) -> dict[tuple[str, str, float], dict]:
    return {(x["method"], x["structure"], float(x["sparsity"])): x for x in (r.get("pruning") or {}).get("validation1", [])
            if x.get("method") != "dense"}


def _paper_runs(results: dict[str, dict]) -> list[tuple[str, str, float]]:
    """Validation 1's rows of the paper's own method (Wanda with the density-derived allocation,
    unstructured), at every sparsity some model ran it."""
    keys = {k for r in results.values() for k in _v1_records(r)}
    return sorted(k for k in keys if k[0] == "wanda-density" and k[1] == "unstructured")


def allocation_ranks(results: dict[str, dict]) -> dict[tuple[str, float], dict[str, dict[str, str]]]:
    """{(base, sparsity): {allocation: {model: "rank · ratio [interval]"}}}: within each model, base
    and sparsity (unstructured), the allocations ranked by perplexity (1 = lowest), with their
    perplexity ratio to the uniform allocation of the same base and its paired 95% interval."""
    from actpat.methods import METHODS

    out: dict[tuple[str, float], dict[str, dict[str, str]]] = {}
    for model, r in results.items():
        by_cell: dict[tuple[str, float], list[tuple[float, str, dict]]] = {}
        for (method, structure, sparsity), rec in _v1_records(r).items():
            m = METHODS.get(method)
            if structure != "unstructured" or m is None or rec.get("perplexity") is None:
                continue
            by_cell.setdefault((m.base, sparsity), []).append((rec["perplexity"], m.allocation, rec))
        for cell, entries in by_cell.items():
            for rank, (_, allocation, rec) in enumerate(sorted(entries, key=lambda e: e[0]), start=1):
                text = f"{rank} · {fmt(rec['perplexity'], 2)}"
                if allocation != "uniform":
                    text += f" · {fmt(rec.get('vs_uniform'))}{_interval([rec.get('vs_uniform_low'), rec.get('vs_uniform_high')])}"
                out.setdefault(cell, {}).setdefault(allocation, {})[model] = text
    return dict(sorted(out.items()))


def architecture_rows(results: dict[str, dict], job) -> list[str]:
    """What differs by architecture, per model: depth and so the layer ranges, the scored matrices,
    and how the absolute thresholds (the paper's γ among them) fall on each model."""
    lines = []
    gamma = job.gamma
    for model, r in results.items():
        f = r.get("findings") or {}
        layers = f.get("layers", {})
        n = layers.get("n")
        spec = job.models[model]
        text = f"- **{model}** (`{spec.source}`): " + (f"{f.get('architecture', '?')}, {n} decoder layers; " if n else "")
        if layers:
            text += (f"shallow layers [{layers['shallow'][0]}, {layers['shallow'][1]}), deep [{layers['deep'][0]}, "
                     f"{layers['deep'][1]}) (the same bounds on every model: shallow {_range(job.analysis.shallow_layers)}, "
                     f"deep {_range(job.analysis.deep_layers)}); ")
        shapes = f.get("scored_matrices")
        if shapes:
            text += "scored per layer: " + ", ".join(f"{name} {rows}×{cols}" for name, (rows, cols) in shapes.items()) + "; "
        shares = (f.get("finding1_density") or {}).get("share_above_absolute_thresholds", {})
        if shares:
            text += "weights with a mean score above " + ", ".join(f"{t}: {100 * v:.1f}%" for t, v in shares.items())
            saturated = [t for t, v in shares.items() if v > 0.5]
            if saturated:
                text += f" (saturated: {', '.join(saturated)} — on this model the absolute threshold counts most weights)"
            text += "; "
        if gamma is not None:
            text += f"γ of wanda-density (ratios.threshold) {gamma:g} on every model"
            share = shares.get(f"{gamma:g}") if shares else None
            if share is not None:
                text += f", {100 * share:.1f}% of this model's weights above it"
        lines.append(text.rstrip("; ") + ".")
    return lines


def _range(bounds) -> str:
    """A layer range of the config (``actpat.settings.layer_range``) in terms of the depth L:
    (0.5, -2) is [L/2, L−2)."""
    from fractions import Fraction

    def bound(x: float) -> str:
        if -1 < x < 1:
            f = Fraction(abs(x)).limit_denominator(12)
            text = "0" if f == 0 else ("L" if f.numerator == 1 else f"{f.numerator}L") + (f"/{f.denominator}" if f.denominator > 1 else "")
            return text if x >= 0 else f"L − {text}"
        return str(int(x)) if x >= 0 else f"L − {-int(x)}"

    return f"[{bound(bounds[0])}, {bound(bounds[1])})"


def density_profiles(tables: dict[str, "pd.DataFrame"], definition: str):  # noqa: F821
    """{model: (layer position in [0, 1], mean share over domains, lowest, highest)} of one
    definition of finding 1's density (``density.csv``'s ``definition`` column): layer i of L at
    position (i + 0.5) / L."""
    out = {}
    for model, t in tables.items():
        rows = t[t["definition"] == definition]
        if rows.empty:
            continue
        by_layer = rows.groupby("layer")["share"]
        n = int(rows["layer"].max()) + 1
        layer = np.arange(n)
        out[model] = ((layer + 0.5) / n, by_layer.mean().reindex(layer).values, by_layer.min().reindex(layer).values,
                      by_layer.max().reindex(layer).values)
    return out


def build_page(results: dict[str, dict], job, figure: str | None) -> str:
    models = list(results)
    lines = ["# actpat — the models side by side", "",
             f"{len(models)} models under one protocol: the same domains, samples, thresholds, pruning settings and "
             "evaluation windows (this run's config). Each cell: the model's statistic with its 95% interval and whether "
             "the paper's claim holds on it; the details and the paper's own numbers are in each model's "
             "`results/<model>/SUMMARY.md`.", ""]
    if figure:
        lines += [f"![Finding 1 on every model]({figure})", "",
                  f"*Finding 1: share of each layer's weights whose mean score exceeds {job.analysis.density_multiple:g}× the "
                  "model's mean score (the mean over domains, the band their range), against the layer's position as a "
                  "fraction of the model's depth.*", ""]
    lines += ["## Findings and validations", "", "| claim | " + " | ".join(models) + " |",
              "|---|" + "---|" * len(models)]
    lines += [f"| {claim} | " + " | ".join(cells[m] for m in models) + " |" for claim, cells in claim_rows(results)]
    ranks = allocation_ranks(results)
    if ranks:
        lines += ["", "## Layer-wise allocations, by target sparsity (validation 1, unstructured)", "",
                  "Each cell: the allocation's rank by perplexity among this base's allocations on that model (1 = lowest), "
                  "its perplexity, and its ratio to the base's uniform allocation with the paired 95% interval (windows "
                  "resampled); an interval below 1 is a win over uniform, one that holds 1 is no difference.", ""]
        for (base, sparsity), table in ranks.items():
            lines += [f"### {base} at {sparsity:g}", "", "| allocation | " + " | ".join(models) + " |",
                      "|---|" + "---|" * len(models)]
            order = sorted(table, key=lambda a: np.mean([int(c.split(" ")[0]) for c in table[a].values()]))
            lines += [f"| {a} | " + " | ".join(table[a].get(m, "—") for m in models) + " |" for a in order]
            lines.append("")
    lines += ["## What differs by architecture", ""] + architecture_rows(results, job) + [""]
    return "\n".join(lines) + "\n"


def write_models_page(job, inputs: dict[str, dict], out: Path, figure: Path) -> str:
    """The models-page job (``job``: ``actpat.settings.ModelsPageJob``): ``inputs`` maps each model
    to its result files (``findings``, ``density_table``, ``pruning``, ``pairs``; any may be absent)."""
    import pandas as pd

    from actpat import plots

    from actpat.results import read_json

    results = {}
    tables = {}
    for model in job.models:
        files = inputs.get(model, {})

        def load(kind, path, model=model):  # checksum, kind and model checked; the file named on any failure
            return read_json(path, kind, model=model) if path else None

        results[model] = {"findings": load("findings", files.get("findings")),
                          "pruning": load("pruning-report", files.get("pruning")),
                          "pairs": {Path(p).parent.name: load("pairs", p) for p in files.get("pairs", [])}}
        if files.get("density_table"):
            tables[model] = pd.read_csv(files["density_table"])
    out, figure = Path(out), Path(figure)
    profiles = density_profiles(tables, f"active_rel_share:{job.analysis.density_multiple:g}")
    if profiles:
        plots.density_profiles_figure(profiles, figure.with_suffix(""), job.analysis.density_multiple)
    else:
        plots.empty_figure(figure.with_suffix(""), "no density tables (finding 1 needs two domains)")
    text = build_page(results, job, str(figure.relative_to(out.parent)) if profiles else None)
    out.write_text(text)
    return text
