"""Classifying every (milestone, member state) of a roadmap at an instant, and recording states.

Classification rules (issue "nightly status check"; times in the owner's IANA zone):

- ``done`` / ``waived``: as recorded.
- ``blocked``: a milestone it depends on is neither done nor waived for the same member state.
- ``overdue``: the deadline instant has passed (the owner's local due day has ended).
- ``due_today``: the owner's local date is the due day.
- ``due_soon``: no more days left than the first (largest) reminder offset.
- ``upcoming``: otherwise.

The read is set-based: one query per roadmap, streamed in member-state order so memory stays
bounded whatever the size of the roadmap.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import pendulum
from sqlmodel import Session, select

from models.calendars import WorkingCalendar
from models.deadlines import parse_instant
from models.parties import party_for
from models.tables import MemberState, Milestone, Roadmap, State, Status, StatusChange, utc_now


class Classification(str, enum.Enum):
    """Where a status row stands at the check's instant."""

    done = "done"
    waived = "waived"
    blocked = "blocked"
    overdue = "overdue"
    due_today = "due_today"
    due_soon = "due_soon"
    upcoming = "upcoming"


#: Display order: what needs attention first.
ATTENTION_ORDER = [
    Classification.overdue,
    Classification.due_today,
    Classification.due_soon,
    Classification.blocked,
    Classification.upcoming,
    Classification.waived,
    Classification.done,
]

_SATISFIED = {State.done.value, State.waived.value}


@dataclass(frozen=True)
class StatusView:
    """One classified status row; plain values only, safe to pass between tasks.

    ``deadline`` is an aware UTC datetime; ``due_day`` and ``today`` are local calendar dates in
    ``owner_timezone``; ``days_left`` counts calendar days (negative when overdue),
    ``working_days_left`` working days of the owner's ``calendar``; ``opens_day`` the local day a
    window opens; ``last_classification`` what the previous check said (None before any check).
    """

    status_id: int
    roadmap: str
    roadmap_title: str
    milestone: str
    milestone_title: str
    milestone_title_ar: str
    member_state: str
    member_state_name: str
    member_state_name_ar: str
    owner: str
    recipient: str
    recorded_state: str
    classification: Classification
    deadline: dt.datetime
    owner_timezone: str
    due_day: dt.date
    today: dt.date
    days_left: int
    working_days_left: int
    blocked_by: tuple[str, ...]
    note: str
    reminder_days: tuple[int, ...]
    overdue_every_days: int
    calendar: WorkingCalendar
    last_classification: str | None = None
    opens_day: dt.date | None = None

    @property
    def deadline_local(self) -> pendulum.DateTime:
        """The deadline in the owner's zone (aware)."""
        return pendulum.instance(self.deadline).in_tz(self.owner_timezone)


def classify(
    *,
    recorded_state: str,
    deadline: dt.datetime,
    owner_timezone: str,
    as_of: dt.datetime,
    blocked_by: tuple[str, ...],
    first_reminder_days: int,
) -> Classification:
    """Classify one status row (pure function; see the module docstring for the rules).

    Args:
        recorded_state: a :class:`models.tables.State` value.
        deadline: aware deadline instant.
        owner_timezone: IANA zone of the owner.
        as_of: aware instant of the check.
        blocked_by: keys of unmet dependencies (empty when none).
        first_reminder_days: the largest reminder offset in days ("due soon" threshold).
    """
    if recorded_state == State.done.value:
        return Classification.done
    if recorded_state == State.waived.value:
        return Classification.waived
    if blocked_by:
        return Classification.blocked
    if as_of > deadline:
        return Classification.overdue
    today = _local_date(as_of, owner_timezone)
    due_day = _local_date(deadline, owner_timezone)
    if today == due_day:
        return Classification.due_today
    if (due_day - today).days <= first_reminder_days:
        return Classification.due_soon
    return Classification.upcoming


_MEMBER_STATE_COLUMNS = (
    MemberState.code,
    MemberState.name,
    MemberState.name_ar,
    MemberState.mission_timezone,
    MemberState.office_timezone,
    MemberState.weekend_override,
    MemberState.weekend_source,
)


def roadmap_milestones(session: Session, roadmap: Roadmap) -> list[Milestone]:
    """Active milestones of ``roadmap`` in file order."""
    return list(
        session.exec(
            select(Milestone).where(Milestone.roadmap_id == roadmap.id, Milestone.active).order_by(Milestone.position)
        )
    )


def iter_milestone_views(
    session: Session, roadmap: Roadmap, milestone: Milestone, as_of: dt.datetime
) -> Iterator[StatusView]:
    """Yield the status rows of one milestone classified at ``as_of`` (aware), in member-state order.

    Two set-based queries whatever the number of member states: the recorded states of the
    milestones it depends on, then its own rows (streamed).

    Raises:
        ValueError: ``as_of`` is naive.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be time-zone aware")
    dep_states: dict[str, dict[str, str]] = {}
    if milestone.depends_on:
        deps = session.exec(
            select(Status.member_state_code, Milestone.key, Status.state)
            .join(Milestone, Status.milestone_id == Milestone.id)
            .where(Milestone.roadmap_id == roadmap.id, Milestone.key.in_(milestone.depends_on))
        )
        for code, key, state in deps:
            dep_states.setdefault(code, {})[key] = state
    rows = session.exec(
        select(Status.id, Status.state, Status.deadline, Status.opens_at, Status.owner_timezone, Status.note,
               Status.last_classification, *_MEMBER_STATE_COLUMNS)
        .join(MemberState, Status.member_state_code == MemberState.code)
        .where(Status.milestone_id == milestone.id)
        .order_by(MemberState.code)
        .execution_options(yield_per=5000)
    )
    context = _MilestoneContext.of(roadmap, milestone)
    for row in rows:
        recorded = dep_states.get(row.code, {})
        blocked_by = tuple(dep for dep in milestone.depends_on if recorded.get(dep) not in _SATISFIED)
        yield _view(context, row, blocked_by, as_of)


def iter_status_views(session: Session, roadmap: Roadmap, as_of: dt.datetime) -> Iterator[StatusView]:
    """Yield every active status row of ``roadmap`` classified at ``as_of`` (aware), milestone by
    milestone (file order), member states in code order."""
    for milestone in roadmap_milestones(session, roadmap):
        yield from iter_milestone_views(session, roadmap, milestone, as_of)


@dataclass(frozen=True)
class _MilestoneContext:
    roadmap: str
    roadmap_title: str
    coordinator_timezone: str
    coordinator_country: str
    key: str
    title: str
    title_ar: str
    owner: str
    reminder_days: tuple[int, ...]
    overdue_every_days: int

    @classmethod
    def of(cls, roadmap: Roadmap, milestone: Milestone) -> "_MilestoneContext":
        return cls(
            roadmap.slug, roadmap.title, roadmap.coordinator_timezone, roadmap.coordinator_country,
            milestone.key, milestone.title, milestone.title_ar, milestone.owner,
            tuple(milestone.reminder_days), milestone.overdue_every_days,
        )


@lru_cache(maxsize=4096)
def _party(owner, code, mission_tz, office_tz, weekend, weekend_source, coordinator_tz, coordinator_country):
    return party_for(
        owner, member_state_code=code, mission_timezone=mission_tz, office_timezone=office_tz,
        weekend_override=list(weekend) if weekend is not None else None, weekend_source=weekend_source,
        coordinator_timezone=coordinator_tz, coordinator_country=coordinator_country,
    )


@lru_cache(maxsize=65536)
def _local_date(instant: dt.datetime, timezone: str) -> dt.date:
    local = pendulum.instance(instant).in_tz(timezone)
    return dt.date(local.year, local.month, local.day)


@lru_cache(maxsize=65536)
def _working_days(calendar: WorkingCalendar, today: dt.date, due_day: dt.date) -> int:
    return calendar.working_days_between(today, due_day)


def _view(context: _MilestoneContext, row, blocked_by: tuple[str, ...], as_of: dt.datetime) -> StatusView:
    weekend = tuple(row.weekend_override) if row.weekend_override is not None else None
    party = _party(context.owner, row.code, row.mission_timezone, row.office_timezone, weekend,
                   row.weekend_source, context.coordinator_timezone, context.coordinator_country)
    due_day = _local_date(row.deadline, row.owner_timezone)
    today = _local_date(as_of, row.owner_timezone)
    classification = classify(
        recorded_state=row.state,
        deadline=row.deadline,
        owner_timezone=row.owner_timezone,
        as_of=as_of,
        blocked_by=blocked_by,
        first_reminder_days=max(context.reminder_days, default=0),
    )
    return StatusView(
        status_id=row.id,
        roadmap=context.roadmap,
        roadmap_title=context.roadmap_title,
        milestone=context.key,
        milestone_title=context.title,
        milestone_title_ar=context.title_ar,
        member_state=row.code,
        member_state_name=row.name,
        member_state_name_ar=row.name_ar,
        owner=context.owner,
        recipient=party.recipient,
        recorded_state=row.state,
        classification=classification,
        deadline=row.deadline,
        owner_timezone=row.owner_timezone,
        due_day=due_day,
        today=today,
        days_left=(due_day - today).days,
        working_days_left=_working_days(party.calendar, today, due_day),
        blocked_by=blocked_by,
        note=row.note,
        reminder_days=context.reminder_days,
        overdue_every_days=context.overdue_every_days,
        calendar=party.calendar,
        last_classification=row.last_classification,
        opens_day=_local_date(row.opens_at, row.owner_timezone) if row.opens_at else None,
    )


class StatusError(LookupError):
    """``record_status`` got an unknown roadmap, milestone, member state or state; the message names it."""


def record_status(
    session: Session,
    *,
    milestone: str,
    member_state: str,
    state: str,
    note: str | None = None,
    changed_by: str = "",
    roadmap: str | None = None,
    at: dt.datetime | str | None = None,
) -> Status:
    """Record a new state for one (milestone, member state) and keep the change in history.

    Args:
        milestone: milestone key ("invitations").
        member_state: ISO alpha-2 code, any case ("jo").
        state: a :class:`models.tables.State` value.
        note: replaces the note when given (e.g. the note verbale number); None keeps it.
        changed_by: who records it.
        roadmap: roadmap slug; optional when only one roadmap has that milestone key.
        at: when it happened (default: now): an aware datetime, or ISO-8601 text; text without a
            UTC offset is read in the owner's zone for this member state (e.g. the mission's
            Europe/Zurich), as a person filling in a form would mean it.

    Raises:
        StatusError: unknown state, roadmap, milestone or member state, an ambiguous milestone,
            a note over 2000 characters, or ``at`` that is not ISO-8601 or is naive.
    """
    try:
        new_state = State(state)
    except ValueError:
        allowed = ", ".join(s.value for s in State)
        raise StatusError(f"unknown state {state!r}: expected one of {allowed}") from None
    if note is not None and len(note) > 2000:
        raise StatusError(f"note is {len(note)} characters long: at most 2000")
    for name, value in (("milestone", milestone), ("member state", member_state), ("note", note or "")):
        if "\x00" in value:
            raise StatusError(f"{name} {value[:60]!r} contains a NUL character")
    query = select(Status, Milestone, Roadmap).join(Milestone, Status.milestone_id == Milestone.id).join(
        Roadmap, Milestone.roadmap_id == Roadmap.id
    ).where(Milestone.key == milestone, Status.member_state_code == member_state.upper(), Milestone.active)
    if roadmap is not None:
        query = query.where(Roadmap.slug == roadmap)
    found = session.exec(query).all()
    if not found:
        _explain_missing(session, milestone=milestone, member_state=member_state, roadmap=roadmap)
    if len(found) > 1:
        slugs = ", ".join(sorted(r.slug for _, _, r in found))
        raise StatusError(f"milestone {milestone!r} exists in several roadmaps ({slugs}): name one with --roadmap")
    status, _, _ = found[0]
    if isinstance(at, str):
        try:
            at = parse_instant(at, default_timezone=status.owner_timezone)
        except ValueError as exc:
            raise StatusError(str(exc)) from None
    elif at is not None and at.tzinfo is None:
        raise StatusError(f"naive datetime {at!r}: give a UTC offset")
    old_state = status.state
    status.state = new_state.value
    status.changed_at = at or utc_now()
    status.changed_by = changed_by
    if note is not None:
        status.note = note
    session.add(
        StatusChange(
            status_id=status.id,
            old_state=old_state,
            new_state=new_state.value,
            changed_at=status.changed_at,
            changed_by=changed_by,
            note=note or "",
        )
    )
    session.flush()
    return status


def _explain_missing(session: Session, *, milestone: str, member_state: str, roadmap: str | None) -> None:
    if roadmap is not None and session.exec(select(Roadmap.id).where(Roadmap.slug == roadmap)).first() is None:
        raise StatusError(f"unknown roadmap {roadmap!r}")
    if session.exec(select(Milestone.id).where(Milestone.key == milestone, Milestone.active)).first() is None:
        keys = sorted(set(session.exec(select(Milestone.key).where(Milestone.active)).all()))
        raise StatusError(f"unknown milestone {milestone!r}: expected one of {', '.join(keys)}")
    raise StatusError(f"unknown member state {member_state!r} for milestone {milestone!r}")
