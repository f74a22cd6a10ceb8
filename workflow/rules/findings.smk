rule density:
    """Finding 1: activated weights per layer and matrix of one domain, from the exact mean score
    over all its shards (absolute, relative-to-mean and mass-share definitions)."""
    input:
        lambda w: score_stores(w.model, w.domain),
    output:
        directory("results/{model}/density/{domain}.zarr"),
    params:
        settings=encode(S.density_job()),
    log:
        "logs/{model}/density/{domain}.log",
    benchmark:
        "logs/{model}/density/{domain}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 3000 * attempt,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat density --settings {params.settings:q} --stores {input:q} --out {output:q} 2> {log:q}"


rule similarity:
    """Finding 2: estimated LLMDcos between every pair of samples of all domains, per layer."""
    input:
        lambda w: [s for d in DOMAINS for s in score_stores(w.model, d)],
    output:
        directory("results/{model}/similarity.zarr"),
    log:
        "logs/{model}/similarity.log",
    benchmark:
        "logs/{model}/similarity.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=60,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat similarity --stores {input:q} --out {output:q} 2> {log:q}"


rule findings:
    """Findings 1-3: statistics with intervals (findings.json), tidy tables and figures."""
    input:
        density=lambda w: expand("results/{model}/density/{domain}.zarr", model=w.model, domain=DOMAINS),
        similarity="results/{model}/similarity.zarr",
        samples=lambda w: expand("results/{model}/samples/{domain}.zarr", model=w.model, domain=DOMAINS),
    output:
        json="results/{model}/findings.json",
        density_table=report("results/{model}/density.csv", caption="../report/finding1_table.rst", category="1. Finding 1: density"),
        similarity_table=report("results/{model}/similarity.csv", caption="../report/finding2_table.rst", category="2. Finding 2: similarity"),
        relevance_table=report("results/{model}/relevance.csv", caption="../report/finding3_table.rst", category="3. Finding 3: relevance"),
        density_figure=report("results/{model}/figures/finding1_density.png", caption="../report/finding1_density.rst", category="1. Finding 1: density"),
        boxplots=report("results/{model}/figures/finding2_similarity_boxplots.png", caption="../report/finding2_boxplots.rst", category="2. Finding 2: similarity"),
        deep=report("results/{model}/figures/finding2_similarity_deep.png", caption="../report/finding2_deep.rst", category="2. Finding 2: similarity"),
        relevance_figure=report("results/{model}/figures/finding3_relevance.png", caption="../report/finding3.rst", category="3. Finding 3: relevance"),
    params:
        settings=encode(S.analysis_job()),
        out_dir=lambda w: f"results/{w.model}",
    log:
        "logs/{model}/findings.log",
    benchmark:
        "logs/{model}/findings.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat findings --settings {params.settings:q} --density {input.density:q} "
        "--similarity {input.similarity:q} --samples {input.samples:q} --out-dir {params.out_dir:q} 2> {log:q}"
