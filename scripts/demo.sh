#!/usr/bin/env bash
# Set everything up and run a real sweep on the embedded default: an MLP on scikit-learn's digits.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh examples  # the package and scikit-learn: about 0.53 GB
source scripts/env.sh
exec .venv/bin/python -m flows.digits_sweep "$@"
