"""SQLModel tables of roadmap-tracker.

Every datetime column is a :class:`models.db.UTCDateTime`: a UTC instant, aware on read.
Allowed values are enforced by the database (check constraints), not only by Python.
Data comes in through :mod:`models.roadmap_file` (validated) and :mod:`models.sync`.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import JSON, CheckConstraint, Column, Index, UniqueConstraint, true
from sqlmodel import Field, SQLModel

from models.db import UTCDateTime


class Owner(str, enum.Enum):
    """Who acts on a milestone for each member state (and whose clock and calendar count)."""

    coordinator = "coordinator"  #: the secretariat (IOM regional office / League of Arab States)
    mission = "mission"  #: the member state's permanent mission in Geneva
    office = "office"  #: the IOM country office in the member state


class State(str, enum.Enum):
    """A recorded status, as coordinators set it. ``pending`` is the state of a fresh row."""

    pending = "pending"
    in_progress = "in_progress"
    done = "done"
    waived = "waived"


class NonWorkingDay(str, enum.Enum):
    """What a deadline that falls on the owner's weekend or public holiday becomes."""

    none = "none"  #: the date as written
    previous_working_day = "previous_working_day"
    next_working_day = "next_working_day"


class ReminderState(str, enum.Enum):
    """Life of one reminder: claimed in the log before the network call, then sent or failed."""

    claimed = "claimed"
    sent = "sent"
    failed = "failed"


def _one_of(column: str, enum_cls: type[enum.Enum]) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum_cls)
    return CheckConstraint(f"{column} IN ({values})", name=f"ck_{column}_allowed")


def utc_now() -> dt.datetime:
    """Return the current instant as an aware UTC ``datetime.datetime``."""
    return dt.datetime.now(dt.timezone.utc)


class Roadmap(SQLModel, table=True):
    """One conference preparation roadmap, loaded from a roadmap file."""

    __tablename__ = "roadmap"

    id: int | None = Field(default=None, primary_key=True)
    #: Stable short name from the file; also the prefix of the roadmap's artifact keys.
    slug: str = Field(unique=True, index=True, max_length=64)
    #: The slug as written in the file, before normalisation (tells apart slugs that normalise alike).
    declared_slug: str | None = Field(default=None, max_length=64)
    #: Event title in English.
    title: str
    #: Event title in Arabic.
    title_ar: str = ""
    #: IANA zone of the coordinators (the secretariat), used for coordinator-owned milestones.
    coordinator_timezone: str
    #: ISO 3166-1 alpha-2 country whose public holidays the coordinators keep.
    coordinator_country: str = Field(max_length=2)
    #: The coordinators' public mailbox, shown in the missions' and offices' digests ("" when the
    #: file gives none).
    coordinator_email: str = Field(default="", max_length=254, sa_column_kwargs={"server_default": ""})
    #: IANA zone of the conference venue; agenda times are local to it.
    event_timezone: str
    #: Path of the roadmap file as given to ``roadmap sync`` (relative where it was relative).
    source_file: str = ""
    #: When this roadmap was last loaded.
    loaded_at: dt.datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    #: False once retired (``roadmap retire``): its rows, states and history are kept, but no
    #: check, reminder, dashboard, calendar, report or ``mark`` sees it; ``roadmap sync`` of its
    #: file makes it active again.
    active: bool = Field(default=True, sa_column_kwargs={"server_default": true()})


class MemberState(SQLModel, table=True):
    """A member state with its permanent mission and its IOM country office."""

    __tablename__ = "member_state"

    #: ISO 3166-1 alpha-2 code, upper case ("JO").
    code: str = Field(primary_key=True, max_length=2)
    #: Short English name.
    name: str
    #: Arabic name.
    name_ar: str = ""
    #: IANA zone of the capital.
    timezone: str
    #: Name of the permanent mission (to the UN Office at Geneva).
    mission_name: str
    #: Its Arabic name, from the roadmap file ("" when the file gives none: one is made).
    mission_name_ar: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})
    #: IANA zone of the permanent mission ("Europe/Zurich" for Geneva).
    mission_timezone: str
    #: Name of the IOM country office.
    office_name: str
    #: Its Arabic name, from the roadmap file ("" when the file gives none: one is made).
    office_name_ar: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})
    #: IANA zone of the IOM country office.
    office_timezone: str
    #: Weekday numbers (Mon=0) of the weekend where the roadmap file overrides the
    #: ``holidays`` library; null means the library's value.
    weekend_override: list[int] | None = Field(default=None, sa_column=Column(JSON))
    #: Where the weekend override comes from (a decree, an office's confirmation).
    weekend_source: str = ""


class Milestone(SQLModel, table=True):
    """A step of a roadmap that every member state must complete."""

    __tablename__ = "milestone"
    __table_args__ = (
        UniqueConstraint("roadmap_id", "key", name="uq_milestone_roadmap_key"),
        _one_of("owner", Owner),
        _one_of("non_working_day", NonWorkingDay),
    )

    id: int | None = Field(default=None, primary_key=True)
    roadmap_id: int = Field(foreign_key="roadmap.id", index=True)
    #: Short stable key from the file ("invitations").
    key: str = Field(max_length=64)
    #: English title.
    title: str
    #: Arabic title.
    title_ar: str = ""
    #: Who acts for each member state: coordinator, mission or office.
    owner: str
    #: Deadline as written in the file ("end of May 2024", "invitations + 10 days").
    deadline_rule: str
    #: Opening as written in the file, if the milestone is a window ("June 2024" opens on the 1st).
    opens_rule: str | None = None
    #: Local calendar date of the deadline (the day ends 23:59:59 in the owner's zone).
    due_date: dt.date
    #: Local calendar date the window opens, if any.
    opens_date: dt.date | None = None
    #: Keys of milestones that must be done (or waived) first, for the same member state.
    depends_on: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    #: Days before the deadline on which a reminder is due (0 = on the day), descending.
    reminder_days: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    #: Days between reminders while overdue (0 = no overdue reminders).
    overdue_every_days: int = 3
    #: What a deadline on the owner's non-working day becomes.
    non_working_day: str = "none"
    #: Order of the milestone in the file.
    position: int = 0
    #: False once the milestone was removed from the file; its statuses are kept.
    active: bool = True


class Status(SQLModel, table=True):
    """Where one member state stands on one milestone: the unit the nightly check classifies."""

    __tablename__ = "status"
    __table_args__ = (
        UniqueConstraint("milestone_id", "member_state_code", name="uq_status_milestone_member_state"),
        _one_of("state", State),
    )

    id: int | None = Field(default=None, primary_key=True)
    milestone_id: int = Field(foreign_key="milestone.id", index=True)
    member_state_code: str = Field(foreign_key="member_state.code", index=True, max_length=2)
    #: Recorded state (pending, in_progress, done, waived).
    state: str = State.pending.value
    #: Deadline instant for this member state's owner (end of the local due day).
    deadline: dt.datetime = Field(sa_type=UTCDateTime)
    #: Instant the window opens for this owner, if the milestone is a window.
    opens_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: IANA zone of the owner for this member state: the clock the deadline is read in.
    owner_timezone: str
    #: When the state last changed.
    changed_at: dt.datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    #: Who changed it ("cli:alice", "ui", "roadmap file").
    changed_by: str = ""
    #: Free note, e.g. the note verbale number.
    note: str = ""
    #: Classification at the last completed nightly check (for "what changed since last night").
    last_classification: str | None = Field(default=None, max_length=16)
    #: As-of instant of that check.
    last_checked_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Window of the last reminder delivered to the owner ("before-7"): a hint that lets the check
    #: skip an item already sent; the reminder log is what guarantees exactly once.
    last_reminder: str | None = Field(default=None, max_length=32)
    #: Window of the last escalation delivered to the coordinators for this row (same kind of hint).
    last_escalation: str | None = Field(default=None, max_length=32)
    #: False once the member state was removed from the roadmap file (``roadmap sync``): the row,
    #: its state and its history are kept, but no check, reminder, calendar or ``mark`` reads it.
    active: bool = Field(default=True, sa_column_kwargs={"server_default": true()})


class StatusChange(SQLModel, table=True):
    """History of recorded states: one row per change, never updated."""

    __tablename__ = "status_change"

    id: int | None = Field(default=None, primary_key=True)
    status_id: int = Field(foreign_key="status.id", index=True)
    #: State before the change.
    old_state: str
    #: State after the change.
    new_state: str
    #: When the change was recorded.
    changed_at: dt.datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    #: Who recorded it.
    changed_by: str = ""
    #: Note given with the change.
    note: str = ""


class ReminderLog(SQLModel, table=True):
    """One reminder to one recipient for one status row in one reminder window.

    The unique key (status, recipient, window) is what makes a reminder at most once: a run
    claims the row (INSERT ... ON CONFLICT DO NOTHING) before any network call.
    """

    __tablename__ = "reminder_log"
    __table_args__ = (
        UniqueConstraint("status_id", "recipient", "window", name="uq_reminder_status_recipient_window"),
        _one_of("state", ReminderState),
        Index("ix_reminder_log_unsent", "state", "claimed_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    #: No index of its own: the unique (status_id, recipient, window) index leads with it
    #: (migration 0006 dropped the separate one, which every claim and mark also wrote).
    status_id: int = Field(foreign_key="status.id")
    #: Apprise tag of the recipient ("mission-jo", "office-jo", "coordinators").
    recipient: str = Field(max_length=64)
    #: Reminder window ("before-14", "due", "overdue-3"): which reminder of the policy this is.
    window: str = Field(max_length=32)
    #: claimed, sent or failed.
    state: str = ReminderState.claimed.value
    #: Delivery attempts made so far, across runs.
    attempts: int = 0
    #: When the current claim was taken (a claim older than the lease is taken over).
    claimed_at: dt.datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    #: Which check run holds or held the claim (a Prefect flow run id or a process tag).
    claimed_by: str = ""
    #: When the reminder was delivered.
    sent_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Why the last attempt failed (never a URL or credential).
    error: str = ""


class AgendaSession(SQLModel, table=True):
    """A timed session of the conference agenda."""

    __tablename__ = "agenda_session"

    id: int | None = Field(default=None, primary_key=True)
    roadmap_id: int = Field(foreign_key="roadmap.id", index=True)
    #: Start instant.
    starts_at: dt.datetime = Field(sa_type=UTCDateTime)
    #: End instant.
    ends_at: dt.datetime = Field(sa_type=UTCDateTime)
    #: English title.
    title: str
    #: Arabic title.
    title_ar: str = ""


class PublishedArtifact(SQLModel, table=True):
    """The content last published under one Prefect artifact key, as a digest.

    A large portfolio's nightly check publishes a roadmap's dashboard artifacts only when their
    content changed (issue "Scale": the Prefect API costs about 10 ms of server time per
    artifact, whatever its size). The row is written after the artifact was created, so a run
    that died before publishing never leaves a digest of content the server does not have.
    """

    __tablename__ = "published_artifact"

    #: The Prefect artifact key ("gcm-arab-2024-matrix").
    key: str = Field(primary_key=True, max_length=200)
    #: SHA-256 (hex) of the published content, without the as-of line.
    digest: str = Field(max_length=64)
    #: As-of instant of the check that published it.
    published_at: dt.datetime = Field(sa_type=UTCDateTime)
