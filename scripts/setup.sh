#!/usr/bin/env bash
# Create .venv (if needed) and install prefect_hpo with its development, example, gp, dask and ray extras.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=.venv/.prefect_hpo-installed
want=$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing prefect_hpo and its dependencies into .venv ..."
  .venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e ".[dev,examples,gp,dask,ray]"
  echo "$want" > "$stamp"
fi
