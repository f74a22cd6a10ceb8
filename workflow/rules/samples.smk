rule sample_domain:
    """Draw a domain's token windows (deterministic from the seed and the domain name) and keep
    their provenance (document id, token offset) and the held-out document ids."""
    input:
        model=lambda w: model_dir(w.model),
    output:
        directory("results/{model}/samples/{domain}.zarr"),
    wildcard_constraints:
        domain="|".join(map(re.escape, DOMAINS)),
    params:
        spec=lambda w: json.dumps(CFG["domains"][w.domain], sort_keys=True),
        n=lambda w: CFG["domains"][w.domain]["samples"],
        seq_len=CFG["samples"]["seq_len"],
        seed=CFG["seed"],
        holdout=CFG["samples"]["holdout_fraction"],
    log:
        "logs/{model}/sample_domain/{domain}.log",
    benchmark:
        "logs/{model}/sample_domain/{domain}.bench.tsv"
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=30,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat sample-domain --domain {wildcards.domain} --spec '{params.spec}' "
        "--model-dir {input.model} --seq-len {params.seq_len} --n {params.n} --seed {params.seed} "
        "--holdout-fraction {params.holdout} --out {output} 2> {log}"
