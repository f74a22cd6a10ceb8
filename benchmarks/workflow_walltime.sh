#!/usr/bin/env bash
# Wall time of the smoke and the shipped default workflow, each from nothing (model preparation
# included) in a fresh working directory. Usage: bash benchmarks/workflow_walltime.sh [smoke|default|both]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
which=${1:-both}
run() {  # name, extra args...
    local name=$1; shift
    local dir; dir=$(mktemp -d)
    local t0; t0=$(date +%s)
    "$ROOT/.venv/bin/snakemake" --snakefile "$ROOT/Snakefile" --directory "$dir" --cores all "$@" > "$dir/run.log" 2>&1
    local t1; t1=$(date +%s)
    echo "$name: $((t1 - t0)) s wall ($(grep -c 'Finished jobid' "$dir/run.log") jobs; results in $dir)"
    for rule in prepare_model sample_domain sample_pairs score_shard density similarity findings pairs_report \
            calibration_windows eval_windows prune perplexity pruning_report summary; do
        awk -v r="$rule" 'FNR==2 {s+=$1; n++} END {if (n) printf "  %-14s %3d jobs, %7.1f s summed, %6.1f s each\n", r, n, s, s/n}' \
            $(find "$dir/logs" \( -path "$dir/logs/*/$rule/*" -o -path "$dir/logs/*/$rule.bench.tsv" \) -name "*.bench.tsv")
    done
    "$ROOT/.venv/bin/python" "$ROOT/benchmarks/run_timeline.py" "$dir/run.log" --cores "$(nproc)" --top 5
    "$ROOT/.venv/bin/python" "$ROOT/benchmarks/startup_sums.py" "$dir"
}
[[ $which == smoke || $which == both ]] && run smoke --configfile "$ROOT/tests/config/smoke.yaml"
[[ $which == default || $which == both ]] && run default
