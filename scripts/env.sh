# Quiet, offline-friendly Prefect settings shared by the demo and the tests (sourced, not run).
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export PREFECT_SERVER_LOGGING_LEVEL=${PREFECT_SERVER_LOGGING_LEVEL:-CRITICAL}
