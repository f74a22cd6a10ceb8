rule score_shard:
    """One forward and backward pass per sample of one shard; writes the exact Σ|w·∂D/∂w| per
    weight, per-sample statistics and LLMDcos sketches to one Zarr store (a GPU job on a cluster)."""
    input:
        model=paths.model_dir("{model}"),
        samples=paths.samples("{model}", "{domain}"),
    output:
        directory(paths.score_store("{model}", "{domain}", "{shard}")),
    params:
        settings=lambda w: encode(S.scoring_job(w.domain)),
        device=S.runtime.device,
        batch=f"--batch-size {S.resources.score_batch_size}" if S.resources.score_batch_size else "",
    threads: S.runtime.threads
    log:
        "logs/{model}/score_shard/{domain}-{shard}.log",
    benchmark:
        "logs/{model}/score_shard/{domain}-{shard}.bench.tsv"
    resources:
        **job_resources("score_shard"),
        **gpu_resources(),
    retries: 1
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat score-shard --settings {params.settings:q} --samples {input.samples:q} --shard {wildcards.shard} "
        "--model-dir {input.model:q} --model {wildcards.model:q} --device {params.device:q} --threads {threads} {params.batch} "
        "--out {output:q} 2> {log:q}"
