"""The Snakemake workflow itself: dry runs, lint, config errors before any job, and the smoke run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from actpat.snakemake_plan import job_counts
from conftest import SMOKE, run_snakemake as run, with_value


@pytest.mark.parametrize("configfile", [None, SMOKE], ids=["shipped", "smoke"])
def test_dry_run_and_lint(configfile, tmp_path):
    extra = ["--configfile", str(configfile)] if configfile else []
    dry = run(["-n", "--cores", "2", *extra], cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr[-2000:]
    n_domains = 2 if configfile else 8
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts["sample_domain"] == n_domains and counts["density"] == n_domains
    assert counts["score_shard"] == 2 * n_domains + (1 if configfile else 3) and counts["findings"] == 1
    assert counts["pairs_report"] == (1 if configfile else 2)
    # validation 1: (methods x sparsities + N:M runs) on the general set; validation 2: one run per
    # calibration domain (one of them shared with validation 1) on every domain's held-out text
    n_runs = 6 + 1 if configfile else 5 * 3 + 2 + 7
    assert counts["prune"] == n_runs
    # one job per (model, set): runs of validation 1 alone on the general set, the n_domains runs of
    # validation 2 (one shared with validation 1) on every domain
    assert counts["perplexity"] == (n_runs - n_domains) + n_domains * n_domains == (9 if configfile else 80)
    assert counts["calibration_windows"] == counts["eval_windows"] == n_domains
    assert counts["perplexity_dense"] == n_domains and counts["pruning_report"] == 1
    lint = run(["--lint", *extra], cwd=tmp_path)
    assert lint.returncode == 0 and "good condition" in lint.stdout + lint.stderr, lint.stdout[-2000:]


def test_bad_config_stops_before_any_job(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["scoring"]["target"] = "min_logit"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = run(["--cores", "2", "--configfile", str(bad)], cwd=tmp_path)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "config error at scoring.target: 'min_logit' is not allowed; choose one of 'max_logit', 'mean_loglik'" in out
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_smoke_workflow_end_to_end(smoke_run):
    from actpat.store import open_mask, open_samples, open_scores

    tmp_path, res = smoke_run
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    # a local run: every job was forked by a fork server (actpat.forkserver), which ended with the run
    job_logs = list((tmp_path / "logs/smollm2-135m").rglob("*.log"))
    assert len(job_logs) > 30 and all("forked by the fork server" in p.read_text() for p in job_logs)
    assert sorted(p.name for p in (tmp_path / "logs/fork_server").iterdir()) == [
        f"threads-{n}-{kind}.log" for n in (1, 2) for kind in ("light", "torch")]
    # the model jobs took the checkpoint the torch server loaded and checked, once per dtype; the
    # reductions and reports forked from the light server and imported no torch
    logs = tmp_path / "logs/smollm2-135m"
    model_logs = [p for rule in ("score_shard", "prune", "perplexity") for p in (logs / rule).rglob("*.log")]
    assert len(model_logs) > 20 and all("held by the fork server" in p.read_text() for p in model_logs)
    assert (tmp_path / "logs/fork_server/threads-2-torch.log").read_text().count("holds") <= 2
    light = [logs / "summary.log", logs / "pruning_report.log", logs / "findings.log", logs / "similarity.log"]
    assert all("forked by the fork server (light)" in p.read_text() for p in light)
    for domain in ("code", "medical"):
        samples = open_samples(tmp_path / f"results/smollm2-135m/samples/{domain}.zarr")
        assert samples["token_ids"].shape == (4, 32)
        ids = []
        for shard in (0, 1):
            ds = open_scores(tmp_path / f"results/smollm2-135m/scores/{domain}/shard-{shard}.zarr")
            assert ds.attrs["domain"] == domain and ds.attrs["model"] == "smollm2-135m"
            assert ds["mlp.down_proj"].shape == (30, 576, 1536)
            assert np.isfinite(ds["l1"].values).all() and (ds["l1"].values > 0).all()
            ids += list(ds["sample"].values)
            assert (tmp_path / f"logs/smollm2-135m/score_shard/{domain}-{shard}.bench.tsv").exists()
        assert ids == list(samples["sample"].values)
        log = (tmp_path / f"logs/smollm2-135m/score_shard/{domain}-0.log").read_text()
        assert "scoring: 100%" in log and "done in" in log
    # findings of the smoke run
    findings = json.loads((tmp_path / "results/smollm2-135m/findings.json").read_text())
    for key in ("finding1_density", "finding2_similarity"):
        assert isinstance(findings[key]["holds"], bool) and np.isfinite(findings[key]["value"])
    f3 = findings["finding3_relevance"]  # 2 domains = 1 pair: no rank correlation, and it says so
    assert f3["n_pairs"] == 1 and f3["value"] is None and f3["holds"] is None and "at least 3" in f3["undefined"]
    assert f3["mantel_p_value"] is None  # no p-value for an undefined statistic
    for fig in ("finding1_density", "finding2_similarity_boxplots", "finding2_similarity_deep", "finding3_relevance"):
        for ext in (".png", ".svg"):
            assert (tmp_path / f"results/smollm2-135m/figures/{fig}{ext}").stat().st_size > 5000
    # validation 3 on the smoke pair set
    summary = json.loads((tmp_path / "results/smollm2-135m/pairs/words/summary.json").read_text())
    assert summary["n_pairs"] == 12 and summary["pair_set"] == "pairs-words"
    assert summary["provenance"]["code_version"] and summary["provenance"]["checkpoint_sha256"]
    assert {r["range"] for r in summary["ranges"]} >= {"deep", "shallow", "[2L/3, L-2)", "[20, L-2) (paper)"}
    assert summary["deep_layers"] == [15, 28] and summary["n_texts"] == 19
    assert "text resamples" in next(r for r in summary["ranges"] if r["range"] == "deep")["p_method"]
    table = (tmp_path / "results/smollm2-135m/pairs/words/spearman_by_layer.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 30 + 1  # header, (llmdcos, hidden_cos) x 30 layers, bag of tokens
    # validations 1-2 on the smoke run
    pr = tmp_path / "results/smollm2-135m/pruning"
    v1 = pd.read_csv(pr / "validation1.csv")
    assert set(v1["method"]) == {"dense", "magnitude", "wanda", "wanda-density", "wanda-owl", "sparsegpt-alpha"}
    assert (v1["n_windows"] == 4).all() and (v1["seq_len"] == 32).all() and np.isfinite(v1["perplexity"]).all()
    # last-word accuracy beside perplexity, on items cut from the same windows (read off the same passes)
    assert (v1["accuracy_items"] >= 4).all() and v1["accuracy"].between(0, 1).all() and (v1["accuracy_se"] >= 0).all()
    layerwise = v1[v1["method"].isin(["wanda-density", "wanda-owl"])]
    assert layerwise["acc_vs_uniform"].notna().all() and (layerwise["acc_vs_uniform_low"] <= layerwise["acc_vs_uniform_high"]).all()
    # no uniform SparseGPT run in the smoke preset: no difference to it
    assert v1.loc[v1["method"] == "sparsegpt-alpha", "acc_vs_uniform"].isna().all()
    dense_ppl = v1.loc[v1["method"] == "dense", "perplexity"].item()
    assert (v1.loc[v1["method"] != "dense", "perplexity"] > dense_ppl).all()  # pruning half the weights costs perplexity
    run_dir = pr / "runs/code/wanda-owl/unstructured/0.5"
    report = json.loads((run_dir / "pruning.json").read_text())
    assert len(report["layer_sparsity_actual"]) == 30 and abs(np.mean(report["layer_sparsity_target"]) - 0.5) < 1e-9
    assert report["calibration"]["windows"] == 2 and report["calibration"]["seq_len"] == 32
    _check_mask(tmp_path, run_dir, report)
    # SparseGPT with AlphaPruning's allocation: its mask store holds the changed weights too
    sg = json.loads((pr / "runs/code/sparsegpt-alpha/unstructured/0.5/pruning.json").read_text())
    assert np.asarray(sg["alpha"]["matrix_alpha"]).shape == (30, 7) and sg["base_options"] == {"block": 128, "damp": 0.01}
    assert abs(np.mean(sg["layer_sparsity_target"]) - 0.5) < 1e-9 and np.std(sg["layer_sparsity_target"]) > 0
    sg_mask = open_mask(pr / "runs/code/sparsegpt-alpha/unstructured/0.5/mask.zarr")
    # only the kept weights, in the checkpoint's dtype (float32: the embedded model is de-quantized)
    assert sg_mask.attrs["kept_weights"] == "float32" and "mlp.down_proj.weight" not in sg_mask
    kept = sum(sg_mask[f"{m}.kept"].size for m in sg_mask.attrs["matrices"])
    assert kept == round((1 - sg["overall_sparsity"]) * 30 * sum(r * c for r, c in sg_mask.attrs["shapes"]))
    nm = json.loads((pr / "runs/code/wanda/2of4/0.5/pruning.json").read_text())
    assert nm["layer_sparsity_actual"] == [0.5] * 30
    summary = json.loads((pr / "summary.json").read_text())
    assert summary["validation2"]["n_columns"] == 2 and summary["validation2"]["calibration_domains"] == ["code", "medical"]
    v2_acc = summary["validation2"]["accuracy"]
    assert v2_acc["n_columns"] == 2 and set(v2_acc["matrix"]) == {"code", "medical"}
    assert "last-word accuracy" in (tmp_path / "logs/smollm2-135m/perplexity/dense/medical.log").read_text()
    v2 = pd.read_csv(pr / "validation2.csv", index_col=0)
    assert list(v2.index) == list(v2.columns[: len(v2.index)]) == ["code", "medical"]  # the diagonal is the matching pair
    assert "perplexity medical: 100%|" in (tmp_path / "logs/smollm2-135m/perplexity/dense/medical.log").read_text()
    # a second run has nothing to do
    again = run(["--cores", "2", "--configfile", str(SMOKE), "-n"], cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr

    # adding a domain plans only that domain's jobs and the reductions over all domains
    extra = tmp_path.parent / "extra"
    extra.mkdir()
    for k in range(6):  # several documents: perplexity needs held-out ones
        (extra / f"part{k}.txt").write_text(" ".join([f"Part {k} of a new domain of plain text, long enough."] * 40))
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["domains"]["extra"] = {"source": "files", "paths": [str(extra / "*.txt")], "pack": True}
    more = tmp_path.parent / "more.yaml"
    more.write_text(yaml.safe_dump(cfg))
    plan = run(["--cores", "2", "--configfile", str(more), "-n"], cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-2000:]
    # validation 2 gains a row (one prune: the new domain's model, on every set) and a column (each
    # other validation-2 model and the dense one on the new set); nothing else is pruned or evaluated
    assert job_counts(plan.stdout + plan.stderr) == {
        "sample_domain": 1, "score_shard": 2, "density": 1, "similarity": 1, "findings": 1,
        "calibration_windows": 1, "eval_windows": 1, "prune": 1, "perplexity": 3 + 2, "perplexity_dense": 1,
        "pruning_report": 1, "summary": 1, "all": 1, "total": 18}
    out = plan.stdout + plan.stderr
    assert "domain=extra" in out and "domain=code" not in out and "run=extra/wanda-density/unstructured/0.5" in out

    # changing only pruning settings prunes again without scoring; only evaluation settings
    # evaluates again without pruning; only the bootstrap redoes the report alone
    def plan_with(**changes):
        cfg = yaml.safe_load(SMOKE.read_text())
        for path, value in changes.items():
            with_value(cfg, path, value)
        f = tmp_path.parent / "changed.yaml"
        f.write_text(yaml.safe_dump(cfg))
        res = run(["--cores", "2", "--configfile", str(f), "-n"], cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        return job_counts(res.stdout + res.stderr)

    alpha = plan_with(**{"pruning.ratios.alpha": 3.0})  # the density-derived runs: code (V1 and V2) and medical
    assert alpha == {"prune": 2, "perplexity": 4, "pruning_report": 1, "summary": 1, "all": 1, "total": 9}
    windows = plan_with(**{"pruning.evaluation.max_windows": 3})
    assert windows == {"eval_windows": 2, "perplexity": 9, "perplexity_dense": 2, "pruning_report": 1, "summary": 1,
                       "all": 1, "total": 16}
    # accuracy settings: every evaluation again (one job per model and set), nothing pruned again
    assert plan_with(**{"pruning.evaluation.accuracy.context_words": 6}) == {
        "perplexity": 9, "perplexity_dense": 2, "pruning_report": 1, "summary": 1, "all": 1, "total": 14}
    # named harness tasks: one zero-shot job per model (7 pruned, 1 dense), nothing else but the report
    assert plan_with(**{"pruning.evaluation.accuracy.tasks": ["piqa"]}) == {
        "zero_shot": 7, "zero_shot_dense": 1, "pruning_report": 1, "summary": 1, "all": 1, "total": 11}
    # a method's own settings reach its runs only: AlphaPruning's epsilon, SparseGPT's dampening
    only_alpha = {"prune": 1, "perplexity": 1, "pruning_report": 1, "summary": 1, "all": 1, "total": 5}
    assert plan_with(**{"pruning.alpha.epsilon": 0.3}) == only_alpha == plan_with(**{"pruning.sparsegpt.damp": 0.05})
    assert plan_with(**{"pruning.evaluation.bootstrap": 200}) == {"pruning_report": 1, "summary": 1, "all": 1, "total": 3}


def _check_mask(where, run_dir, report):
    """The pruned model is the dense checkpoint plus the run's mask: applying the mask gives the
    reported sparsity, and the stored bits are 17 MB, not a checkpoint."""
    from actpat.decoder import weight_layout
    from actpat.models import load_checkpoint
    from actpat.masks import apply_mask
    from actpat.store import open_mask

    mask = open_mask(run_dir / "mask.zarr")
    assert mask.attrs["run"] == "code/wanda-owl/unstructured/0.5" == report["run"]
    model, _, _ = load_checkpoint(where / "resources/models/smollm2-135m")
    assert apply_mask(model, weight_layout(model), mask) == pytest.approx(report["overall_sparsity"], abs=1e-12)
    size = sum(f.stat().st_size for f in (run_dir / "mask.zarr").rglob("*") if f.is_file())
    assert size < 20e6 and not (run_dir / "checkpoint").exists()


@pytest.mark.slow
def test_local_gpu_jobs_are_capped_at_visible_gpus(smoke_run, tmp_path):
    """A fake nvidia-smi showing 3 GPUs: the local run's global `gpu` resource is 3; without one
    it is 0; --resources overrides it."""
    import os

    where, res = smoke_run
    assert res.returncode == 0
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nfor i in 0 1 2; do echo \"GPU $i: Fake (UUID: $i)\"; done\n")
    (fake / "nvidia-smi").chmod(0o755)
    # one job of seconds (SUMMARY.md) is enough for Snakemake to print the resources it schedules
    # with; without the fork server, which would take longer to start than the job
    base = ["--cores", "2", "--configfile", str(SMOKE), "--config", "fork_server=False", "-R", "summary"]
    env_path = os.environ["PATH"]
    try:
        os.environ["PATH"] = f"{fake}:{env_path}"
        three = run(base, cwd=where)
        one = run(base + ["--resources", "gpu=1"], cwd=where)
    finally:
        os.environ["PATH"] = env_path
    none = run(base, cwd=where)
    assert [r.returncode for r in (three, one, none)] == [0, 0, 0], (none.stdout + none.stderr)[-2000:]
    assert "Rule: summary" in none.stdout + none.stderr and "Rule: findings" not in none.stdout + none.stderr
    assert 'Provided resources: gpu=Resource("gpu", 3)' in three.stdout + three.stderr
    assert 'gpu=Resource("gpu", 1)' in one.stdout + one.stderr or "gpu=1" in one.stdout + one.stderr
    assert 'Provided resources: gpu=Resource("gpu", 0)' in none.stdout + none.stderr or "gpu=0" in none.stdout + none.stderr


@pytest.mark.slow
def test_a_rerun_of_the_summary_waits_for_no_torch(smoke_run):
    """`snakemake -R summary` on a finished run: the summary job forks from the light server, and
    the torch servers, which no job asked for, import nothing."""
    where, res = smoke_run
    assert res.returncode == 0
    again = run(["--cores", "2", "--configfile", str(SMOKE), "-R", "summary"], cwd=where)
    assert again.returncode == 0, (again.stdout + again.stderr)[-2000:]
    assert "Rule: summary" in again.stdout + again.stderr and "Rule: findings" not in again.stdout + again.stderr
    assert "forked by the fork server (light)" in (where / "logs/smollm2-135m/summary.log").read_text()
    assert [(where / f"logs/fork_server/threads-{n}-torch.log").read_text() for n in (1, 2)] == ["", ""]


@pytest.mark.slow
def test_html_report_and_summary_of_the_smoke_run(smoke_run, smoke_report):
    """`snakemake --report` on the smoke run holds every figure and table with its caption, grouped
    by finding; SUMMARY.md has a row for each finding and validation with the paper's number."""
    where, res = smoke_run
    path, rep = smoke_report
    assert rep.returncode == 0, (rep.stdout + rep.stderr)[-2000:]
    html = path.read_text()
    expected = [
        "finding1_density.png", "density.csv", "finding2_similarity_boxplots.png", "finding2_similarity_deep.png",
        "similarity.csv", "finding3_relevance.png", "relevance.csv", "validation1_perplexity.png", "validation1.csv",
        "layer_sparsity.png", "validation2_matrix.png", "validation2.csv", "rho_by_layer.png", "scatter_deep.png",
        "spearman_by_layer.csv", "SUMMARY.md",
    ]
    assert [name for name in expected if name not in html] == []
    for category in ("Finding 1: density", "Finding 2: similarity", "Finding 3: relevance", "Validation 1: layer-wise pruning",
                     "Validation 2: calibration domain", "Validation 3: human similarity"):
        assert category in html
    assert "(4 samples of 32 tokens each)" in html  # captions carry n from the config
    summary = (where / "results/smollm2-135m/SUMMARY.md").read_text()
    for claim in ("Finding 1", "Finding 2", "Finding 3", "Validation 1: wanda-density", "Validation 2", "Validation 3 (words)"):
        assert f"| {claim}" in summary
    assert "0.851 (Llama2-7B" in summary and "STS-B 0.66" in summary
