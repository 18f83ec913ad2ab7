"""Drop the reminder log's separate ``status_id`` index.

The unique ``(status_id, recipient, window)`` index leads with ``status_id``, so it serves every
lookup by status row (claims, failures) and the foreign key. The separate index only cost
writes: every claim inserted into it and, on PostgreSQL, every mark of a claim (whose indexed
``state`` changes, so no update is HOT) did too. ``IF EXISTS``: a database made by the current
models' ``create_all`` (stamped 0005 by its tables, see ``models.migrate.SCHEMA_MARKERS``)
never had it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_reminder_log_status_id", table_name="reminder_log", if_exists=True)


def downgrade() -> None:
    op.create_index("ix_reminder_log_status_id", "reminder_log", ["status_id"], unique=False)
