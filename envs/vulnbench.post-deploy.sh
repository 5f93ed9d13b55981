#!/usr/bin/env bash
# Install vulnbench itself into the conda env that Snakemake created (run from the repository root).
set -euo pipefail
pip install --no-deps -e "${SNAKEMAKE_WORKFLOW_BASEDIR:-.}"
