# Validations 1-2: prune the scored matrices (method x target sparsity x calibration domain), then
# measure perplexity on held-out text. A run's files (RUN, actpat.paths.EvaluatedModel) are named by
# its key <calibration>/<method>/<structure>/<sparsity> (calibration "none": a method without
# calibration data); the prune job is handed the run's settings, never the key to parse back. An
# evaluation job is told the key of the run (and the set) it evaluates, and refuses a mask (or
# windows) made for another.


rule calibration_windows:
    """Calibration windows of a domain, from its scoring (not held-out) documents."""
    input:
        model=paths.model_dir("{model}"),
        texts=lambda w: source_files(w.domain),
    output:
        directory(paths.calibration_windows("{model}", "{domain}")),
    wildcard_constraints:
        domain=_alternatives(DOMAINS),
    params:
        settings=lambda w: encode_reading(S.window_job("calibration", w.domain)),
    log:
        "logs/{model}/calibration_windows/{domain}.log",
    benchmark:
        "logs/{model}/calibration_windows/{domain}.bench.tsv"
    resources:
        **job_resources("calibration_windows"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat pruning-text --settings {params.settings:q} --model-dir {input.model:q} --out {output:q} 2> {log:q}"


rule eval_windows:
    """Perplexity windows: a domain's held-out documents (never scored, never calibrated on), or
    every document of an evaluation-only set."""
    input:
        model=paths.model_dir("{model}"),
        samples=lambda w: [paths.samples(w.model, w.evalset)] if w.evalset in DOMAINS else [],
        texts=lambda w: source_files(w.evalset),
    output:
        directory(paths.eval_windows("{model}", "{evalset}")),
    params:
        settings=lambda w: encode_reading(S.window_job("evaluation", w.evalset)),
        samples=lambda w, input: optional("--samples", input, "samples") if input.samples else "",
    log:
        "logs/{model}/eval_windows/{evalset}.log",
    benchmark:
        "logs/{model}/eval_windows/{evalset}.bench.tsv"
    resources:
        **job_resources("eval_windows"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat pruning-text --settings {params.settings:q} --model-dir {input.model:q} {params.samples} "
        "--out {output:q} 2> {log:q}"


rule prune:
    """Prune the model's decoder matrices with one method at one target sparsity; the per-layer
    sparsity is checked against its target. The pruned model is the dense checkpoint plus the mask
    written here (1 bit per scored weight)."""
    input:
        unpack(prune_inputs),
    output:
        mask=directory(RUN.mask),
        report=RUN.report,
    params:
        settings=lambda w: encode(S.prune_job(RUNS[w.run])),
        calibration=lambda w, input: optional("--calibration", input, "calibration"),
        density=lambda w, input: optional("--density", input, "density"),
        device=S.runtime.device,
    threads: S.runtime.threads
    log:
        "logs/{model}/prune/{run}.log",
    benchmark:
        "logs/{model}/prune/{run}.bench.tsv"
    resources:
        **job_resources("prune"),
        **gpu_resources(),
    retries: 1
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat prune --settings {params.settings:q} --model-dir {input.model:q} --model {wildcards.model:q} "
        "{params.calibration} {params.density} --device {params.device:q} --threads {threads} "
        "--mask {output.mask:q} --report {output.report:q} 2> {log:q}"


rule perplexity:
    """Perplexity of one pruned model (dense checkpoint + mask) on one evaluation set: adding a
    domain adds a row and a column of these jobs, never the whole matrix."""
    input:
        model=paths.model_dir("{model}"),
        mask=RUN.mask,
        windows=paths.eval_windows("{model}", "{evalset}"),
    output:
        RUN.perplexity("{evalset}"),
    params:
        settings=encode(S.evaluate_job()),
        run=evaluated_run,
        device=S.runtime.device,
    threads: S.runtime.threads
    log:
        "logs/{model}/perplexity/{run}/{evalset}.log",
    benchmark:
        "logs/{model}/perplexity/{run}/{evalset}.bench.tsv"
    resources:
        **job_resources("perplexity"),
        **gpu_resources(),
    retries: 1
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat perplexity --settings {params.settings:q} --model-dir {input.model:q} {params.run} "
        "--windows {input.windows:q} --set {wildcards.evalset:q} --device {params.device:q} --threads {threads} "
        "--out {output:q} 2> {log:q}"


use rule perplexity as perplexity_dense with:
    input:
        model=paths.model_dir("{model}"),
        windows=paths.eval_windows("{model}", "{evalset}"),
    output:
        DENSE.perplexity("{evalset}"),
    log:
        "logs/{model}/perplexity/dense/{evalset}.log",
    benchmark:
        "logs/{model}/perplexity/dense/{evalset}.bench.tsv"


rule zero_shot:
    """Accuracy of one pruned model on the named lm-evaluation-harness tasks
    (pruning.evaluation.accuracy.tasks; none by default: they need a network or local task files)."""
    input:
        model=paths.model_dir("{model}"),
        mask=RUN.mask,
        tasks=harness_task_files(),
    output:
        RUN.zeroshot,
    params:
        settings=encode(S.zero_shot_job()),
        run=evaluated_run,
        device=S.runtime.device,
    threads: S.runtime.threads
    log:
        "logs/{model}/zero_shot/{run}.log",
    benchmark:
        "logs/{model}/zero_shot/{run}.bench.tsv"
    resources:
        **job_resources("zero_shot"),
        **gpu_resources(),
    retries: 1
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat zero-shot --settings {params.settings:q} --model-dir {input.model:q} {params.run} "
        "--device {params.device:q} --threads {threads} --out {output:q} 2> {log:q}"


use rule zero_shot as zero_shot_dense with:
    input:
        model=paths.model_dir("{model}"),
        tasks=harness_task_files(),
    output:
        DENSE.zeroshot,
    log:
        "logs/{model}/zero_shot/dense.log",
    benchmark:
        "logs/{model}/zero_shot/dense.bench.tsv"


PRUNING_DIR = paths.pruning_dir("{model}")


rule pruning_report:
    """Validations 1-2: tables (CSV, Markdown), the diagonal statistic, figures."""
    input:
        pruning_report_inputs,
    output:
        report=f"{PRUNING_DIR}/report.md",
        summary=f"{PRUNING_DIR}/summary.json",
        v1=report(f"{PRUNING_DIR}/validation1.csv", caption="../report/validation1_table.rst", category="4. Validation 1: layer-wise pruning"),
        v2=report(f"{PRUNING_DIR}/validation2.csv", caption="../report/validation2_table.rst", category="5. Validation 2: calibration domain"),
        layers=f"{PRUNING_DIR}/layer_sparsity.csv",
        v1_figure=report(f"{PRUNING_DIR}/figures/validation1_perplexity.png", caption="../report/validation1_perplexity.rst", category="4. Validation 1: layer-wise pruning"),
        v2_figure=report(f"{PRUNING_DIR}/figures/validation2_matrix.png", caption="../report/validation2_matrix.rst", category="5. Validation 2: calibration domain"),
        layer_figure=report(f"{PRUNING_DIR}/figures/layer_sparsity.png", caption="../report/layer_sparsity.rst", category="4. Validation 1: layer-wise pruning"),
    params:
        settings=encode(S.pruning_report_job()),
        out_dir=lambda w: paths.pruning_dir(w.model),
    log:
        "logs/{model}/pruning_report.log",
    benchmark:
        "logs/{model}/pruning_report.bench.tsv"
    resources:
        **job_resources("pruning_report"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat pruning-report --settings {params.settings:q} --model {wildcards.model:q} "
        "--out-dir {params.out_dir:q} 2> {log:q}"
