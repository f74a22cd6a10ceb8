"""Figures of the findings, each written as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402


def save(fig, stem: Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(out[0], dpi=130, bbox_inches="tight")
    fig.savefig(out[1], bbox_inches="tight")
    plt.close(fig)
    return out


def density_figure(densities: dict[str, xr.Dataset], stem: Path, model: str) -> list[Path]:
    """Activated share per layer, one line per domain (the paper's Fig. 1/2), under the absolute
    thresholds, the relative-to-mean threshold and the mass-share definition."""
    ref = next(iter(densities.values()))
    panels = [("active_abs_share", "threshold", t, f"mean |s| > {t:g}") for t in ref["threshold"].values]
    panels += [("active_rel_share", "multiple", m, f"mean |s| > {m:g} × model mean") for m in ref["multiple"].values]
    panels += [("mass_share", "q", q, f"share of weights holding {q:.0%} of the layer's score") for q in ref["q"].values]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (var, dim, val, title) in zip(axes.flat, panels):
        for domain, ds in densities.items():
            ax.plot(ds["layer"] + 1, ds[var].sel({dim: val}).values, marker=".", label=domain)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylabel("share of the layer's weights")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, ncol=2)
    n = {d: ds.attrs["n_samples"] for d, ds in densities.items()}
    fig.suptitle(f"Finding 1: activated weights per layer — {model}, samples per domain: {min(n.values())}–{max(n.values())}")
    fig.tight_layout()
    return save(fig, stem)


def similarity_boxplots(values: dict[tuple[str, str], np.ndarray], pairs: list[tuple[str, str]], stem: Path, model: str) -> list[Path]:
    """Per-layer box plots of LLMDcos for chosen domain pairs (the paper's Fig. 3, whis = 1.5)."""
    fig, axes = plt.subplots(len(pairs), 1, figsize=(12, 2.6 * len(pairs)), squeeze=False, sharex=True)
    for ax, pair in zip(axes[:, 0], pairs):
        v = values[pair]
        ax.boxplot(list(v), whis=1.5, showfliers=False)
        ax.set_ylabel("LLMDcos")
        ax.set_ylim(0, 1)
        ax.set_title(f"{pair[0]} – {pair[1]}  (n = {v.shape[1]} pairs per layer)", fontsize=10)
    axes[-1, 0].set_xlabel("layer")
    fig.suptitle(f"Finding 2: per-layer LLMDcos, paper pairing — {model}")
    fig.tight_layout()
    return save(fig, stem)


def similarity_heatmap(matrix: np.ndarray, domains: list[str], stem: Path, title: str) -> list[Path]:
    """Domain × domain mean LLMDcos (the paper's Fig. 6)."""
    fig, ax = plt.subplots(figsize=(1.0 * len(domains) + 2, 0.9 * len(domains) + 1.5))
    im = ax.imshow(matrix, vmin=0, vmax=max(0.01, float(np.nanmax(matrix))), cmap="viridis")
    ax.set_xticks(range(len(domains)), domains, rotation=45, ha="right")
    ax.set_yticks(range(len(domains)), domains)
    for a in range(len(domains)):
        for b in range(len(domains)):
            ax.text(b, a, f"{matrix[a, b]:.2f}", ha="center", va="center", fontsize=8, color="white")
    fig.colorbar(im, ax=ax, label="mean LLMDcos")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def relevance_scatter(rel: np.ndarray, deep: np.ndarray, shallow: np.ndarray, labels: list[str], stem: Path, title: str) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, sim, name in zip(axes, (shallow, deep), ("shallow layers", "deep layers")):
        ax.scatter(rel, sim)
        for x, y, t in zip(rel, sim, labels):
            ax.annotate(t, (x, y), fontsize=6, alpha=0.7)
        ax.set_xlabel("domain relevance (1 − JS distance of token distributions)")
        ax.set_ylabel(f"mean LLMDcos, {name}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def pairs_rho_by_layer(table, stem: Path, title: str) -> list[Path]:
    """Spearman ρ against human scores per layer, with 95% bootstrap bands, and the baselines."""
    fig, ax = plt.subplots(figsize=(9, 4))
    for measure, label in (("llmdcos", "LLMDcos (parameter activations)"), ("hidden_cos", "cosine of mean hidden state")):
        t = table[table.measure == measure]
        ax.plot(t.layer + 1, t.rho, marker=".", label=label)
        ax.fill_between(t.layer + 1, t.ci_lo, t.ci_hi, alpha=0.2)
    bot = table[table.measure == "bag_of_tokens"].iloc[0]
    ax.axhline(bot.rho, color="gray", ls="--", label=f"bag-of-tokens cosine ({bot.rho:.2f})")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("Spearman ρ with human score")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def pairs_scatter(x: np.ndarray, human: np.ndarray, stem: Path, title: str) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(x, human, s=6, alpha=0.5)
    ax.set_xlabel("mean deep-layer LLMDcos")
    ax.set_ylabel("human similarity score")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, stem)


def layer_sparsity(layers, stem: Path) -> list[Path]:
    """Validation 1: target sparsity per layer of each layer-wise method, at each target."""
    from actpat.methods import METHODS

    unstructured = layers[layers["structure"] == "unstructured"]
    targets = sorted(unstructured["sparsity"].unique())
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.6), squeeze=False, sharey=True)
    for ax, s in zip(axes.flat, targets):
        sub = unstructured[unstructured["sparsity"] == s]
        for method, g in sub.groupby("method"):
            style = "--" if METHODS.get(method) and METHODS[method].allocation == "uniform" else "-"
            ax.plot(g["layer"] + 1, g["target"], style, marker="." if style == "-" else None, label=method)
        ax.set_title(f"mean sparsity {s:g}", fontsize=10)
        ax.set_xlabel("layer")
    axes.flat[0].set_ylabel("layer sparsity")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Validation 1: layer-wise sparsities (uniform dashed)")
    fig.tight_layout()
    return save(fig, stem)


def _method_style(method: str) -> dict:
    """One look per method of a base × allocation grid: the colour says the allocation, the line
    and marker the base (a method name outside ``actpat.methods`` gets the default cycle)."""
    from actpat.methods import METHODS
    from actpat.registry import ALLOCATIONS, BASES

    m = METHODS.get(method)
    if m is None:
        return {}
    colours = plt.get_cmap("tab10").colors
    lines, markers = ("-", "--", ":", "-."), ("o", "s", "^", "D")
    a, b = list(ALLOCATIONS).index(m.allocation), list(BASES).index(m.base)
    return {"color": colours[a % len(colours)], "ls": lines[b % len(lines)], "marker": markers[b % len(markers)]}


def perplexity_by_sparsity(table, stem: Path, general: str) -> list[Path]:
    """Validation 1: perplexity (95% bootstrap interval) against target sparsity, per method; and,
    when measured, last-word accuracy (± its standard error, clustered by window) beside it. Colour: the
    allocation; line and marker: the base."""
    with_accuracy = "accuracy" in table and table["accuracy"].notna().any()
    fig, axes = plt.subplots(1, 2 if with_accuracy else 1, figsize=(12.5 if with_accuracy else 7.5, 4.5), squeeze=False)
    ax = axes[0, 0]
    sub = table[table["structure"] == "unstructured"]
    dense = table[table["method"] == "dense"]
    for method, g in sub.groupby("method"):
        g = g.sort_values("sparsity")
        style = {"capsize": 3, "label": method, **_method_style(method)}
        err = np.vstack([g["perplexity"] - g["ci_low"], g["ci_high"] - g["perplexity"]])
        ax.errorbar(g["sparsity"], g["perplexity"], yerr=err, **style)
        if with_accuracy:
            axes[0, 1].errorbar(g["sparsity"], g["accuracy"], yerr=g["accuracy_se"], **style)
    if len(dense):
        ax.axhline(float(dense["perplexity"].iloc[0]), color="grey", ls=":", label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("target sparsity (unstructured)")
    ax.set_ylabel(f"perplexity on {general}")
    ax.set_title("Validation 1: perplexity after pruning")
    if with_accuracy:
        acc = axes[0, 1]
        if len(dense):
            acc.axhline(float(dense["accuracy"].iloc[0]), color="grey", ls=":", label="dense")
        acc.set_xlabel("target sparsity (unstructured)")
        acc.set_ylabel(f"last-word accuracy on {general}")
        acc.set_title("last-word accuracy (± s.e.)")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return save(fig, stem)


def draw_calibration_matrix(ax, matrix):
    """Perplexity relative to the column's geometric mean over calibrations, with the values
    written in and the diagonal (calibrated on the evaluated domain) outlined; returns the image."""
    values = matrix.to_numpy(dtype=float)
    rel = (values / np.exp(np.log(values).mean(0, keepdims=True)) - 1) * 100
    lim = max(np.abs(rel).max(), 1e-4)
    im = ax.imshow(rel, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(values.shape[1]), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(values.shape[0]), matrix.index)
    for r, cal in enumerate(matrix.index):
        for c, ev in enumerate(matrix.columns):
            ax.text(c, r, f"{values[r, c]:.3g}", ha="center", va="center", fontsize=7)
            if cal == ev:
                ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=2))
    ax.set_xlabel("evaluation set (held-out text)")
    ax.set_ylabel("calibration domain")
    return im


def calibration_heatmap(matrix, stem: Path, title: str) -> list[Path]:
    """Validation 2: the calibration × evaluation perplexity matrix."""
    fig, ax = plt.subplots(figsize=(1.0 * matrix.shape[1] + 2.5, 0.7 * matrix.shape[0] + 2))
    im = draw_calibration_matrix(ax, matrix)
    fig.colorbar(im, ax=ax, label="% vs column mean")
    ax.set_title(f"Validation 2: perplexity, {title}")
    fig.tight_layout()
    return save(fig, stem)


def empty_figure(stem: Path, message: str) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return save(fig, stem)


def density_profiles_figure(profiles: dict[str, tuple], stem: Path, multiple: float) -> list[Path]:
    """Finding 1 of several models on one plot: the share of each layer's weights above ``multiple``
    × the model's mean score, against the layer's position as a fraction of depth (the mean over
    domains as a line, their range as a band)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for model, (x, mean, low, high) in profiles.items():
        (line,) = ax.plot(x, mean, marker=".", label=f"{model} ({len(x)} layers)")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlim(0, 1)
    ax.set_xlabel("layer position (fraction of the model's depth)")
    ax.set_ylabel("share of the layer's weights")
    ax.set_title(f"Finding 1 across models: mean |s| > {multiple:g} × the model's mean score", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, stem)
