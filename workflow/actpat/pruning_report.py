"""Validations 1 and 2: perplexity and accuracy tables, statistics and figures from the pruning runs.

A run directory (``actpat.paths.EvaluatedModel``) holds the run's pruning report (method, targets,
measured per-layer sparsity, calibration), its perplexity on each evaluation set (per-window NLL
and last-word accuracy per item) and, when named harness tasks are configured, their accuracy.
All methods are evaluated on the same windows, so differences between methods are estimated with a
paired bootstrap over windows. Every file is checked as it is read (``load_results``): a result of
another run, set, mask or checkpoint, or one whose headline numbers disagree with its own data, stops
the report naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binom

from actpat.errors import ResultError
from actpat.paths import EvaluatedModel
from actpat.provenance import check_made_for
from actpat.results import check_derived, checked, read_json, write_json
from actpat.stats import interval, perplexity, resample

# ---- the runs' results, each file checked: its checksum, the model, run, set and mask it was made
# for, and its headline numbers against its own per-window and per-item data


def read_pruning(path: Path, model: str, run) -> dict:
    """A run's ``pruning.json`` (``run``: ``actpat.settings.PruningRun``), made for this run of
    ``model``; its overall sparsity the mean of its measured layer sparsities."""
    p = read_json(path, "pruning", model=model, run=run.key, method=run.method, structure=run.structure,
                  target_sparsity=run.sparsity)

    def check(p: dict) -> None:
        check_made_for(path, {"calibration": (p.get("calibration") or {}).get("domain")}, ResultError,
                       calibration=run.calibration)
        actual, target = p["layer_sparsity_actual"], p["layer_sparsity_target"]
        if not actual or len(actual) != len(target):
            raise ResultError(f"{path}: {len(actual)} measured layer sparsities for {len(target)} targets")
        check_derived(path, "overall_sparsity", p["overall_sparsity"], float(np.mean(actual)), "layer sparsities")
        if not isinstance(p["mask_crc32c"], int):
            raise ResultError(f"{path}: no content id of its mask (mask_crc32c)")

    return checked(path, check, p)


def read_perplexity(path: Path, model: str, run: str, evalset: str, mask: int | None) -> dict:
    """One model's perplexity on one set, made for this run (``dense``: the dense model), set and
    mask (``mask_crc32c`` of the run's ``pruning.json``); its perplexity, token count and last-word
    accuracy those of its per-window losses and per-item results."""
    s = read_json(path, "perplexity", model=model, run=run, set=evalset, mask_crc32c=mask)

    def check(s: dict) -> None:
        nll, count, n = np.asarray(s["window_nll"], dtype=float), np.asarray(s["window_tokens"]), s["n_windows"]
        if not 0 < n == len(nll) == len(count) == len(s["window_ids"]):
            raise ResultError(f"{path}: n_windows {n}, but {len(nll)} window losses, {len(count)} token counts and "
                              f"{len(s['window_ids'])} window ids")
        if count.dtype.kind != "i" or (count != s["seq_len"] - 1).any():
            raise ResultError(f"{path}: window token counts other than seq_len - 1 = {s['seq_len'] - 1}")
        if not (np.isfinite(nll) & (nll >= 0)).all():
            raise ResultError(f"{path}: a window loss is negative or not finite")
        check_derived(path, "tokens_predicted", s["tokens_predicted"], int(count.sum()), "window token counts")
        check_derived(path, "perplexity", s["perplexity"], perplexity(nll, count), "window losses")
        acc = s["accuracy"]
        if acc and acc["value"] is not None:
            correct, windows = np.asarray(acc["item_correct"], dtype=float), np.asarray(acc["item_windows"])
            if not 0 < acc["n_items"] == len(correct) == len(windows) == len(acc["item_ids"]):
                raise ResultError(f"{path}: n_items {acc['n_items']}, but {len(correct)} item results")
            if not (np.isin(correct, (0.0, 1.0)).all() and ((windows >= 0) & (windows < n)).all()):
                raise ResultError(f"{path}: an item result other than 0 or 1, or an item of no window")
            check_derived(path, "last-word accuracy", acc["value"], float(np.mean(correct)), "item results")

    return checked(path, check, s)


def read_zero_shot(path: Path, model: str, run: str, mask: int | None) -> dict:
    """One model's accuracy on the named harness tasks, made for this run and mask; each task's
    accuracy the mean of its items' results (a group's is the harness's aggregate)."""
    z = read_json(path, "zero-shot", model=model, run=run, mask_crc32c=mask)

    def check(z: dict) -> None:
        for task, res in z["results"].items():
            if "subtasks" not in res and res["item_correct"]:
                check_derived(path, f"{task} {res['metric']}", res["value"], float(np.mean(res["item_correct"])),
                              "item results")

    return checked(path, check, z)


def _shared(results: dict[str, dict], field: str, what: str) -> None:
    """Results compared with each other must agree on ``field``: the first one that does not is
    named with the first result."""
    (first, ref), *rest = results.items()
    for path, r in rest:
        if r[field] != ref[field]:
            raise ResultError(f"{path}: {what} than {first}")


def load_results(job, model: str) -> tuple[dict, dict[str, dict]]:
    """The dense model's and every run's results (``job``: ``actpat.settings.PruningReportJob``),
    from their files (``actpat.paths.EvaluatedModel``), each checked; all made from one checkpoint,
    and every model's perplexity on a set measured on the same windows. Returns the dense model and
    the runs by key, each {"key", "mask", "sets": {set: perplexity}, ...}."""
    read: dict[str, dict] = {}

    def evaluated(files: EvaluatedModel, key: str, mask: int | None, sets: list[str], **about) -> dict:
        out = {"key": key, "mask": mask, **about, "sets": {}}
        for s in sets:
            out["sets"][s] = read[files.perplexity(s)] = read_perplexity(files.perplexity(s), model, key, s, mask)
        if job.zero_shot:
            out["zero_shot"] = read[files.zeroshot] = read_zero_shot(files.zeroshot, model, key, mask)
        return out

    dense = evaluated(EvaluatedModel.dense(model), "dense", None, job.dense_sets)
    runs = {}
    for r in dict.fromkeys(job.validation1 + job.validation2):
        files = EvaluatedModel.run(model, r.key)
        pruning = read[files.report] = read_pruning(files.report, model, r)
        runs[r.key] = evaluated(files, r.key, pruning["mask_crc32c"], job.sets_of(r), method=r.method,
                                structure=r.structure, sparsity=r.sparsity, calibration=r.calibration, pruning=pruning)
    _shared(read, "checkpoint_sha256", "made from another checkpoint")
    for s in dict.fromkeys(r["set"] for r in read.values() if r["kind"] == "actpat.perplexity"):
        _shared({p: r for p, r in read.items() if r.get("set") == s}, "window_ids", "evaluated on other windows")
    return dense, runs


def evaluation_dtype(dense: dict, runs: list[dict], zero_shot: pd.DataFrame | None = None) -> str:
    """The one compute dtype of every evaluation reported here, perplexity and zero-shot (results
    written before the setting existed were float32), all with one attention kernel (results
    written before it was recorded used SDPA). Models evaluated in different dtypes or with
    different attention kernels are refused: their per-window losses differ by the rounding
    (about 1e-3 relative in bfloat16), not only by the pruning, so a paired comparison would mix
    the two."""
    found: dict[tuple[str, str], list[str]] = {}
    for name, sets in [("dense", dense["sets"])] + [(r["key"], r["sets"]) for r in runs]:
        for evalset, s in sets.items():
            found.setdefault((s.get("dtype", "float32"), s.get("attention", "sdpa")), []).append(f"{name} on {evalset}")
    for row in [] if zero_shot is None else zero_shot.itertuples():
        found.setdefault((row.dtype, row.attention), []).append(
            f"{row.method} {row.structure} {row.sparsity:g} ({row.calibration}) on {row.task}")
    if len(found) > 1:
        detail = "; ".join(f"{d} with {a} attention: {len(w)} (e.g. {w[0]})" for (d, a), w in sorted(found.items()))
        raise ValueError(f"evaluations computed differently cannot be compared ({detail}): set "
                         "pruning.evaluation.dtype explicitly and rerun the evaluation jobs")
    return next(iter(found), ("float32", "sdpa"))[0]


def _mean_nll(s: dict, idx=None) -> np.ndarray | float:
    nll, cnt = np.asarray(s["window_nll"]), np.asarray(s["window_tokens"])
    if idx is None:
        return float(nll.sum() / cnt.sum())
    return nll[idx].sum(-1) / cnt[idx].sum(-1)


def paired_ratio(a: dict, b: dict, n_boot: int, seed: int) -> tuple[float, list[float]]:
    """Perplexity ratio a / b on the same windows, with a paired bootstrap interval."""
    if a["window_ids"] != b["window_ids"]:
        raise ValueError("perplexities compared on different windows")
    idx = resample(len(a["window_nll"]), n_boot, np.random.default_rng(seed))
    boot = np.exp(_mean_nll(a, idx) - _mean_nll(b, idx))
    return float(np.exp(_mean_nll(a) - _mean_nll(b))), interval(boot)


def _accuracy(s: dict) -> dict | None:
    """A model's last-word accuracy on a set (``None`` when it was not measured or is undefined)."""
    acc = s.get("accuracy")
    return acc if acc and acc.get("value") is not None else None


def _window_sums(acc: dict, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    correct = np.asarray(acc["item_correct"], dtype=float)
    item_window = np.asarray(acc["item_windows"])
    index = np.searchsorted(windows, item_window)
    return np.bincount(index, correct, len(windows)), np.bincount(index, minlength=len(windows)).astype(float)


def paired_accuracy_difference(a: dict, b: dict, n_boot: int, seed: int) -> tuple[float, list[float]]:
    """Accuracy a − b on the same items, with a paired bootstrap interval that resamples evaluation
    windows (items cut from one window are not independent)."""
    if a["item_ids"] != b["item_ids"]:
        raise ValueError("accuracies compared on different items")
    windows = np.unique(a["item_windows"])
    sa, n = _window_sums(a, windows)
    sb, _ = _window_sums(b, windows)
    idx = resample(len(windows), n_boot, np.random.default_rng(seed))
    boot = (sa[idx].sum(1) - sb[idx].sum(1)) / np.maximum(n[idx].sum(1), 1)
    return float((sa.sum() - sb.sum()) / n.sum()), interval(boot)


def validation1_table(runs: list[dict], dense: dict, general: str, n_boot: int, seed: int) -> pd.DataFrame:
    from actpat.stats import bootstrap_perplexity

    def ci(s: dict) -> list[float]:
        return bootstrap_perplexity(np.asarray(s["window_nll"]), np.asarray(s["window_tokens"]), n_boot, seed)

    from actpat.methods import uniform_of

    by_key = {(r["method"], r["structure"], r["sparsity"]): r for r in runs}

    def reference(r: dict, method: str) -> dict | None:
        ref = by_key.get((method, r["structure"], r["sparsity"]))
        return None if ref is None or ref is r else ref["sets"][general]

    def versus(r: dict, method: str) -> tuple[float, list[float]]:
        ref = reference(r, method)
        if ref is None:
            return np.nan, [np.nan, np.nan]
        return paired_ratio(r["sets"][general], ref, n_boot, seed)

    def accuracy_columns(s: dict, ref: dict | None) -> dict:
        """Last-word accuracy (its standard error) and the paired difference to ``ref``."""
        acc = _accuracy(s)
        cols = {"accuracy": np.nan, "accuracy_se": np.nan, "accuracy_items": 0, "acc_vs_uniform": np.nan,
                "acc_vs_uniform_low": np.nan, "acc_vs_uniform_high": np.nan}
        if acc is None:
            return cols
        cols.update(accuracy=acc["value"], accuracy_se=acc["stderr"], accuracy_items=acc["n_items"])
        ref_acc = _accuracy(ref) if ref else None
        if ref_acc is not None:
            diff, ci = paired_accuracy_difference(acc, ref_acc, n_boot, seed)
            cols.update(acc_vs_uniform=diff, acc_vs_uniform_low=ci[0], acc_vs_uniform_high=ci[1])
        return cols

    rows = []
    d = dense["sets"][general]
    d_ci = ci(d)
    rows.append({"method": "dense", "structure": "-", "sparsity": 0.0, "actual_sparsity": 0.0, "perplexity": d["perplexity"],
                 "ci_low": d_ci[0], "ci_high": d_ci[1], "vs_wanda": np.nan, "vs_wanda_low": np.nan,
                 "vs_wanda_high": np.nan, "uniform": "-", "vs_uniform": np.nan, "vs_uniform_low": np.nan, "vs_uniform_high": np.nan,
                 "calibration": "-", "n_windows": d["n_windows"], "seq_len": d["seq_len"],
                 "tokens": d["tokens_predicted"], **accuracy_columns(d, None)})
    for r in sorted(runs, key=lambda r: (r["structure"] != "unstructured", r["structure"], r["sparsity"], r["method"])):
        s = r["sets"][general]
        ratio, rci = versus(r, "wanda")
        uniform = uniform_of(r["method"])
        u_ratio, u_ci = (ratio, rci) if uniform == "wanda" else versus(r, uniform)
        s_ci = ci(s)
        rows.append({"method": r["method"], "structure": r["structure"], "sparsity": r["sparsity"],
                     "actual_sparsity": r["pruning"]["overall_sparsity"], "perplexity": s["perplexity"], "ci_low": s_ci[0],
                     "ci_high": s_ci[1], "vs_wanda": ratio, "vs_wanda_low": rci[0], "vs_wanda_high": rci[1],
                     "uniform": uniform, "vs_uniform": u_ratio, "vs_uniform_low": u_ci[0], "vs_uniform_high": u_ci[1],
                     "calibration": r["calibration"] or "-", "n_windows": s["n_windows"], "seq_len": s["seq_len"],
                     "tokens": s["tokens_predicted"], **accuracy_columns(s, reference(r, uniform))})
    return pd.DataFrame(rows)


def validation2(runs: list[dict], dense: dict, n_boot: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Calibration × evaluation perplexity matrix and the diagonal statistics. Rows are the
    calibration domains in the configured order; columns the same domains in the same order (so the
    matching calibration is the diagonal), then the other evaluation sets."""
    calibs = list(dict.fromkeys(r["calibration"] for r in runs))
    by_cal = {r["calibration"]: r for r in runs}
    shared = [e for e in dense["sets"] if all(e in by_cal[c]["sets"] for c in calibs)]
    evals = [c for c in calibs if c in shared] + [e for e in shared if e not in calibs]
    matrix = pd.DataFrame([[by_cal[c]["sets"][e]["perplexity"] for e in evals] for c in calibs], index=calibs, columns=evals)
    cols = [e for e in evals if e in calibs]
    stats = {"calibration_domains": calibs, "evaluation_sets": evals, "columns_with_diagonal": cols,
             "rule": "holds when the matching calibration's mean log-perplexity advantage has its 95% interval below 0 "
                     "and the count of columns where it is best has binomial p < 0.05"}
    if not cols or len(calibs) < 2:
        stats["note"] = "needs at least two calibration domains that are also evaluation sets"
        stats["holds"], stats["undefined"] = None, "needs at least two calibration domains that are also evaluation sets"
        return matrix, stats
    from actpat.stats import undefined_because

    n_windows = min(len(by_cal[calibs[0]]["sets"][e]["window_nll"]) for e in cols)
    best = {e: bool(matrix[e].idxmin() == e) for e in cols}
    beats_mean = {e: bool(np.log(matrix.loc[e, e]) < np.log(matrix.loc[[c for c in calibs if c != e], e]).mean()) for e in cols}
    k, n, p_row = sum(best.values()), len(cols), 1.0 / len(calibs)

    def advantage(idx_by_eval=None) -> float:
        # mean over columns of: log ppl(calibrated on the column's domain) − mean log ppl(other calibrations)
        out = []
        for e in cols:
            idx = None if idx_by_eval is None else idx_by_eval[e]
            diag = _mean_nll(by_cal[e]["sets"][e], idx)
            off = np.mean([_mean_nll(by_cal[c]["sets"][e], idx) for c in calibs if c != e], axis=0)
            out.append(diag - off)
        return np.mean(out, axis=0)

    rng = np.random.default_rng(seed)
    idx = {e: resample(len(by_cal[calibs[0]]["sets"][e]["window_nll"]), n_boot, rng) for e in cols}
    boot = advantage(idx)
    stats.update({
        "diagonal_best_in_column": best,
        "diagonal_best_count": k,
        "n_columns": n,
        "p_value_binomial": float(binom.sf(k - 1, n, p_row)),
        "chance_per_column": p_row,
        "diagonal_below_offdiagonal_mean": beats_mean,
        "mean_log_ppl_advantage": float(advantage()),
        "mean_log_ppl_advantage_ci95": interval(boot),
        "relative_ppl_advantage": float(np.exp(advantage()) - 1),
    })
    why = undefined_because(windows_per_set=n_windows)
    ci = stats["mean_log_ppl_advantage_ci95"]
    stats["holds"] = None if why else bool(ci[1] < 0 and stats["p_value_binomial"] < 0.05)
    stats["undefined"] = why
    return matrix, stats


def validation2_accuracy(runs: list[dict], n_boot: int, seed: int) -> tuple[pd.DataFrame | None, dict]:
    """Calibration × evaluation last-word accuracy, and the paper's form of validation 2 (its Table
    2 is accuracy by calibration set): the matching calibration's mean accuracy advantage over the
    other calibrations, per column with a diagonal, with an interval that resamples each set's windows."""
    calibs = list(dict.fromkeys(r["calibration"] for r in runs))
    by_cal = {r["calibration"]: r for r in runs}
    evals = [e for e in calibs if all(e in by_cal[c]["sets"] and _accuracy(by_cal[c]["sets"][e]) for c in calibs)]
    rule = ("holds when the matching calibration's mean accuracy advantage over the other calibrations has its 95% "
            "interval above 0 (windows resampled)")
    if len(evals) < 2:
        why = "needs last-word accuracy of at least two calibration domains on each other's held-out text"
        return None, {"rule": rule, "holds": None, "undefined": why}
    acc = {(c, e): _accuracy(by_cal[c]["sets"][e]) for c in calibs for e in evals}
    for c, e in acc:
        if acc[c, e]["item_ids"] != acc[e, e]["item_ids"]:
            raise ValueError(f"last-word accuracy of calibrations {c} and {e} on {e} was measured on different items")
    matrix = pd.DataFrame([[acc[c, e]["value"] for e in evals] for c in calibs], index=calibs, columns=evals)
    rng = np.random.default_rng(seed)
    point, boot = [], []
    for e in evals:
        windows = np.unique(acc[e, e]["item_windows"])
        sums = {c: _window_sums(acc[c, e], windows) for c in calibs}
        idx = resample(len(windows), n_boot, rng)
        rate = {c: (sc.sum() / n.sum(), sc[idx].sum(1) / np.maximum(n[idx].sum(1), 1)) for c, (sc, n) in sums.items()}
        others = [c for c in calibs if c != e]
        point.append(rate[e][0] - np.mean([rate[c][0] for c in others]))
        boot.append(rate[e][1] - np.mean([rate[c][1] for c in others], axis=0))
    from actpat.stats import undefined_because

    ci = interval(np.mean(boot, axis=0))
    # the bootstrap resamples windows: the windows that gave items are the sample size
    why = undefined_because(windows_with_items_per_set=min(len(set(acc[e, e]["item_windows"])) for e in evals))
    return matrix, {"rule": rule, "evaluation_sets": evals, "mean_accuracy_advantage": float(np.mean(point)),
                    "mean_accuracy_advantage_ci95": ci, "diagonal_best_count": int(sum(matrix[e].idxmax() == e for e in evals)),
                    "n_columns": len(evals), "n_items": {e: acc[e, e]["n_items"] for e in evals},
                    "holds": None if why else bool(ci[0] > 0), "undefined": why}


def zero_shot_table(runs: list[dict], dense: dict) -> pd.DataFrame:
    """Accuracy of every model on the named harness tasks (``zeroshot.json``, read by
    ``load_results``), with the harness's standard error."""
    rows = []
    for label, z in [({"method": "dense", "structure": "-", "sparsity": 0.0, "calibration": "-"}, dense["zero_shot"])] + [
            ({"method": r["method"], "structure": r["structure"], "sparsity": r["sparsity"], "calibration": r["calibration"] or "-"},
             r["zero_shot"]) for r in runs]:
        for task, res in z["results"].items():
            rows.append({**label, "task": task, "kind": "group" if "subtasks" in res else "task", "metric": res["metric"],
                         "value": res["value"], "stderr": res["stderr"],
                         "n_items": res["n_items"], "harness": z["harness"], "dtype": z.get("dtype", "float32"),
                         "attention": z.get("attention", "sdpa")})
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=floatfmt, missingval="")


def write_pruning_report(job, model: str, out_dir: Path, log=print) -> dict:
    """The pruning_report job (``job``: ``actpat.settings.PruningReportJob``): the results of
    ``model``'s runs and of its dense model (``load_results``)."""
    from actpat import plots

    general, n_boot, seed = job.general, job.bootstrap, job.seed
    v2_method, v2_sparsity = job.v2_method, job.v2_sparsity

    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    dense_ppl, runs = load_results(job, model)
    r1 = [runs[r.key] for r in job.validation1]
    r2 = [runs[r.key] for r in job.validation2]
    zs = zero_shot_table(list(runs.values()), dense_ppl) if job.zero_shot else None
    dtype = evaluation_dtype(dense_ppl, r1 + r2, zs)
    v1 = validation1_table(r1, dense_ppl, general, n_boot, seed)
    v1.to_csv(out_dir / "validation1.csv", index=False)
    layer_rows = []
    for r in r1:
        for i, (t, a) in enumerate(zip(r["pruning"]["layer_sparsity_target"], r["pruning"]["layer_sparsity_actual"])):
            layer_rows.append({"method": r["method"], "structure": r["structure"], "sparsity": r["sparsity"], "layer": i,
                               "target": t, "actual": a})
    layers = pd.DataFrame(layer_rows)
    layers.to_csv(out_dir / "layer_sparsity.csv", index=False)
    from actpat.provenance import code_version, code_versions_in

    used = code_versions_in([r["pruning"] for r in r1 + r2]) | code_versions_in(dense_ppl)
    used |= code_versions_in([r["sets"] for r in r1 + r2])
    summary = {"model": model, "general_set": general, "evaluation_dtype": dtype, "validation1": json.loads(v1.to_json(orient="records")),
               "code_version": code_version(), "code_versions_of_runs": sorted(used)}
    md = [f"# Pruning report: {model}", "", f"Every model was evaluated in {dtype} (losses summed in float32 or wider).", "",
          f"## Validation 1: perplexity on `{general}` by method and target sparsity", "",
          "`vs_wanda`: perplexity ratio to uniform Wanda at the same sparsity and structure (paired bootstrap over windows, 95%); "
          "`vs_uniform`: the same against the uniform allocation of the method's own base (`uniform`). "
          "`accuracy`: last-word accuracy (items cut from the same windows, each predicted after the window before it; "
          "`accuracy_se` its standard error, clustered by window); `acc_vs_uniform`: its difference to the uniform allocation (paired bootstrap over windows).", "",
          _markdown(v1), ""]
    if r2:
        matrix, stats = validation2(r2, dense_ppl, n_boot, seed)
        matrix.to_csv(out_dir / "validation2.csv", index_label="calibration")
        summary["validation2"] = {"method": v2_method, "sparsity": v2_sparsity, "perplexity": json.loads(matrix.to_json()), **stats}
        md += [f"## Validation 2: {v2_method} at sparsity {v2_sparsity}, calibration domain (rows) × evaluation set (columns)", "",
               matrix.reset_index(names="calibration").pipe(_markdown), ""]
        if "diagonal_best_count" in stats:
            md += [f"The calibration domain gives the lowest perplexity on its own held-out text in "
                   f"**{stats['diagonal_best_count']} of {stats['n_columns']}** columns (chance {stats['chance_per_column']:.2f} "
                   f"per column, binomial p = {stats['p_value_binomial']:.3g}); its mean log-perplexity advantage over the other "
                   f"calibrations is {stats['mean_log_ppl_advantage']:.4f} nats/token "
                   f"[{stats['mean_log_ppl_advantage_ci95'][0]:.4f}, {stats['mean_log_ppl_advantage_ci95'][1]:.4f}] "
                   "(negative = the matching calibration is better).", ""]
        plots.calibration_heatmap(matrix, out_dir / "figures" / "validation2_matrix", f"{v2_method} at {v2_sparsity}")
        acc_matrix, acc_stats = validation2_accuracy(r2, n_boot, seed)
        summary["validation2"]["accuracy"] = {**acc_stats, "matrix": None if acc_matrix is None else json.loads(acc_matrix.to_json())}
        (out_dir / "validation2_accuracy.csv").unlink(missing_ok=True)  # none of an earlier configuration
        if acc_matrix is not None:
            acc_matrix.to_csv(out_dir / "validation2_accuracy.csv", index_label="calibration")
            lo, hi = acc_stats["mean_accuracy_advantage_ci95"]
            md += ["Last-word accuracy, calibration domain (rows) × evaluation set (columns):", "",
                   acc_matrix.reset_index(names="calibration").pipe(_markdown), "",
                   f"The matching calibration is best in **{acc_stats['diagonal_best_count']} of {acc_stats['n_columns']}** "
                   f"columns; its mean accuracy advantage over the other calibrations is "
                   f"{acc_stats['mean_accuracy_advantage']:+.4f} [{lo:+.4f}, {hi:+.4f}] (windows resampled).", ""]
    else:
        pd.DataFrame().to_csv(out_dir / "validation2.csv")
        plots.empty_figure(out_dir / "figures" / "validation2_matrix", "Validation 2: no calibration domains configured")
    (out_dir / "zeroshot.csv").unlink(missing_ok=True)  # none of an earlier configuration
    if zs is not None:
        zs.to_csv(out_dir / "zeroshot.csv", index=False)
        summary["zero_shot"] = json.loads(zs.to_json(orient="records"))
        md += ["## Zero-shot accuracy (lm-evaluation-harness tasks)", "", _markdown(zs), ""]
    plots.layer_sparsity(layers, out_dir / "figures" / "layer_sparsity")
    plots.perplexity_by_sparsity(v1, out_dir / "figures" / "validation1_perplexity", general)
    (out_dir / "report.md").write_text("\n".join(md))
    write_json(summary, out_dir / "summary.json", "pruning-report")
    log("\n".join(md))
    return summary
