"""Trials keep their lineage (population-based training: member, generation, the trial whose checkpoint
and configuration they start from, the perturbation).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_trials") as batch:
        batch.add_column(sa.Column("lineage", sa.JSON()))
    op.execute("UPDATE hpo_meta SET value = '3' WHERE key = 'schema_version'")


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials") as batch:
        batch.drop_column("lineage")
    op.execute("UPDATE hpo_meta SET value = '2' WHERE key = 'schema_version'")
