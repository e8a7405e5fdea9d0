# Quiet, offline-friendly Prefect settings shared by the demo and the tests (sourced, not run).
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export PREFECT_SERVER_LOGGING_LEVEL=${PREFECT_SERVER_LOGGING_LEVEL:-CRITICAL}
# A first run creates Prefect's database (migrations: about 10 s, far more on a busy machine); Prefect's
# default wait of 20 s for its temporary server then ends the run with "Timed out ... ephemeral Prefect API server".
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}
