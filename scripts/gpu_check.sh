#!/usr/bin/env bash
# The GPU check (issue 17): a real PyTorch sweep, 8 trials at gpu=0.25 on one device; see scripts/gpu_check.py.
# Run it whenever a GPU machine is at hand, and record its output in benchmarks/README.md. CI never runs it.
#
# A GPU machine may have PyTorch but not this project's dependencies, and may reach no package index. Bring them
# as wheels, made here in the ignored folder .gpu-wheels/ (DEVELOPERS.md):
#   pip download -d .gpu-wheels --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
#       -c scripts/constraints.txt . scikit-learn        # prefect_hpo's dependencies and scikit-learn
#   pip wheel --no-deps -w .gpu-wheels .                  # prefect_hpo itself
# then, on the GPU machine, in the repository's root: bash scripts/gpu_check.sh
#   --dry-run: the same sweep on the CPU with a declared device (checks the script on a machine without a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -d .gpu-wheels ]; then
  "$PY" -m pip install --quiet --no-index --find-links .gpu-wheels prefect-hpo scikit-learn
fi
"$PY" -c "import torch" 2>/dev/null || { echo "gpu_check: PyTorch is not installed here"; exit 2; }
PREFECT_LOGGING_LEVEL=WARNING "$PY" scripts/gpu_check.py "$@"
