"""The coordinators' public mailbox, for the missions and offices to tell them what is done.

Adds ``roadmap.coordinator_email`` (text of at most 254 characters, not null, existing rows "").
A roadmap file may give it as ``coordinator.email``; the digests to permanent missions and
country offices then ask them to write to it when an item is done already. Before, they said
"tell the coordinators" with no address (found by a review of the seed document, whose last
slide gives the mailbox).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("roadmap") as batch_op:
        batch_op.add_column(sa.Column("coordinator_email", sa.String(length=254), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("roadmap") as batch_op:
        batch_op.drop_column("coordinator_email")
