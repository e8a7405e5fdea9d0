#!/usr/bin/env bash
# Set everything up (the venv; Chromium for the UI test), lint, type-check, check the import layers and run
# the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,examples,parquet,gp,dask,ray  # every extra the tests use (PyTorch, Ray): about 2 GB more
bash scripts/browser.sh
source scripts/env.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports  # the layer contracts in pyproject.toml: no import cycle, no upward import
.venv/bin/python -m pytest "$@"
