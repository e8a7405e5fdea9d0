"""Each sweep records the folder its checkpoints live in: `<cleaned name>-<uid>`, its own.

Before, every sweep kept its checkpoints in `<root>/<cleaned name>/trial-N`, shared by sweeps whose
names clean alike and by one name in several stores. Existing sweeps get a folder of their own for
the trials they start from now on, and keep the old folder for the trials they have: it is recorded
(`legacy_checkpoint_folder`) with the number of trials that use it (`legacy_checkpoint_trials`).

Mapped, not moved: the migration does not know the checkpoint root (`sweep(checkpoints=...)`, given
on every run, possibly a remote fsspec URL), a move across an object store is a copy then a delete
that a crash can cut in half, and a shared old folder cannot be given to one sweep without taking it
from the other. Recording where the files are loses nothing. A downgrade drops the record, and the
release before this one looks for every trial's checkpoint in the old folder.

`checkpoint_folder` stays nullable (every row has one): NOT NULL would make SQLite copy the table, and
dropping the old copy of `hpo_sweeps` deletes every trial through `ON DELETE CASCADE` (a test saw it).

The naming rules are copied here, not imported: a migration describes the folders as they were then.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _folder(name: str, uid: str) -> str:
    readable = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "-" for c in name[:60])
    return f"{readable}-{uid}"


def _legacy_folder(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def upgrade() -> None:
    with op.batch_alter_table("hpo_sweeps") as batch:
        batch.add_column(sa.Column("checkpoint_folder", sa.String(255)))
        batch.add_column(sa.Column("legacy_checkpoint_folder", sa.String(255)))
        batch.add_column(sa.Column("legacy_checkpoint_trials", sa.Integer()))
    sweeps = sa.table(
        "hpo_sweeps",
        sa.column("id", sa.Integer()),
        sa.column("name", sa.String()),
        sa.column("uid", sa.String()),
        sa.column("checkpoint_folder", sa.String()),
        sa.column("legacy_checkpoint_folder", sa.String()),
        sa.column("legacy_checkpoint_trials", sa.Integer()),
    )
    trials = sa.table("hpo_trials", sa.column("sweep_id", sa.Integer()), sa.column("number", sa.Integer()))
    bind = op.get_bind()
    last = dict(
        bind.execute(sa.select(trials.c.sweep_id, sa.func.max(trials.c.number)).group_by(trials.c.sweep_id)).all()
    )
    for sweep_id, name, uid in bind.execute(sa.select(sweeps.c.id, sweeps.c.name, sweeps.c.uid)).all():
        values: dict[str, object] = {"checkpoint_folder": _folder(name, uid)}
        if last.get(sweep_id) is not None:  # trials that may have written to the old folder
            values.update(legacy_checkpoint_folder=_legacy_folder(name), legacy_checkpoint_trials=last[sweep_id] + 1)
        bind.execute(sa.update(sweeps).where(sweeps.c.id == sweep_id).values(**values))
    op.execute("UPDATE hpo_meta SET value = '4' WHERE key = 'schema_version'")


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35, PostgreSQL), not a batch: a batch copies hpo_sweeps on
    # SQLite, and dropping the old copy deletes every trial through ON DELETE CASCADE
    for name in ("legacy_checkpoint_trials", "legacy_checkpoint_folder", "checkpoint_folder"):
        op.execute(f"ALTER TABLE hpo_sweeps DROP COLUMN {name}")
    op.execute("UPDATE hpo_meta SET value = '3' WHERE key = 'schema_version'")
