"""Calendar feeds (RFC 5545) of the roadmap, written with the ``icalendar`` package.

Per member state: each milestone's deadline is an event at the deadline instant (23:59:59 on
the due day), written in its *owner's* zone with a TZID: the permanent mission's
(Europe/Zurich) for mission-owned milestones, the country office's for office-owned ones, the
coordinators' for coordinator-owned ones. Each event carries one VALARM per reminder offset, at
09:00 of the owner's day that many days before the deadline (:func:`alarm_trigger`); a row done
or waived is a "Done:" or "Waived:" event without alarms. The conference agenda sessions are
timed events in the venue's zone. VTIMEZONE components are added by ``icalendar`` from the zone
database.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from icalendar import Alarm, Calendar, Event, Timezone
from sqlmodel import Session, func, select

from models.status import Classification, iter_status_views
from models.sync import retired_error
from models.tables import AgendaSession, MemberState, Milestone, Roadmap, Status, StatusChange
from notifications.digest import hijri_date
from notifications.plurals import english_count

PRODID = "-//roadmap-tracker//roadmap calendar//EN"
#: The way feeds are written, in each folder's stamp: raised when it changes, so that feeds
#: written before are written again (2: a deadline in an hour the clocks repeat in UTC).
FEED_FORMAT = 2
DEFAULT_CALENDAR_DIR = "calendars"


class IcsError(ValueError):
    """A calendar that cannot be built: unknown member state or roadmap (the message names it)."""


def calendar_dir() -> Path:
    """Folder of published feeds (``ROADMAP_CALENDAR_DIR``, default ``./calendars``)."""
    return Path(os.environ.get("ROADMAP_CALENDAR_DIR") or DEFAULT_CALENDAR_DIR)


def _local(instant: dt.datetime, zone: str) -> dt.datetime:
    """``instant`` (aware) in ``zone`` to the second, as a plain datetime with a ``ZoneInfo``
    (which ``icalendar`` writes as a TZID) that keeps the ``fold`` of a repeated hour."""
    return dt.datetime.fromtimestamp(instant.timestamp(), ZoneInfo(zone)).replace(microsecond=0)


def _second_pass(local: dt.datetime) -> bool:
    """True when ``local`` falls in the second pass of an hour the clocks repeat, which RFC 5545
    (3.3.5) would read, written with its TZID, as the first."""
    return bool(local.fold) and local.replace(fold=0).utcoffset() != local.utcoffset()


def _written(local: dt.datetime) -> dt.datetime:
    """What a DTSTART or DTEND holds: the local time with its TZID, or UTC for a second pass
    (:func:`_second_pass`; found by a code review: Cairo's 23:59:59 on 31 October 2024, one hour
    before summer time ended at midnight, was written an hour early)."""
    return local.astimezone(dt.timezone.utc) if _second_pass(local) else local


def _new_calendar(name: str) -> Calendar:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", name)
    return cal


#: Time of day (the owner's) at which a deadline's alarms go off, on each reminder day: the
#: start of a working morning, not the deadline's own 23:59:59 (found by a coordinator's
#: walkthrough: "due today" rang at midnight).
ALARM_TIME = dt.time(9, 0)
#: What a finished row's event is called instead of "Deadline"; it has no alarms.
FINISHED = {Classification.done: "Done", Classification.waived: "Waived"}


def alarm_trigger(days: int, deadline_local: dt.datetime) -> dt.timedelta:
    """The VALARM trigger (relative to the event's start, the deadline in its owner's zone) that
    goes off at :data:`ALARM_TIME` local, ``days`` days before the deadline's day: -P14DT14H59M59S
    for 14 days before a 23:59:59 deadline. RFC 5545 (3.3.6) counts the days of a duration as
    calendar days and its hours as exact ones: 09:00 local unless the clocks change between
    09:00 and the deadline on its own day. A deadline written in UTC (:func:`_written`) gets the
    exact time from the alarm to the deadline: UTC's days are all 24 hours."""
    if _second_pass(deadline_local):
        alarm_day = deadline_local.date() - dt.timedelta(days=days)
        alarm = dt.datetime.combine(alarm_day, ALARM_TIME, deadline_local.tzinfo)
        return alarm.astimezone(dt.timezone.utc) - deadline_local.astimezone(dt.timezone.utc)
    since_alarm = deadline_local.replace(tzinfo=None) - dt.datetime.combine(deadline_local.date(), ALARM_TIME)
    return -(dt.timedelta(days=days) + since_alarm)


def _deadline_event(view, roadmap: Roadmap) -> Event:
    event = Event()
    event.add("uid", f"{roadmap.slug}.{view.milestone}.{view.member_state.lower()}@roadmap-tracker")
    event.add("dtstamp", roadmap.loaded_at)
    start = _local(view.deadline, view.owner_timezone)
    event.add("dtstart", _written(start))
    finished = FINISHED.get(view.classification)
    event.add("summary", f"{finished or 'Deadline'}: {view.milestone_title} ({view.member_state_name})")
    event.add(
        "description",
        f"{roadmap.title}\n{view.milestone_title}\n{view.member_state_name} ({view.member_state}), "
        f"owner: {view.owner} ({view.recipient})\n"
        f"{view.milestone_title_ar}\n{view.member_state_name_ar}\n"
        f"الموعد النهائي {view.due_day.isoformat()} الموافق {hijri_date(view.due_day)} هـ",
    )
    event.add("categories", [view.milestone, view.owner])
    if finished:  # found by a seed review: a row done in March still rang five times
        return event
    for days in view.reminder_days:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        due = "due today" if days == 0 else f"due in {english_count(days, 'day')}"  # was "due in 1 days"
        alarm.add("description", f"{view.milestone_title} ({view.member_state_name}) {due}")
        alarm.add("trigger", alarm_trigger(days, start))
        event.add_component(alarm)
    return event


def _agenda_events(session: Session, roadmap: Roadmap) -> list[Event]:
    events = []
    sessions = session.exec(
        select(AgendaSession).where(AgendaSession.roadmap_id == roadmap.id).order_by(AgendaSession.starts_at)
    )
    for number, item in enumerate(sessions, start=1):
        event = Event()
        event.add("uid", f"{roadmap.slug}.agenda.{number}@roadmap-tracker")
        event.add("dtstamp", roadmap.loaded_at)
        event.add("dtstart", _written(_local(item.starts_at, roadmap.event_timezone)))
        event.add("dtend", _written(_local(item.ends_at, roadmap.event_timezone)))
        event.add("summary", item.title)
        event.add("description", f"{item.title}\n{item.title_ar}\n{roadmap.title}")
        events.append(event)
    return events


@lru_cache(maxsize=256)
def _vtimezone(tzid: str) -> Timezone:
    # Building a VTIMEZONE from the zone database is slow (tens of ms): once per zone per process.
    return Timezone.from_tzid(tzid)


def _add_timezones(cal: Calendar) -> None:
    """Add one VTIMEZONE per TZID the calendar's events use (what ``add_missing_timezones`` does, cached)."""
    tzids = set()
    for event in cal.walk("VEVENT"):
        for name in ("dtstart", "dtend"):
            if name in event and "TZID" in event[name].params:
                tzids.add(str(event[name].params["TZID"]))
    for tzid in sorted(tzids):
        cal.add_component(_vtimezone(tzid))


def _roadmaps(session: Session, roadmap: str | None) -> list[Roadmap]:
    """The active roadmaps, or the one named (refused when unknown or retired)."""
    query = select(Roadmap).order_by(Roadmap.slug)
    if roadmap:
        query = query.where(Roadmap.slug == roadmap)
    found = list(session.exec(query))
    if roadmap and not found:
        raise IcsError(f"unknown roadmap {roadmap!r}")
    if roadmap and not found[0].active:
        raise IcsError(retired_error(roadmap))
    return [r for r in found if r.active]


def build_calendar(
    session: Session,
    *,
    member_state: str | None = None,
    roadmap: str | None = None,
    as_of: dt.datetime | None = None,
) -> bytes:
    """Return an RFC 5545 calendar (bytes, CRLF lines) of deadlines and agenda sessions.

    Args:
        member_state: ISO alpha-2 code to restrict the deadlines to; None for all member states.
        roadmap: roadmap slug; None for every roadmap.
        as_of: aware instant used to show each deadline's state in its description (default now).

    Raises:
        IcsError: unknown member state or roadmap.
    """
    as_of = as_of or dt.datetime.now(dt.timezone.utc)
    code = member_state.upper() if member_state else None
    if code and session.get(MemberState, code) is None:
        raise IcsError(f"unknown member state {member_state!r}")
    cal = _new_calendar("Roadmap deadlines" + (f" ({code})" if code else ""))
    for rm in _roadmaps(session, roadmap):
        for view in iter_status_views(session, rm, as_of):
            if code is None or view.member_state == code:
                cal.add_component(_deadline_event(view, rm))
        for event in _agenda_events(session, rm):
            cal.add_component(event)
    _add_timezones(cal)
    return cal.to_ical()


def write_feeds(session: Session, roadmap: Roadmap, out_dir: Path, as_of: dt.datetime) -> list[Path]:
    """Write ``<out_dir>/<slug>/all.ics`` and one ``<cc>.ics`` per member state in one pass over
    the roadmap's rows, classified as of ``as_of`` (aware; a naive one raises ``ValueError``);
    return the paths (``all.ics`` first, then by code).

    A feed holds deadlines, the agenda and which rows are finished, which change only when the
    roadmap is loaded again or a status is recorded: when the feeds of this load
    (``roadmap.loaded_at``) and of the roadmap's latest recorded change (its id in the
    ``status_change`` history) are already there, nothing is rewritten.
    Files are written to a temporary name and renamed, so a subscriber never reads half a file.
    The feed of a member state the roadmap no longer lists (``models.sync``) is removed when the
    feeds are written again (found by a bad-input review: it stayed, with old deadlines): the
    folder is this program's, and any other ``*.ics`` file put there is removed too.
    """
    target = out_dir / roadmap.slug
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / ".loaded_at"
    # The latest change by its id, not its time: a change may be recorded with an earlier date.
    latest = session.exec(
        select(func.max(StatusChange.id)).join(Status, StatusChange.status_id == Status.id)
        .join(Milestone, Status.milestone_id == Milestone.id).where(Milestone.roadmap_id == roadmap.id)
    ).one()
    version = f"{roadmap.loaded_at.isoformat()} {latest or ''} format {FEED_FORMAT}"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == version:
        existing = sorted(target.glob("*.ics"), key=lambda p: (p.name != "all.ics", p.name))
        if existing:
            return existing
    calendars = {"all": _new_calendar(f"{roadmap.title}: deadlines")}
    for view in iter_status_views(session, roadmap, as_of):
        event = _deadline_event(view, roadmap)
        calendars["all"].add_component(event)
        code = view.member_state.lower()
        if code not in calendars:
            calendars[code] = _new_calendar(f"{roadmap.title}: deadlines ({view.member_state})")
        calendars[code].add_component(event)
    agenda = _agenda_events(session, roadmap)
    written = []
    for name in ["all"] + sorted(k for k in calendars if k != "all"):
        cal = calendars[name]
        for event in agenda:
            cal.add_component(event)
        _add_timezones(cal)
        path = target / f"{name}.ics"
        partial = target / f".{name}.{uuid.uuid4().hex}.part"  # unique: runs may write at once
        partial.write_bytes(cal.to_ical())
        os.replace(partial, path)
        written.append(path)
    for stale in set(target.glob("*.ics")) - set(written):  # a member state the roadmap no longer lists
        stale.unlink(missing_ok=True)
    partial = target / f".loaded_at.{uuid.uuid4().hex}.part"
    partial.write_text(version, encoding="utf-8")
    os.replace(partial, stamp)
    return written
