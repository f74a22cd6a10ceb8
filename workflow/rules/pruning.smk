# Validations 1-2: prune the scored matrices (method x target sparsity x calibration domain), then
# measure perplexity on held-out text. A run lives in
# results/{model}/pruning/runs/{calib}/{method}/{structure}/{sparsity}/ (calib "none": magnitude).

rule calibration_windows:
    """Calibration windows of a domain, from its scoring (not held-out) documents."""
    input:
        model=lambda w: model_dir(w.model),
    output:
        directory("results/{model}/pruning/text/calibration/{domain}.zarr"),
    wildcard_constraints:
        domain="|".join(map(re.escape, DOMAINS)),
    params:
        spec=lambda w: json.dumps(CFG["domains"][w.domain], sort_keys=True),
        n=PR["calibration"]["windows"],
        seq_len=PR["calibration"]["seq_len"],
        seed=CFG["seed"],
        holdout=CFG["samples"]["holdout_fraction"],
    log:
        "logs/{model}/calibration_windows/{domain}.log",
    benchmark:
        "logs/{model}/calibration_windows/{domain}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat pruning-text --kind calibration --name {wildcards.domain} --spec '{params.spec}' "
        "--model-dir {input.model} --seq-len {params.seq_len} --n {params.n} --seed {params.seed} "
        "--holdout-fraction {params.holdout} --out {output} 2> {log}"


rule eval_windows:
    """Perplexity windows: a domain's held-out documents (never scored, never calibrated on), or
    every document of an evaluation-only set."""
    input:
        model=lambda w: model_dir(w.model),
        samples=lambda w: [f"results/{w.model}/samples/{w.evalset}.zarr"] if w.evalset in DOMAINS else [],
    output:
        directory("results/{model}/pruning/text/eval/{evalset}.zarr"),
    params:
        spec=lambda w: json.dumps((CFG["domains"] | PR["evaluation"]["sets"])[w.evalset], sort_keys=True),
        samples=lambda w, input: f"--samples {input.samples}" if input.samples else "",
        n=PR["evaluation"]["max_windows"],
        seq_len=PR["evaluation"]["seq_len"],
    log:
        "logs/{model}/eval_windows/{evalset}.log",
    benchmark:
        "logs/{model}/eval_windows/{evalset}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat pruning-text --kind evaluation --name {wildcards.evalset} --spec '{params.spec}' "
        "--model-dir {input.model} {params.samples} --seq-len {params.seq_len} --n {params.n} "
        "--out {output} 2> {log}"


rule prune:
    """Prune the model's decoder matrices with one method at one target sparsity; the per-layer
    sparsity is checked against its target. The checkpoint is temporary unless keep_checkpoints."""
    input:
        unpack(prune_inputs),
    output:
        checkpoint=_kept(directory("results/{model}/pruning/runs/{calib}/{method}/{structure}/{sparsity}/checkpoint")),
        report="results/{model}/pruning/runs/{calib}/{method}/{structure}/{sparsity}/pruning.json",
    params:
        structure=lambda w: w.structure.replace("of", ":"),
        calibration=lambda w, input: f"--calibration {input.calibration}" if "calibration" in input.keys() else "",
        density=lambda w, input: f"--density {input.density}" if "density" in input.keys() else "",
        ratios=(
            f"--density-threshold {PR['ratios']['threshold']} --density-multiple {PR['ratios']['multiple']} "
            f"--alpha {PR['ratios']['alpha']} --beta {PR['ratios']['beta']} "
            f"--bounds {PR['ratios']['bounds'][0]} {PR['ratios']['bounds'][1]} "
            f"--owl-lambda {PR['owl']['lambda']} --owl-m {PR['owl']['M']}"
        ),
        device=CFG["device"],
    threads: CFG["threads"]
    log:
        "logs/{model}/prune/{calib}-{method}-{structure}-{sparsity}.log",
    benchmark:
        "logs/{model}/prune/{calib}-{method}-{structure}-{sparsity}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: PR["mem_mb"] * attempt,
        runtime=60,
        gpu=scoring_gpus(),
    retries: 1
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat prune --model-dir {input.model} --model-name {wildcards.model} --method {wildcards.method} "
        "--structure {params.structure} --sparsity {wildcards.sparsity} {params.calibration} {params.density} "
        "{params.ratios} --device {params.device} --threads {threads} --out-dir {output.checkpoint} "
        "--report {output.report} 2> {log}"


rule perplexity:
    """Perplexity of a pruned checkpoint on its evaluation sets (non-overlapping windows)."""
    input:
        model="results/{model}/pruning/runs/{calib}/{method}/{structure}/{sparsity}/checkpoint",
        sets=lambda w: [eval_store(w.model, s) for s in eval_sets_of(w)],
    output:
        "results/{model}/pruning/runs/{calib}/{method}/{structure}/{sparsity}/perplexity.json",
    params:
        sets=lambda w: " ".join(f"{s}={eval_store(w.model, s)}" for s in eval_sets_of(w)),
        bootstrap=PR["evaluation"]["bootstrap"],
        seed=CFG["seed"],
        device=CFG["device"],
    threads: CFG["threads"]
    log:
        "logs/{model}/perplexity/{calib}-{method}-{structure}-{sparsity}.log",
    benchmark:
        "logs/{model}/perplexity/{calib}-{method}-{structure}-{sparsity}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: PR["mem_mb"] * attempt,
        runtime=60,
        gpu=scoring_gpus(),
    retries: 1
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat perplexity --model-dir {input.model} --sets {params.sets} --bootstrap {params.bootstrap} "
        "--seed {params.seed} --device {params.device} --threads {threads} --out {output} 2> {log}"


use rule perplexity as perplexity_dense with:
    input:
        model=lambda w: model_dir(w.model),
        sets=lambda w: [eval_store(w.model, s) for s in EVAL_SETS],
    output:
        "results/{model}/pruning/dense/perplexity.json",
    params:
        sets=lambda w: " ".join(f"{s}={eval_store(w.model, s)}" for s in EVAL_SETS),
        bootstrap=PR["evaluation"]["bootstrap"],
        seed=CFG["seed"],
        device=CFG["device"],
    log:
        "logs/{model}/perplexity/dense.log",
    benchmark:
        "logs/{model}/perplexity/dense.bench.tsv"


rule pruning_report:
    """Validations 1-2: tables (CSV, Markdown), the diagonal statistic, figures."""
    input:
        v1=lambda w: [f"{r}/{f}" for r in v1_runs(w.model) for f in ("pruning.json", "perplexity.json")],
        v2=lambda w: [f"{r}/{f}" for r in v2_runs(w.model) for f in ("pruning.json", "perplexity.json")],
        dense="results/{model}/pruning/dense/perplexity.json",
    output:
        report="results/{model}/pruning/report.md",
        summary="results/{model}/pruning/summary.json",
        v1=report("results/{model}/pruning/validation1.csv", caption="../report/validation1_table.rst", category="4. Validation 1: layer-wise pruning"),
        v2=report("results/{model}/pruning/validation2.csv", caption="../report/validation2_table.rst", category="5. Validation 2: calibration domain"),
        layers="results/{model}/pruning/layer_sparsity.csv",
        v1_figure=report("results/{model}/pruning/figures/validation1_perplexity.png", caption="../report/validation1_perplexity.rst", category="4. Validation 1: layer-wise pruning"),
        v2_figure=report("results/{model}/pruning/figures/validation2_matrix.png", caption="../report/validation2_matrix.rst", category="5. Validation 2: calibration domain"),
        layer_figure=report("results/{model}/pruning/figures/layer_sparsity.png", caption="../report/layer_sparsity.rst", category="4. Validation 1: layer-wise pruning"),
    params:
        v1=lambda w: " ".join(v1_runs(w.model)),
        v2=lambda w: " ".join(v2_runs(w.model)),
        general=PR["evaluation"]["general"],
        v2_sparsity=PR["validation2"]["sparsity"],
        v2_method=PR["validation2"]["method"],
        bootstrap=PR["evaluation"]["bootstrap"],
        seed=CFG["seed"],
    log:
        "logs/{model}/pruning_report.log",
    benchmark:
        "logs/{model}/pruning_report.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat pruning-report --v1-runs {params.v1} --v2-runs {params.v2} --dense {input.dense} "
        "--general {params.general} --v2-sparsity {params.v2_sparsity} --v2-method {params.v2_method} "
        "--bootstrap {params.bootstrap} --seed {params.seed} --out-dir results/{wildcards.model}/pruning 2> {log}"
