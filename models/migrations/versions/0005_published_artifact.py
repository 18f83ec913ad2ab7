"""A digest of the content last published under each Prefect artifact key.

Adds the ``published_artifact`` table (key, SHA-256 digest, as-of instant of the publishing
check). A large portfolio's nightly check publishes a roadmap's dashboard artifacts only when
their digest changed; an empty table (existing databases) just means everything is published
once more.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "published_artifact",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("published_artifact")
