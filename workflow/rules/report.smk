# SUMMARY.md: every finding and validation against the paper (the HTML report: snakemake --report).


def summary_inputs(w):
    inputs = {"pairs": [f"results/{w.model}/pairs/{p}/summary.json" for p in PAIRSETS]}
    if len(DOMAINS) >= 2:
        inputs["findings"] = f"results/{w.model}/findings.json"
    if PR["enabled"]:
        inputs["pruning"] = f"results/{w.model}/pruning/summary.json"
    return inputs


def summary_settings(model):
    pc, pe = PR["calibration"], PR["evaluation"]
    return json.dumps({
        "model": model,
        "model_source": CFG["models"][model]["source"],
        "samples_per_domain": CFG["samples"]["per_domain"],
        "seq_len": CFG["samples"]["seq_len"],
        "pruning_note": f"{pc['windows']} calibration windows of {pc['seq_len']} tokens from {pc['domain']} (the paper: "
        f"128 C4 windows of 4096), perplexity on at most {pe['max_windows']} windows of {pe['seq_len']} tokens per set",
    })


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
