"""The trial store as it was first released (schema version 1): sweeps, trials, reports, rungs, meta.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "hpo_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])
    op.create_table(
        "hpo_sweeps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("space", sa.JSON, nullable=False),
        sa.Column("objectives", sa.JSON, nullable=False),
        sa.Column("strategy", sa.String(255), nullable=False),
        sa.Column("budget", sa.JSON, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("stop_reason", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("flow_run_id", sa.String(64)),
    )
    op.create_table(
        "hpo_trials",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sweep_id", sa.Integer, sa.ForeignKey("hpo_sweeps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("values", sa.JSON),
        sa.Column("value", sa.Float),
        sa.Column("metrics", sa.JSON),
        sa.Column("last_step", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("stop_requested", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("duration", sa.Float),
        sa.Column("worker", sa.String(255)),
        sa.Column("task_run_id", sa.String(64)),
        sa.Column("duplicate_of", sa.Integer),
        sa.Column("bracket", sa.Integer, nullable=False),
        sa.Column("heartbeat_at", sa.Float),
        sa.UniqueConstraint("sweep_id", "number", name="uq_hpo_trials_sweep_number"),
    )
    op.create_index("ix_hpo_trials_sweep_hash", "hpo_trials", ["sweep_id", "config_hash"])
    op.create_index("ix_hpo_trials_sweep_state", "hpo_trials", ["sweep_id", "state"])
    op.create_table(
        "hpo_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("hpo_trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sweep_id", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_hpo_reports_trial_step", "hpo_reports", ["trial_id", "step"])
    op.create_index("ix_hpo_reports_sweep_step", "hpo_reports", ["sweep_id", "step"])
    op.create_table(
        "hpo_rungs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sweep_id", sa.Integer, nullable=False),
        sa.Column("trial_id", sa.Integer, sa.ForeignKey("hpo_trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("bracket", sa.Integer, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("trial_id", "level", name="uq_hpo_rungs_trial_level"),
    )
    op.create_index("ix_hpo_rungs_sweep_bracket_level", "hpo_rungs", ["sweep_id", "bracket", "level"])


def downgrade() -> None:
    for table in ("hpo_rungs", "hpo_reports", "hpo_trials", "hpo_sweeps", "hpo_meta"):
        op.drop_table(table)
