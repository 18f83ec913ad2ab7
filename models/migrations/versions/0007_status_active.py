"""Status rows of a member state removed from a roadmap file are kept, inactive.

Adds ``status.active`` (boolean, not null, existing rows true). ``roadmap sync`` sets it false on
the rows of a member state the file no longer lists, and true again when the file lists it
again; the nightly check, the reminders, the calendars and ``roadmap mark`` read active rows only.
Before, a member state removed from the file kept being checked and reminded, with no warning.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("status") as batch_op:
        batch_op.add_column(sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("status") as batch_op:
        batch_op.drop_column("active")
