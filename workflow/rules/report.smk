# SUMMARY.md: every finding and validation against the paper (the HTML report: snakemake --report).


rule summary:
    """One page: each finding and validation, its statistic and interval, whether it holds here,
    and the paper's number beside it."""
    input:
        unpack(summary_inputs),
    output:
        report("results/{model}/SUMMARY.md", caption="../report/summary.rst", category="0. Summary"),
    params:
        findings=lambda w, input: f"--findings {input.findings}" if "findings" in input.keys() else "",
        pruning=lambda w, input: f"--pruning {input.pruning}" if "pruning" in input.keys() else "",
        settings=lambda w: summary_settings(w.model),
    log:
        "logs/{model}/summary.log",
    benchmark:
        "logs/{model}/summary.bench.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m actpat summary {params.findings} --pairs {input.pairs} {params.pruning} "
        "--settings '{params.settings}' --out {output} 2> {log}"
