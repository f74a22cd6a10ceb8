rule score_shard:
    """One forward and backward pass per sample of one shard; writes the exact Σ|w·∂D/∂w| per
    weight, per-sample statistics and LLMDcos sketches to one Zarr store (a GPU job on a cluster)."""
    input:
        model=lambda w: model_dir(w.model),
        samples="results/{model}/samples/{domain}.zarr",
    output:
        directory("results/{model}/scores/{domain}/shard-{shard}.zarr"),
    params:
        sharding=lambda w: (
            f"--n-shards {CFG['pairs'][w.domain.removeprefix('pairs-')]['shards']}"
            if w.domain.startswith("pairs-") and w.domain not in DOMAINS
            else f"--shard-size {CFG['samples']['shard_size']}"
        ),
        target=CFG["scoring"]["target"],
        dtype=CFG["scoring"]["compute_dtype"],
        thresholds=" ".join(str(t) for t in CFG["scoring"]["thresholds"]),
        multiples=" ".join(str(m) for m in CFG["scoring"]["relative_multiples"]),
        sketch_size=CFG["scoring"]["sketch_size"],
        sketch_seed=CFG["scoring"]["sketch_seed"],
        device=CFG["device"],
    threads: CFG["threads"]
    log:
        "logs/{model}/score_shard/{domain}-{shard}.log",
    benchmark:
        "logs/{model}/score_shard/{domain}-{shard}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: CFG["resources"]["score_mem_mb"] * attempt,
        runtime=CFG["resources"]["score_runtime"],
        gpu=scoring_gpus(),
    retries: 1
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat score-shard --samples {input.samples} --shard {wildcards.shard} "
        "{params.sharding} --model-dir {input.model} --model-name {wildcards.model} "
        "--target {params.target} --compute-dtype {params.dtype} --thresholds {params.thresholds} "
        "--relative-multiples {params.multiples} "
        "--sketch-size {params.sketch_size} --sketch-seed {params.sketch_seed} "
        "--device {params.device} --threads {threads} --out {output} 2> {log}"
