"""Status rows remember last night's classification.

Adds ``status.last_classification`` (``String(16)``) and ``status.last_checked_at`` (a UTC
instant, ``DateTime(timezone=True)``), both nullable: existing rows get NULL (not checked yet).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Adding nullable columns is a plain ALTER TABLE ... ADD COLUMN on SQLite too (no copy).
    with op.batch_alter_table("status") as batch_op:
        batch_op.add_column(sa.Column("last_classification", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # On SQLite the batch copies the table (with foreign keys off, as models.migrate runs it).
    with op.batch_alter_table("status") as batch_op:
        batch_op.drop_column("last_checked_at")
        batch_op.drop_column("last_classification")
