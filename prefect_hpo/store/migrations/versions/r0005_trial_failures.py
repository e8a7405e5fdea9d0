"""Trials count their failed attempts (`failures`), apart from their attempts.

`max_retries` limits the attempts that failed (their worker died, or the store failed under them), not
every attempt: an attempt cut off by the death of the sweep's parent process, or by a Ctrl-C, is not
the trial's failure, and a trial cut off that way several times had used up its retries and ended
FAIL ("gave up after 3 attempts: the sweep's parent process died") though its training was good.

Existing rows keep what the release before this one counted against `max_retries`: every earlier
attempt (`attempt - 1`), and the last one too where the trial stands FAIL_RECOVERABLE.

Added NOT NULL with a server default, so that SQLite adds it in place (ALTER TABLE ... ADD COLUMN):
a copy of `hpo_trials` would delete every report through `ON DELETE CASCADE` when the old copy is dropped.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hpo_trials", sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
    trials = sa.table(
        "hpo_trials", sa.column("attempt", sa.Integer()), sa.column("state", sa.String()), sa.column("failures")
    )
    failed = trials.c.state == "FAIL_RECOVERABLE"
    op.execute(sa.update(trials).values(failures=sa.case((failed, trials.c.attempt), else_=trials.c.attempt - 1)))
    op.execute("UPDATE hpo_meta SET value = '5' WHERE key = 'schema_version'")


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35, PostgreSQL), not a batch: a batch copies hpo_trials on
    # SQLite, and dropping the old copy deletes every report through ON DELETE CASCADE
    op.execute("ALTER TABLE hpo_trials DROP COLUMN failures")
    op.execute("UPDATE hpo_meta SET value = '4' WHERE key = 'schema_version'")
