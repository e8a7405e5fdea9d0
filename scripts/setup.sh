#!/usr/bin/env bash
# Create .venv (if needed) and install prefect_hpo (editable) with the extras named in $1 (comma-separated).
#   bash scripts/setup.sh examples                            # what the demo needs: about 0.53 GB
#   bash scripts/setup.sh dev,examples,parquet,gp,dask,ray    # what the tests need: about 2 GB more (PyTorch, Ray)
# The demo and the tests share .venv: the stamp file records which extras are in, and an install
# is skipped while pyproject.toml and the constraints are unchanged and the wanted extras are in.
# Bytecode is not compiled at install (--no-compile): Python writes it on first import, for the
# modules that are used only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
wanted=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=.venv/.prefect_hpo-installed
hash=$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16)
# the stamp: "<hash of pyproject.toml and constraints> <extras in, comma-separated>"
old_hash="" old_extras=""
if [ -f "$stamp" ]; then read -r old_hash old_extras < "$stamp" || true; fi
have=""
[ "$old_hash" = "$hash" ] && have=$old_extras
missing=$(comm -13 <(tr ',' '\n' <<< "$have" | sed '/^$/d' | sort -u) <(tr ',' '\n' <<< "$wanted" | sed '/^$/d' | sort -u))
if [ ! -f "$stamp" ] || [ "$old_hash" != "$hash" ] || [ -n "$missing" ]; then
  # keep what is already in: a demo run after the tests' install does not shrink it, nor the reverse
  extras=$(tr ',' '\n' <<< "$old_extras,$wanted" | sed '/^$/d' | sort -u | paste -sd, -)
  echo "installing prefect_hpo${extras:+[$extras]} and its dependencies into .venv ..."
  .venv/bin/python -m pip install --quiet --no-compile -c scripts/constraints.txt -e ".${extras:+[$extras]}"
  echo "$hash $extras" > "$stamp"
fi
