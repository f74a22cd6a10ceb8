rule density:
    """Finding 1: activated weights per layer and matrix of one domain, from the exact mean score
    over all its shards (absolute, relative-to-mean and mass-share definitions)."""
    input:
        lambda w: score_stores(w.model, w.domain),
    output:
        directory(paths.density("{model}", "{domain}")),
    params:
        settings=encode(S.density_job()),
    log:
        "logs/{model}/density/{domain}.log",
    benchmark:
        "logs/{model}/density/{domain}.bench.tsv"
    resources:
        **job_resources("density"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat density --settings {params.settings:q} --stores {input:q} --out {output:q} 2> {log:q}"


rule similarity:
    """Finding 2: estimated LLMDcos between every pair of samples of all domains, per layer."""
    input:
        lambda w: [s for d in DOMAINS for s in score_stores(w.model, d)],
    output:
        directory(paths.similarity("{model}")),
    log:
        "logs/{model}/similarity.log",
    benchmark:
        "logs/{model}/similarity.bench.tsv"
    resources:
        **job_resources("similarity"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat similarity --stores {input:q} --out {output:q} 2> {log:q}"


# findings 1-3 write their tables and figures beside the model's stores
FINDINGS_DIR = paths.model_results("{model}")


rule findings:
    """Findings 1-3: statistics with intervals (findings.json), tidy tables and figures."""
    input:
        density=lambda w: [paths.density(w.model, d) for d in DOMAINS],
        similarity=paths.similarity("{model}"),
        samples=lambda w: [paths.samples(w.model, d) for d in DOMAINS],
    output:
        json=paths.findings("{model}"),
        density_table=report(f"{FINDINGS_DIR}/density.csv", caption="../report/finding1_table.rst", category="1. Finding 1: density"),
        similarity_table=report(f"{FINDINGS_DIR}/similarity.csv", caption="../report/finding2_table.rst", category="2. Finding 2: similarity"),
        relevance_table=report(f"{FINDINGS_DIR}/relevance.csv", caption="../report/finding3_table.rst", category="3. Finding 3: relevance"),
        density_figure=report(f"{FINDINGS_DIR}/figures/finding1_density.png", caption="../report/finding1_density.rst", category="1. Finding 1: density"),
        boxplots=report(f"{FINDINGS_DIR}/figures/finding2_similarity_boxplots.png", caption="../report/finding2_boxplots.rst", category="2. Finding 2: similarity"),
        deep=report(f"{FINDINGS_DIR}/figures/finding2_similarity_deep.png", caption="../report/finding2_deep.rst", category="2. Finding 2: similarity"),
        relevance_figure=report(f"{FINDINGS_DIR}/figures/finding3_relevance.png", caption="../report/finding3.rst", category="3. Finding 3: relevance"),
    params:
        settings=encode(S.analysis_job()),
        out_dir=lambda w: paths.model_results(w.model),
    log:
        "logs/{model}/findings.log",
    benchmark:
        "logs/{model}/findings.bench.tsv"
    resources:
        **job_resources("findings"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat findings --settings {params.settings:q} --density {input.density:q} "
        "--similarity {input.similarity:q} --samples {input.samples:q} --out-dir {params.out_dir:q} 2> {log:q}"
