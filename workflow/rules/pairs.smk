rule sample_pairs:
    """Validation 3: the distinct texts of a pair set with human similarity scores, tokenized
    (truncated to the pair set's max_tokens), with the pair table."""
    input:
        model=lambda w: model_dir(w.model),
        pairs=lambda w: pair_files(w.pairset),
    output:
        directory("results/{model}/samples/pairs-{pairset}.zarr"),
    params:
        settings=lambda w: encode_reading(S.pair_texts_job(w.pairset)),
    log:
        "logs/{model}/sample_pairs/{pairset}.log",
    benchmark:
        "logs/{model}/sample_pairs/{pairset}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat sample-pairs --settings {params.settings:q} --model-dir {input.model:q} --out {output:q} 2> {log:q}"


rule pairs_report:
    """Validation 3: per-layer Spearman of LLMDcos with the human scores, layer-range sums,
    baselines (hidden-state cosine, bag of tokens), intervals and figures."""
    input:
        texts="results/{model}/samples/pairs-{pairset}.zarr",
        stores=lambda w: score_stores(w.model, f"pairs-{w.pairset}"),
    output:
        summary="results/{model}/pairs/{pairset}/summary.json",
        by_layer=report("results/{model}/pairs/{pairset}/spearman_by_layer.csv", caption="../report/validation3_table.rst", category="6. Validation 3: human similarity", subcategory="{pairset}"),
        ranges=report("results/{model}/pairs/{pairset}/spearman_ranges.csv", caption="../report/validation3_table.rst", category="6. Validation 3: human similarity", subcategory="{pairset}"),
        rho=report("results/{model}/pairs/{pairset}/figures/rho_by_layer.png", caption="../report/validation3_rho.rst", category="6. Validation 3: human similarity", subcategory="{pairset}"),
        scatter=report("results/{model}/pairs/{pairset}/figures/scatter_deep.png", caption="../report/validation3_scatter.rst", category="6. Validation 3: human similarity", subcategory="{pairset}"),
    params:
        settings=encode(S.analysis_job()),
        out_dir=lambda w: f"results/{w.model}/pairs/{w.pairset}",
    log:
        "logs/{model}/pairs_report/{pairset}.log",
    benchmark:
        "logs/{model}/pairs_report/{pairset}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat pairs-report --settings {params.settings:q} --texts {input.texts:q} --stores {input.stores:q} "
        "--out-dir {params.out_dir:q} 2> {log:q}"
