"""``results/<model>/SUMMARY.md``: one page with every finding and validation, its statistic and
interval, whether it holds on this model, and the paper's corresponding number beside it.

The paper's numbers come from our spec of it (``shared/docs/paper.md``): the per-layer activated
counts of Llama2-7B on C4 (§2.4), the 9×9 LLMDcos matrix of its Figure 6 (§3.4), Tables 1 and 2
(§4.5, §5) and the STS correlations (§6).
"""

from __future__ import annotations

import json
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


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _ci(ci) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci and None not in ci else ""


def _yes(flag) -> str:
    return "**yes**" if flag else "**no**"


def build_summary(findings: dict | None, pairs: dict[str, dict], pruning: dict | None, settings: dict) -> str:
    model = settings.get("model", "?")
    lines = [f"# actpat summary — {model}", "",
             "Each row: our statistic on this model with its 95% bootstrap interval, whether the paper's claim holds "
             "here, and the paper's corresponding number (arXiv 2405.17799, Llama-family 7B–13B models).", "",
             "## Setting", "",
             f"- Model: `{model}` (source: {settings.get('model_source', 'see config')}); decoder layers: "
             f"{(findings or {}).get('layers', {}).get('n', '?')}.",
             f"- Domains: {', '.join((findings or {}).get('domains', []))}; {settings.get('samples_per_domain', '?')} windows of "
             f"{settings.get('seq_len', '?')} tokens each (the paper: 64 prompts or 256-token windows per dataset).",
             "- Score: |w · ∂D/∂w| with D the largest next-token logit at the last position, accumulated in float32 "
             "(the authors' code runs the backward in float16).", ""]
    rows = []
    if findings:
        f1, f2, f3 = findings["finding1_density"], findings["finding2_similarity"], findings["finding3_relevance"]
        ab = f1.get("absolute_threshold", {})
        rows.append(("Finding 1: fewer activated weights in deep layers (ratio < 1)",
                     f"deep/shallow ratio of the per-sample activated share: {_fmt(f1['value'])} {_ci(f1['ci95'])}; "
                     f"Spearman(share, layer) {_fmt(f1['spearman_share_vs_layer'])}; with the absolute threshold "
                     f"{ab.get('threshold', '')}: {_fmt(ab.get('value'))}",
                     _yes(f1["holds"] and f1["value"] < 1),
                     f"{paper_f1_ratio():.3f} (Llama2-7B, C4, counts of §2.4, γ = 2e-6)"))
        same, cross = paper_f2()
        rows.append(("Finding 2: cross-domain similarity falls in deep layers relative to same-domain",
                     f"drop of the same−cross gap from shallow to deep: {_fmt(f2['value'])} {_ci(f2['ci95'])}; deep same "
                     f"{_fmt(f2['same_domain_deep'])} vs cross {_fmt(f2['cross_domain_deep'])}; shallow same "
                     f"{_fmt(f2['same_domain_shallow'])} vs cross {_fmt(f2['cross_domain_shallow'])}",
                     _yes(f2["holds"]),
                     f"deep layers: same {same:.2f} vs cross {cross:.2f} (Fig. 6); shallow layers similar for all pairs"))
        rows.append(("Finding 3: deep-layer similarity tracks domain relevance",
                     f"Spearman(deep LLMDcos, token relevance) ρ = {_fmt(f3.get('value'))}, p = {_fmt(f3.get('p_value'))}, "
                     f"n = {f3.get('n_pairs')} domain pairs; shallow layers ρ = {_fmt(f3.get('shallow_rho'))}",
                     _yes(f3["holds"]), "qualitative (related MMLU/BoolQ high, HumanEval apart); no statistic"))
    if pruning:
        v1 = {(r["method"], r["structure"], r["sparsity"]): r for r in pruning["validation1"]}
        for method in ("wanda-density", "wanda-density-rel", "wanda-owl"):
            r = v1.get((method, "unstructured", 0.5))
            if not r:
                continue
            wanda = v1.get(("wanda", "unstructured", 0.5))
            holds = r["vs_wanda_high"] is not None and r["vs_wanda_high"] < 1
            paper = {
                "wanda-density": "; ".join(f"{m} {o:.2f}/{u:.2f} = {o / u:.3f}" for m, (u, o) in PAPER_V1.items()),
                "wanda-density-rel": "not in the paper (scale-free density)",
                "wanda-owl": "not in the paper (OWL baseline)",
            }[method]
            rows.append((f"Validation 1: {method} beats uniform Wanda at 50% unstructured (perplexity ratio's interval below 1)",
                         f"perplexity on `{pruning['general_set']}` {_fmt(r['perplexity'], 2)} vs {_fmt(wanda['perplexity'], 2) if wanda else 'n/a'}; "
                         f"ratio {_fmt(r['vs_wanda'])} {_ci([r['vs_wanda_low'], r['vs_wanda_high']])}",
                         _yes(holds), paper))
        v2 = pruning.get("validation2", {})
        if "diagonal_best_count" in v2:
            rows.append(("Validation 2: calibrating on a domain keeps that domain's perplexity best (advantage's interval below 0, "
                         "binomial p < 0.05)",
                         f"{v2['diagonal_best_count']} of {v2['n_columns']} domains best with their own calibration "
                         f"(binomial p = {v2['p_value_binomial']:.2g}); mean log-perplexity advantage "
                         f"{_fmt(v2['mean_log_ppl_advantage'], 4)} {_ci(v2['mean_log_ppl_advantage_ci95'])} nats/token",
                         _yes(v2["mean_log_ppl_advantage_ci95"][1] < 0 and v2["p_value_binomial"] < 0.05),
                         "accuracy, not perplexity: MMLU calibration gives the best MMLU (Table 2); differences ≤ 1 s.e."))
    for name, p in pairs.items():
        deep = next((r for r in p["ranges"] if r["range"] == "[L/2, L-2)" and r["measure"] == "llmdcos"), None)
        hid = next((r for r in p["ranges"] if r["range"] == "[L/2, L-2)" and r["measure"] == "hidden_cos"), None)
        if deep is None:
            continue
        rows.append((f"Validation 3 ({name}): deep-layer LLMDcos correlates with human similarity (interval above 0)",
                     f"Spearman ρ = {_fmt(deep['rho'])} [{_fmt(deep['ci_lo'])}, {_fmt(deep['ci_hi'])}], n = {deep['n_pairs']} pairs; "
                     f"hidden-state cosine {_fmt(hid['rho']) if hid else 'n/a'}; bag of tokens {_fmt(p['bag_of_tokens']['rho'])}",
                     _yes(deep["ci_lo"] is not None and deep["ci_lo"] > 0),
                     "; ".join(f"{k} {v:.2f}" for k, v in PAPER_V3.items()) + " (Llama2-7B)"))
    lines += ["## Results", "", "| claim | this model | holds here | paper |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "## Differences in setting", "",
              "- Model: a 135M-parameter model de-quantized from 4-bit weights (embedded default) against Llama2-7B/13B, "
              "Llama-7B and Llama3-8B in fp16.",
              "- Data: packaged corpora (Python stdlib, Wikipedia excerpt, HPO definitions, SPDX licenses, Lee news, "
              "CHAMP math, Shakespeare, ChatterBot dialogue) stand in for C4, WikiText-2 and the task prompts; Lee documents "
              "and WordSim-353 stand in for STS-B and SICK.",
              f"- Pruning: {settings.get('pruning_note', 'see config')}; perplexity on held-out documents of the domains "
              "(WikiText-2 test at 4096 tokens in the paper).",
              "- Findings 1-2 use scale-free statistics: the paper's absolute threshold saturates on this model "
              "(almost every weight is above it); the absolute-threshold values are given beside them.",
              ""]
    lines += code_version_section([findings, pruning, *pairs.values()], settings.get("code_version"))
    lines += ["", "Sources: findings.json, pairs/*/summary.json, pruning/summary.json in this folder."]
    return "\n".join(lines) + "\n"


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
    """The summary job (``job``: ``actpat.settings.SummaryJob``)."""
    load = lambda p: json.loads(Path(p).read_text()) if p else None  # noqa: E731
    c = job.calibration
    from actpat.provenance import code_version

    settings = {
        "code_version": code_version(),
        "model": job.model.name, "model_source": job.model.source, "samples_per_domain": job.samples_per_domain,
        "seq_len": job.seq_len,
        "pruning_note": f"{c.windows} calibration windows of {c.seq_len} tokens from {c.domain} (the paper: 128 C4 windows "
                        f"of 4096), perplexity on at most {job.eval_max_windows} windows of {job.eval_seq_len} tokens per set",
    }
    reports = [load(p) for p in pairs]
    text = build_summary(load(findings), {r["pair_set"].removeprefix("pairs-"): r for r in reports}, load(pruning), settings)
    Path(out).write_text(text)
    return text
