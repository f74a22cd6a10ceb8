# SUMMARY.md: every finding and validation against the paper (the HTML report: snakemake --report).

# a page of text from a few JSON files: on a cluster it runs in the main Snakemake process, not as a
# SLURM job of its own (a submission, a scheduler round trip and a Snakemake start for a fraction of a second of work)
localrules:
    summary,
    models_page,


rule summary:
    """One page: each finding and validation, its statistic and interval, whether it holds here,
    and the paper's number beside it."""
    input:
        unpack(summary_inputs),
    output:
        report(paths.summary("{model}"), caption="../report/summary.rst", category="0. Summary"),
    params:
        settings=lambda w: encode(S.summary_job(w.model)),
        code=source_hash(),  # the summary reruns after any edit of the library and names results of older code
        findings=lambda w, input: optional("--findings", input, "findings"),
        pruning=lambda w, input: optional("--pruning", input, "pruning"),
    log:
        "logs/{model}/summary.log",
    benchmark:
        "logs/{model}/summary.bench.tsv"
    resources:
        **job_resources("summary"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat summary --settings {params.settings:q} {params.findings} --pairs {input.pairs:q} "
        "{params.pruning} --out {output:q} 2> {log:q}"


rule models_page:
    """Several models: every finding and validation side by side, the allocations' ranks per
    sparsity, what differs by architecture, and finding 1's density of every model on one plot."""
    input:
        lambda w: [f for files in models_page_inputs(w).values() for v in files.values() for f in (v if isinstance(v, list) else [v])],
    output:
        page=report(paths.models_page(), caption="../report/models_page.rst", category="0. Summary"),
        figure=report(paths.models_figure(), caption="../report/models_figure.rst", category="0. Summary"),
    params:
        settings=encode(S.models_page_job()),
        inputs=lambda w: json.dumps(models_page_inputs(w), sort_keys=True),
    log:
        "logs/models_page.log",
    benchmark:
        "logs/models_page.bench.tsv"
    resources:
        **job_resources("models_page"),
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat models-page --settings {params.settings:q} --inputs {params.inputs:q} --out {output.page:q} "
        "--figure {output.figure:q} 2> {log:q}"
