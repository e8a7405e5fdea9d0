"""The trial store's schema: three tables, plain SQLAlchemy Core.

sweeps   one row per named sweep, with a uid unique across stores (launch keys use it):
         its space, objectives, strategy and budget as
         JSON, a fingerprint of space + objectives (a reused name must match it),
         status and timings, and the SweepSpec it was last run from (when it was run from
         one: `prefect-hpo run`, the sweep deployment), which `prefect-hpo resume` runs again;
         and the parent process that holds the sweep now (owner, its last heartbeat), so that
         a second parent on the same sweep is refused while the first is alive; the folder under
         the checkpoint root its checkpoints live in (`<cleaned name>-<uid>`), and, for a sweep
         from before per-sweep folders, the old shared folder its first trials keep
         (`prefect_hpo.checkpoint_layout`).
trials   one row per trial: (sweep_id, number) is unique; the attempt counts runs
         of the same trial; config and its hash, state, objective values (the
         first also as a column, for ordering), final metrics, last step, error
         text, stop request, timings (unix seconds), worker and Prefect ids, and
         the last heartbeat of a trial running on a remote worker, and its lineage under
         population-based training.
reports  one row per intermediate report: trial (and its sweep), step, metrics as
         JSON, and the objective's score at that step in 'lower is better' form
         (what schedulers average and rank; NULL for NaN or when not reported).
rungs    one row per trial per rung it reached: bracket, level (step), score;
         the row id is the order in which trials reached the rung.
dispatch one row per trial offered to long-lived runners (`WorkPoolExecutor(runners=N)`): the attempt,
         its queue and GPUs, the trial flow's settings for it, and the runner that claimed it.
meta     key/value: the schema version (1, 2, ...) for prefect_hpo releases that predate migrations.

The tables are created and changed by the Alembic migrations in `migrations/` (see
`prefect_hpo.store.migrate`); these definitions are what the code reads and writes, and a
test checks that the migrated tables match them.

Timestamps are unix seconds (float): the same on SQLite and PostgreSQL, no
time-zone handling, cheap to subtract for budgets.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

#: Where a store keeps its Alembic revision.
VERSION_TABLE = "hpo_alembic_version"

metadata = MetaData()

meta = Table(
    "hpo_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

sweeps = Table(
    "hpo_sweeps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("space", JSON, nullable=False),
    Column("objectives", JSON, nullable=False),
    Column("strategy", String(255), nullable=False),
    Column("budget", JSON, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("stop_reason", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("flow_run_id", String(64)),
    Column("spec", JSON),
    Column("owner", String(255)),
    Column("owner_beat", Float),
    # set for every sweep (at creation; by migration 0004 for older ones); nullable only because adding a
    # NOT NULL column makes SQLite copy the table, which would cascade-delete the trials
    Column("checkpoint_folder", String(255)),
    Column("legacy_checkpoint_folder", String(255)),
    Column("legacy_checkpoint_trials", Integer),
)

trials = Table(
    "hpo_trials",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sweep_id", Integer, ForeignKey("hpo_sweeps.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    #: the attempts that ended FAIL_RECOVERABLE: what `max_retries` limits (an interrupted attempt is none)
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("state", String(32), nullable=False),
    Column("config", JSON, nullable=False),
    Column("config_hash", String(64), nullable=False),
    Column("values", JSON),
    Column("value", Float),
    Column("metrics", JSON),
    Column("last_step", Integer),
    Column("error", Text),
    Column("reason", Text),
    Column("stop_requested", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("duration", Float),
    Column("worker", String(255)),
    #: what the trial held on its host: its GPUs (comma-separated, as CUDA names them) and its thread count
    Column("devices", String(255)),
    Column("cpu_threads", Integer),
    Column("task_run_id", String(64)),
    Column("duplicate_of", Integer),
    Column("bracket", Integer, nullable=False, default=0),
    Column("heartbeat_at", Float),
    Column("lineage", JSON),
    UniqueConstraint("sweep_id", "number", name="uq_hpo_trials_sweep_number"),
    Index("ix_hpo_trials_sweep_hash", "sweep_id", "config_hash"),
    Index("ix_hpo_trials_sweep_state", "sweep_id", "state"),
)

reports = Table(
    "hpo_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("trial_id", Integer, ForeignKey("hpo_trials.id", ondelete="CASCADE"), nullable=False),
    Column("sweep_id", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("score", Float),
    Column("created_at", Float, nullable=False),
    Index("ix_hpo_reports_trial_step", "trial_id", "step"),
    Index("ix_hpo_reports_sweep_step", "sweep_id", "step"),
)

rungs = Table(
    "hpo_rungs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sweep_id", Integer, nullable=False),
    Column("trial_id", Integer, ForeignKey("hpo_trials.id", ondelete="CASCADE"), nullable=False),
    Column("bracket", Integer, nullable=False),
    Column("level", Integer, nullable=False),
    Column("score", Float),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("trial_id", "level", name="uq_hpo_rungs_trial_level"),
    Index("ix_hpo_rungs_sweep_bracket_level", "sweep_id", "bracket", "level"),
)

dispatch = Table(
    "hpo_dispatch",
    metadata,
    Column("trial_id", Integer, ForeignKey("hpo_trials.id", ondelete="CASCADE"), primary_key=True),
    Column("sweep_id", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("queue", String(255), nullable=False),
    Column("gpus", Float, nullable=False, server_default="0"),
    Column("spec", JSON, nullable=False),
    Column("runner", String(255)),
    Column("offered_at", Float, nullable=False),
    Column("claimed_at", Float),
    Index("ix_hpo_dispatch_sweep_queue", "sweep_id", "queue"),
)
