"""``results/<model>/SUMMARY.md``: one page with every finding and validation, its statistic and
interval, whether it holds on this model, and the paper's corresponding number beside it.

The paper's numbers come from our spec of it (``shared/docs/paper.md``): the per-layer activated
counts of Llama2-7B on C4 (§2.4), the 9×9 LLMDcos matrix of its Figure 6 (§3.4), Tables 1 and 2
(§4.5, §5) and the STS correlations (§6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# §2.4: activated share (%) per layer, Llama2-7B, C4, 64 x 256 tokens, threshold 2e-6 (1-indexed layers 1..32)
PAPER_F1_SHARE = [0.52, 3.12, 7.30, 9.46, 10.60, 10.93, 10.70, 11.13, 11.22, 11.37, 11.52, 10.71, 10.42, 10.79, 10.80, 11.16,
                  11.68, 11.15, 10.57, 10.29, 10.51, 9.28, 8.46, 7.59, 6.93, 6.26, 5.94, 5.23, 5.02, 4.08, 4.25, 4.40]
# §3.4: Figure 6 (Llama2-7B), deep-layer LLMDcos between 9 datasets
PAPER_F6 = np.array([
    [0.44, 0.16, 0.23, 0.29, 0.16, 0.26, 0.29, 0.29, 0.16],
    [0.16, 0.14, 0.16, 0.17, 0.12, 0.15, 0.15, 0.16, 0.14],
    [0.23, 0.16, 0.36, 0.27, 0.19, 0.23, 0.26, 0.24, 0.17],
    [0.29, 0.17, 0.27, 0.80, 0.21, 0.63, 0.32, 0.57, 0.17],
    [0.16, 0.12, 0.19, 0.21, 0.72, 0.18, 0.16, 0.17, 0.12],
    [0.26, 0.15, 0.23, 0.63, 0.18, 0.70, 0.28, 0.57, 0.16],
    [0.29, 0.15, 0.26, 0.32, 0.16, 0.28, 0.51, 0.31, 0.15],
    [0.29, 0.16, 0.24, 0.57, 0.17, 0.57, 0.31, 0.77, 0.16],
    [0.16, 0.14, 0.17, 0.17, 0.12, 0.16, 0.15, 0.16, 0.16],
])
# §4.5 Table 1: WikiText-2 perplexity at 50% unstructured, (uniform Wanda, Wanda with the density-derived ratios)
PAPER_V1 = {"Llama-7B": (7.26, 7.19), "Llama2-7B": (6.46, 6.39), "Llama2-13B": (5.58, 5.55), "Llama3-8B": (9.06, 8.69)}
PAPER_V3 = {"STS-B": 0.66, "SICK": 0.51}  # §6: Spearman of deep-layer LLMDcos, Llama2-7B


def paper_f1_ratio() -> float:
    """Deep/shallow ratio of the activated share with the paper's layer split (deep = [L/2, L−2))."""
    share = np.asarray(PAPER_F1_SHARE)
    n = len(share)
    return float(share[n // 2 : n - 2].mean() / share[: n // 2].mean())


def paper_f2() -> tuple[float, float]:
    """Mean same-dataset and cross-dataset deep-layer LLMDcos of Figure 6."""
    off = ~np.eye(len(PAPER_F6), dtype=bool)
    return float(np.diag(PAPER_F6).mean()), float(PAPER_F6[off].mean())


def fmt(x, digits: int = 3) -> str:
    """A number for a table, or "undefined" (None, NaN)."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "undefined"
    return f"{x:.{digits}f}"


def interval_text(ci) -> str:
    """"[low, high]", or "" where the interval is missing."""
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci and None not in ci else ""


def verdict(holds, undefined: str | None = None) -> str:
    """**yes** / **no**, or undefined with the reason (a statistic n cannot support is no verdict)."""
    if holds is None:
        return f"undefined ({undefined or 'not computable'})"
    return "**yes**" if holds else "**no**"


def _describe_source(spec: dict) -> str:
    from actpat.sources import PACKAGED, TASKS, describe

    if spec.get("source") == "packaged" and spec.get("name") in PACKAGED:
        return PACKAGED[spec["name"]][1]
    if spec.get("source") == "task":
        unit = "each prompt one sample, scored at its end" if spec.get("per_document") else "packed into windows"
        return f"{TASKS[spec['name']].title} as zero-shot prompts without answers, {unit} ({describe(spec)})"
    return describe(spec) if "paths" in spec or spec.get("source") == "datasets" else str(spec.get("name") or spec.get("path"))


def _model_text(model: dict, n_layers) -> str:
    from actpat.models import EMBEDDED

    if model["source"] in EMBEDDED:
        embedded = EMBEDDED[model["source"]]
        what = f"the embedded {embedded.title}, de-quantized from {embedded.quantization} GGUF weights to {model['dtype']}"
    else:
        rev = f" at revision {model['revision']}" if model.get("revision") else ""
        what = f"`{model['source']}`{rev}, prepared in {model['dtype']}"
    return f"{what}, {n_layers} decoder layers"


def setting_differences(findings: dict | None, pairs: dict[str, dict], settings: dict,
                        pruning: dict | None = None) -> list[str]:
    """The differences from the paper's setting, from this run's provenance and measured values."""
    model, samples, analysis = settings["model"], settings["samples"], settings["analysis"]
    n_layers = (findings or {}).get("layers", {}).get("n", "?")
    lines = [f"- Model: {_model_text(model, n_layers)}; the paper: Llama-7B, Llama2-7B/13B and Llama3-8B (32-40 layers) "
             "with a float16 backward pass."]
    shapes = (findings or {}).get("scored_matrices")
    if shapes:
        lines.append(f"- Scored matrices per layer ({(findings or {}).get('architecture') or 'this model'}): "
                     + ", ".join(f"{name} {rows}×{cols}" for name, (rows, cols) in shapes.items())
                     + "; the paper scores q, k, v, o, gate, up and down of Llama.")
    domains = settings["domains"]
    lines.append(f"- Domains ({len(domains)}): " + "; ".join(f"{name}: {_describe_source(d['spec'])}" for name, d in domains.items())
                 + f"; {samples['per_domain']} windows of {samples['seq_len']} tokens each. The paper: zero-shot prompts of "
                 "BoolQ, MMLU, HumanEval, SIQA, HellaSwag and 256-token windows of C4 and WikiText-2, 64 per dataset.")
    if findings:
        shares = findings["finding1_density"].get("share_above_absolute_thresholds", {})
        parts = [f"{100 * v:.1f}% of this model's weights have a mean score above {t}" for t, v in shares.items()]
        saturated = [t for t, v in shares.items() if v > 0.5]
        text = "- Thresholds: " + "; ".join(parts) + " (Llama2-7B on C4 at the authors' 2e-6: 8.5%, §2.4)."
        if saturated:
            text += (f" The absolute threshold{'s' if len(saturated) > 1 else ''} {', '.join(saturated)} saturate{'' if len(saturated) > 1 else 's'} "
                     f"on this model, so findings 1-2 rest on the scale-free statistic (above {analysis['density_multiple']:g} x the "
                     "sample's mean score); the absolute values are given beside them.")
        lines.append(text)
    if pairs:
        lines.append("- Validation 3: " + "; ".join(
            f"{name}: {p['n_pairs']} pairs of {p['n_texts']} texts ({_describe_source(settings['pairs'][name]['spec'])})"
            for name, p in pairs.items()) + "; the paper: 256 STS-B and 256 SICK sentence pairs.")
    c, e = settings["calibration"], settings["evaluation"]
    lines.append(f"- Pruning: {c['windows']} calibration windows of {c['seq_len']} tokens from `{c['domain']}` (the paper: 128 C4 "
                 f"windows of 4096); perplexity on at most {e['max_windows']} windows of {e['seq_len']} tokens of held-out "
                 f"`{e['general']}` text (the paper: the WikiText-2 test set at 4096 tokens)"
                 + (f", every model evaluated in {pruning['evaluation_dtype']}" if pruning and pruning.get("evaluation_dtype") else "")
                 + ".")
    return lines


def build_summary(findings: dict | None, pairs: dict[str, dict], pruning: dict | None, settings: dict) -> str:
    from actpat.stats import MIN_N

    model = settings["model"]["name"]
    lines = [f"# actpat summary — {model}", "",
             "Each row: our statistic on this model with its 95% interval, whether the paper's claim holds here, and the "
             "paper's corresponding number (arXiv 2405.17799, Llama-family 7B–13B models). Each verdict's rule is in the "
             "JSON report it comes from.", "",
             f"Verdicts need at least {MIN_N} samples per domain (findings 1-2: intervals resample samples), 3 domain pairs "
             f"(finding 3: a rank correlation), {MIN_N} evaluation windows per set (validations 1-2) and {MIN_N} texts "
             "(validation 3); with fewer, a verdict is *undefined*, not *no*.", ""]
    rows = []
    if findings:
        f1, f2, f3 = findings["finding1_density"], findings["finding2_similarity"], findings["finding3_relevance"]
        ab = f1.get("absolute_threshold", {})
        rows.append(("Finding 1: fewer activated weights in deep layers (ratio < 1)",
                     f"deep/shallow ratio of the per-sample activated share: {fmt(f1['value'])} {interval_text(f1['ci95'])}; "
                     f"Spearman(share, layer) {fmt(f1['spearman_share_vs_layer'])}; with the absolute threshold "
                     f"{ab.get('threshold', '')}: {fmt(ab.get('value'))}; n = {min(f1['n_samples'].values())} samples per domain",
                     verdict(f1["holds"], f1.get("undefined")),
                     f"{paper_f1_ratio():.3f} (Llama2-7B, C4, counts of §2.4, γ = 2e-6)"))
        same, cross = paper_f2()
        removed = sum(f2.get("same_document_pairs_removed", {}).values())
        rows.append(("Finding 2: cross-domain similarity falls in deep layers relative to same-domain",
                     f"drop of the same−cross gap from shallow to deep: {fmt(f2['value'])} {interval_text(f2['ci95'])} (samples "
                     f"resampled within domains; {removed} same-document pairs left out); deep same "
                     f"{fmt(f2['same_domain_deep'])} vs cross {fmt(f2['cross_domain_deep'])}; shallow same "
                     f"{fmt(f2['same_domain_shallow'])} vs cross {fmt(f2['cross_domain_shallow'])}",
                     verdict(f2["holds"], f2.get("undefined")),
                     f"deep layers: same {same:.2f} vs cross {cross:.2f} (Fig. 6); shallow layers similar for all pairs"))
        rows.append(("Finding 3: deep-layer similarity tracks domain relevance, more than shallow-layer similarity",
                     f"Spearman(deep LLMDcos, token relevance) ρ = {fmt(f3.get('value'))}, Mantel p = "
                     f"{fmt(f3.get('mantel_p_value'), 4)}; shallow ρ = {fmt(f3.get('shallow_rho'))}; deep − shallow "
                     f"{fmt(f3.get('difference'))}, permutation p = {fmt(f3.get('difference_p_value'), 4)}; "
                     f"n = {f3.get('n_pairs')} domain pairs",
                     verdict(f3["holds"], f3.get("undefined")),
                     "qualitative (related MMLU/BoolQ high, HumanEval apart); no statistic"))
    if pruning:
        rows += _validation1_rows(pruning)
        v2 = pruning.get("validation2", {})
        if "holds" in v2:
            text = (f"{v2['diagonal_best_count']} of {v2['n_columns']} domains best with their own calibration (binomial p = "
                    f"{v2['p_value_binomial']:.2g}); mean log-perplexity advantage {fmt(v2['mean_log_ppl_advantage'], 4)} "
                    f"{interval_text(v2['mean_log_ppl_advantage_ci95'])} nats/token") if "diagonal_best_count" in v2 else v2.get("note", "")
            rows.append(("Validation 2: calibrating on a domain keeps that domain's perplexity best (advantage's interval below 0, "
                         "binomial p < 0.05)", text, verdict(v2["holds"], v2.get("undefined")),
                         "accuracy, not perplexity: MMLU calibration gives the best MMLU (Table 2); differences ≤ 1 s.e."))
            acc = v2.get("accuracy") or {}
            if "holds" in acc:
                text = (f"{acc['diagonal_best_count']} of {acc['n_columns']} domains best with their own calibration; mean "
                        f"last-word accuracy advantage {fmt(acc['mean_accuracy_advantage'], 4)} "
                        f"{interval_text(acc['mean_accuracy_advantage_ci95'])}") if "n_columns" in acc else ""
                rows.append(("Validation 2 (accuracy): calibrating on a domain raises last-word accuracy on that domain's text "
                             "over the other calibrations (mean advantage's interval above 0)", text, verdict(acc["holds"], acc.get("undefined")),
                             "MMLU calibration: MMLU 35.16 vs 34.77 with SIQA; SIQA calibration: SIQA 41.02 vs 42.19 with MMLU "
                             "(Llama2-7B, Table 2)"))
    for name, p in pairs.items():
        deep = next((r for r in p["ranges"] if r["range"] == "deep" and r["measure"] == "llmdcos"), None)
        hid = next((r for r in p["ranges"] if r["range"] == "deep" and r["measure"] == "hidden_cos"), None)
        if deep is None:
            continue
        a, b = p.get("deep_layers", ["?", "?"])
        rows.append((f"Validation 3 ({name}): deep-layer LLMDcos correlates with human similarity (interval above 0)",
                     f"Spearman ρ over layers [{a}, {b}) = {fmt(deep['rho'])} [{fmt(deep['ci_lo'])}, {fmt(deep['ci_hi'])}] "
                     f"(texts resampled), p = {fmt(deep['p_value'], 4)}, n = {deep['n_pairs']} pairs of {p['n_texts']} texts; "
                     f"hidden-state cosine {fmt(hid['rho']) if hid else 'undefined'}; bag of tokens {fmt(p['bag_of_tokens']['rho'])}",
                     verdict(p.get("holds"), p.get("undefined")),
                     "; ".join(f"{k} {v:.2f}" for k, v in PAPER_V3.items()) + " (Llama2-7B)"))
    lines += ["## Results", "", "| claim | this model | holds here | paper |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "## Differences in setting", ""] + setting_differences(findings, pairs, settings, pruning) + [""]
    lines += code_version_section([findings, pruning, *pairs.values()], settings.get("code_version"))
    lines += ["", "Sources: findings.json, pairs/*/summary.json, pruning/summary.json in this folder."]
    return "\n".join(lines) + "\n"


# the paper's reference for validation 1: Table 1 reports the density-derived allocation with Wanda
PAPER_V1_REFERENCE = "; ".join(f"{m} {o:.2f}/{u:.2f} = {o / u:.3f}" for m, (u, o) in PAPER_V1.items())


def _validation1_rows(pruning: dict) -> list[tuple[str, str, str, str]]:
    """One row per layer-wise method and configured sparsity: its perplexity ratio to the uniform
    allocation of its own base (uniform Wanda for the paper's method)."""
    from actpat.methods import METHODS
    from actpat.stats import undefined_because

    v1 = {(r["method"], r["structure"], r["sparsity"]): r for r in pruning["validation1"]}
    rows = []
    for (method, structure, sparsity), r in v1.items():
        m = METHODS.get(method)
        if structure != "unstructured" or m is None or m.allocation == "uniform":
            continue
        base = m.base_declaration.title
        uniform = v1.get((m.base, "unstructured", sparsity))
        why = f"no uniform {base} run at this sparsity" if uniform is None else undefined_because(windows=r["n_windows"])
        high = r["vs_uniform_high"]
        holds = None if why else bool(high is not None and high < 1)
        rows.append((f"Validation 1: {method} beats uniform {base} at {sparsity:g} unstructured (perplexity ratio's interval below 1)",
                     f"perplexity on `{pruning['general_set']}` {fmt(r['perplexity'], 2)} vs "
                     f"{fmt(uniform['perplexity'], 2) if uniform else 'undefined'}; ratio {fmt(r['vs_uniform'])} "
                     f"{interval_text([r['vs_uniform_low'], high])}; {r['n_windows']} windows" + _accuracy_text(r, uniform),
                     verdict(holds, why),
                     _paper_v1(m, sparsity)))
    return rows


def _paper_v1(m, sparsity: float) -> str:
    """The paper's number beside a validation 1 row: Table 1 has the density-derived allocation with
    Wanda at 50%; the other allocations are named as the baselines they are."""
    if sparsity != 0.5:
        return "the paper reports 50% only"
    if m.base != "wanda":
        return "not in the paper"
    return PAPER_V1_REFERENCE if m.allocation == "density-abs" else f"not in the paper ({m.allocation_declaration.title})"


def _accuracy_text(r: dict, uniform: dict | None) -> str:
    """Last-word accuracy beside perplexity (not part of the verdict): the method's, the uniform
    allocation's, and their paired difference."""
    if r.get("accuracy") is None or r["accuracy"] != r["accuracy"]:
        return ""
    text = f"; last-word accuracy {fmt(r['accuracy'], 3)} ± {fmt(r['accuracy_se'], 3)}"
    if uniform and uniform.get("accuracy") == uniform.get("accuracy"):
        text += (f" vs {fmt(uniform['accuracy'], 3)}, difference {fmt(r['acc_vs_uniform'], 3)} "
                 f"{interval_text([r['acc_vs_uniform_low'], r['acc_vs_uniform_high']])}")
    return text + f" ({r['accuracy_items']} items)"


def code_version_section(reports: list, current: str | None) -> list[str]:
    """Which code computed the results: every code version recorded in the inputs, and a warning
    when one differs from the code that wrote this summary (the summary reruns whenever the
    library's source changes, so an edit of the code never leaves stale results unannounced)."""
    from actpat.provenance import code_versions_in

    found = sorted(code_versions_in([r for r in reports if r]))
    lines = ["## Code versions", "", f"- This summary: `{current}`."]
    lines += [f"- Results computed by `{v}`." for v in found]
    stale = [v for v in found if current and v != current]
    if stale:
        lines += ["", f"**Computed by other code**: {len(stale)} code version(s) above differ from the current source "
                      f"(`{current}`). If the change affects them, recompute them, e.g. `snakemake --cores all "
                      "--forcerun score_shard` (or the rules whose code changed)."]
    return lines


def write_summary(job, findings: Path | None, pairs: list[Path], pruning: Path | None, out: Path) -> str:
    """The summary job (``job``: ``actpat.settings.SummaryJob``): ``pairs`` are the summaries of
    the configured pair sets, in their order. Every report read is checked against its checksum and
    the model (and pair set) it must be made for."""
    import dataclasses

    from actpat.errors import ResultError
    from actpat.provenance import code_version
    from actpat.results import read_json

    model = job.model.name
    settings = {**dataclasses.asdict(job), "code_version": code_version()}
    if len(pairs) != len(job.pairs):
        raise ResultError(f"{len(pairs)} pair-set summaries given for the {len(job.pairs)} configured pair sets")
    reports = {name: read_json(p, "pairs", model=model, pair_set=spec.domain)
               for p, (name, spec) in zip(pairs, job.pairs.items())}
    text = build_summary(findings and read_json(findings, "findings", model=model), reports,
                         pruning and read_json(pruning, "pruning-report", model=model), settings)
    Path(out).write_text(text)
    return text
