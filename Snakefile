# actpat: which parameters of a language model does an input activate?
# Run: snakemake --cores all   (see README.md; the config is validated before any job runs)

import os


# config.yaml (next to this file) is the default; `--configfile other.yaml` replaces it instead of merging into it,
# so a preset (e.g. tests/config/smoke.yaml) runs exactly the domains it lists.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/machine.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/scoring.smk"
include: "workflow/rules/findings.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/pruning.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        all_targets(),
        [t for m in MODELS for t in pruning_targets(m)],
        expand("results/{model}/SUMMARY.md", model=MODELS),
        [paths.models_page()] if len(MODELS) > 1 else [],
    default_target: True
