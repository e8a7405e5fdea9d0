#!/usr/bin/env bash
# Set up the project's environment with the benchmark peers (the `bench` extra), then run every
# benchmark of issue 7 in turn, printing markdown tables (plots go to benchmarks/results/).
# Takes about two hours on 2 cores; pass --quick for a few minutes of smaller runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,examples,parquet,gp,dask,ray,bench
export PREFECT_LOGGING_LEVEL=WARNING PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
py=.venv/bin/python
if [ "${1:-}" = "--quick" ]; then
  $py -m benchmarks.overhead --trials 100
  $py -m benchmarks.parallel --seconds 0.2 --slots 1 2 4 8
  $py -m benchmarks.quality --problems hartmann3 --seeds 0 1 --frameworks ours optuna
  $py -m benchmarks.scale --trials 1000
  $py -m benchmarks.startup --repeats 1
  exit 0
fi
$py -m benchmarks.overhead --trials 100 1000
$py -m benchmarks.parallel --seconds 0.2 2 --slots 1 2 4 8
$py -m benchmarks.quality --problems hartmann3 hartmann6 --seeds 0 1 2 3 4 5 6 7 8 9
$py -m benchmarks.quality --problems digits --seeds 0 1 2 3 4 5 6 7 8 9 --frameworks ours optuna
$py -m benchmarks.tpe_settings --seeds 0 1 2 3 4 5 6 7 8 9
$py -m benchmarks.tpe_settings --seeds 0 1 2 3 4 5 6 7 8 9 --budget-factor 5 --settings random "tpe (defaults)" \
  "tpe+sha min_resource 1"
$py -m benchmarks.scale --trials 1000 10000
$py -m benchmarks.startup --repeats 3
