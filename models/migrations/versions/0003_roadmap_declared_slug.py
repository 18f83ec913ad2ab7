"""Roadmaps remember their slug as written in the file.

Adds ``roadmap.declared_slug`` (``String(64)``, nullable): two files whose slugs normalise to the
same artifact-safe slug ("GCM Arab 2024" and "gcm-arab-2024") are then told apart and the second
is refused at load, instead of overwriting the first. Existing rows get NULL (accepted once, then
filled by the next load).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("roadmap") as batch_op:
        batch_op.add_column(sa.Column("declared_slug", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("roadmap") as batch_op:
        batch_op.drop_column("declared_slug")
