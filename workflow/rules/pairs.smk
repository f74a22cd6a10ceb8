rule sample_pairs:
    """Validation 3: the distinct texts of a pair set with human similarity scores, tokenized
    (truncated to pairs_max_tokens), with the pair table."""
    input:
        model=lambda w: model_dir(w.model),
    output:
        directory("results/{model}/samples/pairs-{pairset}.zarr"),
    params:
        spec=lambda w: json.dumps(CFG["pairs"][w.pairset], sort_keys=True),
        max_tokens=lambda w: CFG["pairs"][w.pairset]["max_tokens"],
        seed=CFG["seed"],
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
        "python -m actpat sample-pairs --name {wildcards.pairset} --spec '{params.spec}' "
        "--model-dir {input.model} --max-tokens {params.max_tokens} --seed {params.seed} --out {output} 2> {log}"


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
        bootstrap=CFG["analysis"]["bootstrap"],
        seed=CFG["seed"],
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
        "python -m actpat pairs-report --texts {input.texts} --stores {input.stores} "
        "--bootstrap {params.bootstrap} --seed {params.seed} --out-dir results/{wildcards.model}/pairs/{wildcards.pairset} 2> {log}"
