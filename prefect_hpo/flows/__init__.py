"""The flows that Prefect workers run, as deployment entry points (`module.path.function`, found wherever
prefect_hpo is installed):

- `prefect_hpo.flows.trial.hpo_trial`: one trial of a sweep whose executor is a work pool;
- `prefect_hpo.flows.sweep.hpo_run_sweep`: a whole sweep from one `SweepSpec` (the UI's form, a schedule).

`setup_work_pool()` (prefect_hpo.deploy) deploys both. The flow that `sweep()` runs in its own process is
`prefect_hpo.sweep_flow`. Nothing is imported here, so that a worker loading one flow loads only its module.
"""
