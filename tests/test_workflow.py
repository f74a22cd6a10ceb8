"""The Snakemake workflow itself: dry runs, lint, config errors before any job, and the smoke run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import SMOKE, run_snakemake as run


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
    # validation 1: (methods x sparsities + N:M runs), validation 2: one run per other calibration domain
    assert counts["prune"] == counts["perplexity"] == (5 + 1 if configfile else 5 * 3 + 2 + 7)
    assert counts["calibration_windows"] == counts["eval_windows"] == n_domains
    assert counts["perplexity_dense"] == counts["pruning_report"] == 1
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
    from actpat.store import open_samples, open_scores

    tmp_path, res = smoke_run
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
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
    assert "texts" in next(r for r in summary["ranges"] if r["range"] == "deep")["p_method"]
    table = (tmp_path / "results/smollm2-135m/pairs/words/spearman_by_layer.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 30 + 1  # header, (llmdcos, hidden_cos) x 30 layers, bag of tokens
    # validations 1-2 on the smoke run
    pr = tmp_path / "results/smollm2-135m/pruning"
    v1 = pd.read_csv(pr / "validation1.csv")
    assert set(v1["method"]) == {"dense", "magnitude", "wanda", "wanda-density", "wanda-owl"}
    assert (v1["n_windows"] == 4).all() and (v1["seq_len"] == 32).all() and np.isfinite(v1["perplexity"]).all()
    dense_ppl = v1.loc[v1["method"] == "dense", "perplexity"].item()
    assert (v1.loc[v1["method"] != "dense", "perplexity"] > dense_ppl).all()  # pruning half the weights costs perplexity
    run_dir = pr / "runs/code/wanda-owl/unstructured/0.5"
    report = json.loads((run_dir / "pruning.json").read_text())
    assert len(report["layer_sparsity_actual"]) == 30 and abs(np.mean(report["layer_sparsity_target"]) - 0.5) < 1e-9
    assert report["calibration"]["windows"] == 2 and report["calibration"]["seq_len"] == 32
    assert not (run_dir / "checkpoint").exists()  # temporary by default
    nm = json.loads((pr / "runs/code/wanda/2of4/0.5/pruning.json").read_text())
    assert nm["layer_sparsity_actual"] == [0.5] * 30
    summary = json.loads((pr / "summary.json").read_text())
    assert summary["validation2"]["n_columns"] == 2 and summary["validation2"]["calibration_domains"] == ["code", "medical"]
    v2 = pd.read_csv(pr / "validation2.csv", index_col=0)
    assert list(v2.index) == list(v2.columns[: len(v2.index)]) == ["code", "medical"]  # the diagonal is the matching pair
    assert "perplexity medical: 100%|" in (tmp_path / "logs/smollm2-135m/perplexity/dense.log").read_text()
    # a second run has nothing to do
    again = run(["--cores", "2", "--configfile", str(SMOKE), "-n"], cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr

    # adding a domain plans only that domain's jobs and the reductions over all domains
    extra = tmp_path.parent / "extra.txt"
    extra.write_text(" ".join(["A new domain of plain text, long enough for windows."] * 200))
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["domains"]["extra"] = {"source": "files", "paths": [str(extra)], "pack": True}
    more = tmp_path.parent / "more.yaml"
    more.write_text(yaml.safe_dump(cfg))
    plan = run(["--cores", "2", "--configfile", str(more), "-n"], cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-2000:]
    # validation 2 gains a calibration row and an evaluation column: the runs calibrated on the
    # other domains are evaluated on the new domain (their temporary checkpoints are made again)
    assert job_counts(plan.stdout + plan.stderr) == {
        "sample_domain": 1, "score_shard": 2, "density": 1, "similarity": 1, "findings": 1,
        "calibration_windows": 1, "eval_windows": 1, "prune": 3, "perplexity": 3, "perplexity_dense": 1,
        "pruning_report": 1, "summary": 1, "all": 1, "total": 18}
    assert "domain=extra" in plan.stdout + plan.stderr and "domain=code" not in plan.stdout + plan.stderr


def job_counts(text: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake plan."""
    lines = text[text.index("Job stats:"):].splitlines()[3:]
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        out[parts[0]] = int(parts[1])
    return out


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
    base = ["--cores", "2", "--configfile", str(SMOKE), "-R", "findings"]
    env_path = os.environ["PATH"]
    try:
        os.environ["PATH"] = f"{fake}:{env_path}"
        three = run(base, cwd=where)
        one = run(base + ["--resources", "gpu=1"], cwd=where)
    finally:
        os.environ["PATH"] = env_path
    none = run(base, cwd=where)
    assert 'Provided resources: gpu=Resource("gpu", 3)' in three.stdout + three.stderr
    assert 'gpu=Resource("gpu", 1)' in one.stdout + one.stderr or "gpu=1" in one.stdout + one.stderr
    assert 'Provided resources: gpu=Resource("gpu", 0)' in none.stdout + none.stderr or "gpu=0" in none.stdout + none.stderr


@pytest.mark.slow
def test_html_report_and_summary_of_the_smoke_run(smoke_run):
    """`snakemake --report` on the smoke run holds every figure and table with its caption, grouped
    by finding; SUMMARY.md has a row for each finding and validation with the paper's number."""
    where, res = smoke_run
    assert res.returncode == 0
    rep = run(["--configfile", str(SMOKE), "--report", "report.html"], cwd=where)
    assert rep.returncode == 0, (rep.stdout + rep.stderr)[-2000:]
    html = (where / "report.html").read_text()
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
