rule prepare_model:
    """Convert the configured model (embedded GGUF, GGUF file, hub id or local directory) once
    into a plain local checkpoint that every scoring job loads quickly."""
    output:
        directory(paths.model_dir("{model}")),
    params:
        settings=lambda w: encode(S.models[w.model]),
    log:
        "logs/{model}/prepare_model.log",
    benchmark:
        "logs/{model}/prepare_model.bench.tsv"
    resources:
        **job_resources("prepare_model"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat prepare-model --settings {params.settings:q} --out {output:q} 2> {log:q}"
