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
# Two processes, each running whole test files (most tests wait on servers, workers and sweeps they start):
# on 2 cores the suite took 33 min in one process. PYTEST_WORKERS=0 runs it in one.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
