"""A roadmap can be retired: kept, with its statuses and history, but no longer checked.

Adds ``roadmap.active`` (boolean, not null, existing rows true). ``roadmap retire SLUG`` sets it
false (a conference held, or a file whose slug was changed, which ``roadmap sync`` loads as a new
roadmap); ``roadmap sync`` of its file sets it true again. The nightly check, the reminders, the
dashboards, the calendars, the report, ``roadmap status`` and ``roadmap mark`` see active
roadmaps only. Before, a roadmap stayed checked and reminded for as long as the database lived.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("roadmap") as batch_op:
        batch_op.add_column(sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("roadmap") as batch_op:
        batch_op.drop_column("active")
