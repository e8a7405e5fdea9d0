"""Offers of trials to long-lived runners (`WorkPoolExecutor(runners=N)`): the `hpo_dispatch` table.

One row per trial at most: the attempt offered, the queue, the GPUs it needs, the trial flow's settings for
it, and the runner that claimed it (NULL while it waits). A new table: nothing existing changes.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_dispatch",
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("hpo_trials.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("sweep_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("gpus", sa.Float(), nullable=False, server_default="0"),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("runner", sa.String(255), nullable=True),
        sa.Column("offered_at", sa.Float(), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_hpo_dispatch_sweep_queue", "hpo_dispatch", ["sweep_id", "queue"])
    op.execute("UPDATE hpo_meta SET value = '7' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_hpo_dispatch_sweep_queue", table_name="hpo_dispatch")
    op.drop_table("hpo_dispatch")
    op.execute("UPDATE hpo_meta SET value = '6' WHERE key = 'schema_version'")
