"""Arabic names of the permanent missions and country offices, from the roadmap file.

Adds ``member_state.mission_name_ar`` and ``member_state.office_name_ar`` (text of at most 200
characters, not null, existing rows ""). A file may give ``mission.name_ar`` and
``office.name_ar``; a digest's Arabic greeting uses them. Before, the Arabic greeting was made
from the member state's Arabic name and could not say where a mission is accredited ("in
Geneva", as the English name from the file did; found by a review of the seed).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("member_state") as batch_op:
        batch_op.add_column(sa.Column("mission_name_ar", sa.String(length=200), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("office_name_ar", sa.String(length=200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("member_state") as batch_op:
        batch_op.drop_column("office_name_ar")
        batch_op.drop_column("mission_name_ar")
