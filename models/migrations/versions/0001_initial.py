"""Initial schema: the tables as of commit 16eb8e5 (before ``status.last_classification``).

Written out table by table, not from the models, so that it stays what it was while the
models move on. Datetime columns are ``DateTime(timezone=True)``, the implementation type
of :class:`models.db.UTCDateTime` (``timestamptz`` on PostgreSQL, text on SQLite).

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_state",
        sa.Column("code", sa.String(length=2), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("name_ar", sa.String(), nullable=False),
        sa.Column("timezone", sa.String(), nullable=False),
        sa.Column("mission_name", sa.String(), nullable=False),
        sa.Column("mission_timezone", sa.String(), nullable=False),
        sa.Column("office_name", sa.String(), nullable=False),
        sa.Column("office_timezone", sa.String(), nullable=False),
        sa.Column("weekend_override", sa.JSON(), nullable=True),
        sa.Column("weekend_source", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )

    op.create_table(
        "roadmap",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("title_ar", sa.String(), nullable=False),
        sa.Column("coordinator_timezone", sa.String(), nullable=False),
        sa.Column("coordinator_country", sa.String(length=2), nullable=False),
        sa.Column("event_timezone", sa.String(), nullable=False),
        sa.Column("source_file", sa.String(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_roadmap_slug", "roadmap", ["slug"], unique=True)

    op.create_table(
        "agenda_session",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("roadmap_id", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("title_ar", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["roadmap_id"], ["roadmap.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_agenda_session_roadmap_id", "agenda_session", ["roadmap_id"], unique=False)

    op.create_table(
        "milestone",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("roadmap_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("title_ar", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("deadline_rule", sa.String(), nullable=False),
        sa.Column("opens_rule", sa.String(), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("opens_date", sa.Date(), nullable=True),
        sa.Column("depends_on", sa.JSON(), nullable=False),
        sa.Column("reminder_days", sa.JSON(), nullable=False),
        sa.Column("overdue_every_days", sa.Integer(), nullable=False),
        sa.Column("non_working_day", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["roadmap_id"], ["roadmap.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("roadmap_id", "key", name="uq_milestone_roadmap_key"),
        sa.CheckConstraint("owner IN ('coordinator', 'mission', 'office')", name="ck_owner_allowed"),
        sa.CheckConstraint(
            "non_working_day IN ('none', 'previous_working_day', 'next_working_day')",
            name="ck_non_working_day_allowed",
        ),
    )
    op.create_index("ix_milestone_roadmap_id", "milestone", ["roadmap_id"], unique=False)

    op.create_table(
        "status",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("milestone_id", sa.Integer(), nullable=False),
        sa.Column("member_state_code", sa.String(length=2), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opens_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("owner_timezone", sa.String(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["member_state_code"], ["member_state.code"]),
        sa.ForeignKeyConstraint(["milestone_id"], ["milestone.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("milestone_id", "member_state_code", name="uq_status_milestone_member_state"),
        sa.CheckConstraint("state IN ('pending', 'in_progress', 'done', 'waived')", name="ck_state_allowed"),
    )
    op.create_index("ix_status_member_state_code", "status", ["member_state_code"], unique=False)
    op.create_index("ix_status_milestone_id", "status", ["milestone_id"], unique=False)

    op.create_table(
        "status_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status_id", sa.Integer(), nullable=False),
        sa.Column("old_state", sa.String(), nullable=False),
        sa.Column("new_state", sa.String(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["status_id"], ["status.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_status_change_status_id", "status_change", ["status_id"], unique=False)

    op.create_table(
        "reminder_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("window", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["status_id"], ["status.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("status_id", "recipient", "window", name="uq_reminder_status_recipient_window"),
        sa.CheckConstraint("state IN ('claimed', 'sent', 'failed')", name="ck_state_allowed"),
    )
    op.create_index("ix_reminder_log_status_id", "reminder_log", ["status_id"], unique=False)
    op.create_index("ix_reminder_log_unsent", "reminder_log", ["state", "claimed_at"], unique=False)


def downgrade() -> None:
    for table in ("reminder_log", "status_change", "status", "milestone", "agenda_session", "roadmap", "member_state"):
        op.drop_table(table)
