"""Status rows remember the last reminder window delivered to their owner, and their escalation.

Adds ``status.last_reminder`` and ``status.last_escalation`` (``String(32)``, nullable). They are
hints, written in the same transaction that marks a reminder sent: the nightly check skips an item
whose window is the one already delivered, instead of claiming it again in the reminder log only
to find it sent (most items, on a steady night: a window lasts days). The reminder log stays the
only guarantee of exactly-once delivery; a missing hint (NULL, existing rows) just means a claim.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("status") as batch_op:
        batch_op.add_column(sa.Column("last_reminder", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("last_escalation", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("status") as batch_op:
        batch_op.drop_column("last_escalation")
        batch_op.drop_column("last_reminder")
