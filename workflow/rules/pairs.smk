rule sample_pairs:
    """Validation 3: the distinct texts of a pair set with human similarity scores, tokenized
    (truncated to the pair set's max_tokens), with the pair table."""
    input:
        model=paths.model_dir("{model}"),
        pairs=lambda w: pair_files(w.pairset),
    output:
        directory(paths.samples("{model}", "pairs-{pairset}")),
    params:
        settings=lambda w: encode_reading(S.pair_texts_job(w.pairset)),
    log:
        "logs/{model}/sample_pairs/{pairset}.log",
    benchmark:
        "logs/{model}/sample_pairs/{pairset}.bench.tsv"
    resources:
        **job_resources("sample_pairs"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat sample-pairs --settings {params.settings:q} --model-dir {input.model:q} --out {output:q} 2> {log:q}"


PAIRS_DIR = paths.pairs_dir("{model}", "{pairset}")


rule pairs_report:
    """Validation 3: per-layer Spearman of LLMDcos with the human scores, layer-range sums,
    baselines (hidden-state cosine, bag of tokens), intervals and figures."""
    input:
        texts=paths.samples("{model}", "pairs-{pairset}"),
        stores=lambda w: score_stores(w.model, f"pairs-{w.pairset}"),
    output:
        summary=f"{PAIRS_DIR}/summary.json",
        by_layer=report(f"{PAIRS_DIR}/spearman_by_layer.csv", caption="../report/validation3_table.rst", category="6. Validation 3: human similarity", subcategory="{pairset}"),
        ranges=report(f"{PAIRS_DIR}/spearman_ranges.csv", caption="../report/validation3_table.rst", category="6. Validation 3: human similarity", subcategory="{pairset}"),
        rho=report(f"{PAIRS_DIR}/figures/rho_by_layer.png", caption="../report/validation3_rho.rst", category="6. Validation 3: human similarity", subcategory="{pairset}"),
        scatter=report(f"{PAIRS_DIR}/figures/scatter_deep.png", caption="../report/validation3_scatter.rst", category="6. Validation 3: human similarity", subcategory="{pairset}"),
    params:
        settings=encode(S.analysis_job()),
        out_dir=lambda w: paths.pairs_dir(w.model, w.pairset),
    log:
        "logs/{model}/pairs_report/{pairset}.log",
    benchmark:
        "logs/{model}/pairs_report/{pairset}.bench.tsv"
    resources:
        **job_resources("pairs_report"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat pairs-report --settings {params.settings:q} --texts {input.texts:q} --stores {input.stores:q} "
        "--out-dir {params.out_dir:q} 2> {log:q}"
