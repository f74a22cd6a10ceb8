rule sample_domain:
    """Draw a domain's token windows (deterministic from the seed and the domain name) and keep
    their provenance (document id, token offset) and the held-out document ids."""
    input:
        model=paths.model_dir("{model}"),
        texts=lambda w: source_files(w.domain),
    output:
        directory(paths.samples("{model}", "{domain}")),
    wildcard_constraints:
        domain=_alternatives(DOMAINS),
    params:
        settings=lambda w: encode_reading(S.window_job("samples", w.domain)),
    log:
        "logs/{model}/sample_domain/{domain}.log",
    benchmark:
        "logs/{model}/sample_domain/{domain}.bench.tsv"
    resources:
        **job_resources("sample_domain"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat sample-domain --settings {params.settings:q} --model-dir {input.model:q} --out {output:q} 2> {log:q}"
