"""Sweeps keep the SweepSpec they ran from and the parent that holds them (owner, its heartbeat).

Stores written between version 1 and this migration may have these columns already (the store
added them on open then), so each is added only where missing.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS: dict[str, sa.types.TypeEngine[Any]] = {
    "spec": sa.JSON(),
    "owner": sa.String(255),
    "owner_beat": sa.Float(),
}


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("hpo_sweeps")}
    with op.batch_alter_table("hpo_sweeps") as batch:
        for name, kind in _COLUMNS.items():
            if name not in have:
                batch.add_column(sa.Column(name, kind))
    op.execute("UPDATE hpo_meta SET value = '2' WHERE key = 'schema_version'")


def downgrade() -> None:
    with op.batch_alter_table("hpo_sweeps") as batch:
        for name in _COLUMNS:
            batch.drop_column(name)
    op.execute("UPDATE hpo_meta SET value = '1' WHERE key = 'schema_version'")
