"""Trials record what they held on their host: their GPUs (`devices`, as CUDA names them, comma-separated) and
the thread count their process's BLAS and OpenMP libraries were given (`cpu_threads`, their CPU share).

Both are nullable, added in place (ALTER TABLE ... ADD COLUMN: on SQLite a copy of `hpo_trials` would delete
every report through `ON DELETE CASCADE`); trials from before hold none.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hpo_trials", sa.Column("devices", sa.String(255), nullable=True))
    op.add_column("hpo_trials", sa.Column("cpu_threads", sa.Integer(), nullable=True))
    op.execute("UPDATE hpo_meta SET value = '6' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.execute("ALTER TABLE hpo_trials DROP COLUMN cpu_threads")
    op.execute("ALTER TABLE hpo_trials DROP COLUMN devices")
    op.execute("UPDATE hpo_meta SET value = '5' WHERE key = 'schema_version'")
