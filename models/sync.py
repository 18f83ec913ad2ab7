"""Loading a validated roadmap into the database: an idempotent upsert in one transaction.

Loading the same file twice changes nothing. Moving a date updates the milestone and every
status row's deadline and keeps every recorded state, note and reminder log. A milestone
removed from the file is marked inactive, never deleted, so no recorded status is lost; so are
the status rows of a member state removed from the file (and made active again when it is listed
again).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pendulum
from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, select

from models.db import session_scope
from models.deadlines import end_of_local_day, start_of_local_day
from models.roadmap_file import MemberStateSpec, RoadmapFileError, RoadmapSpec, load_roadmap_file
from models.tables import (
    AgendaSession,
    MemberState,
    Milestone,
    Roadmap,
    State,
    Status,
    StatusChange,
    utc_now,
)


@dataclass
class SyncReport:
    """What a load did: counts of rows created, updated and removed, per table name. A
    milestone or member state no longer in the file is kept, inactive (updated); only agenda
    sessions are removed."""

    roadmap: str
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    #: What the load changed beyond this roadmap, one sentence each: a member state's names,
    #: zones and weekend are kept once for every roadmap that lists it.
    warnings: list[str] = field(default_factory=list)

    def count(self, kind: str, table: str, n: int = 1) -> None:
        """Count ``n`` rows of ``table`` as ``kind`` ("created", "updated" or "removed")."""
        if n:
            bucket = {"created": self.created, "updated": self.updated, "removed": self.removed}[kind]
            bucket[table] = bucket.get(table, 0) + n

    @property
    def changed(self) -> bool:
        """True when anything was written."""
        return bool(self.created or self.updated or self.removed)


def _assign(row, values: dict) -> list[str]:
    """Set attributes that differ; return their names (empty when none did: falsy)."""
    changed = []
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed.append(name)
    return changed


def _other_roadmaps(session: Session, code: str, roadmap_id: int) -> list[str]:
    """Slugs (sorted) of the roadmaps other than ``roadmap_id`` with active status rows of the
    member state ``code``."""
    query = (select(Roadmap.slug).join(Milestone, Milestone.roadmap_id == Roadmap.id)
             .join(Status, Status.milestone_id == Milestone.id)
             .where(Status.member_state_code == code, Status.active, Roadmap.id != roadmap_id).distinct())
    return sorted(session.exec(query).all())


def member_state_values(ms: MemberStateSpec) -> dict:
    """The ``MemberState`` columns (but its code) as the file describes member state ``ms``:
    ``{"name", "name_ar", "timezone", "mission_name", "mission_name_ar", "mission_timezone",
    "office_name", "office_name_ar", "office_timezone", "weekend_override" (weekday numbers,
    Monday = 0, or None),
    "weekend_source"}``. One row holds them for every roadmap that lists the member state."""
    return dict(
        name=ms.name,
        name_ar=ms.name_ar,
        timezone=ms.timezone,
        mission_name=ms.mission.name,
        mission_name_ar=ms.mission.name_ar,
        mission_timezone=ms.mission.timezone,
        office_name=ms.office.name,
        office_name_ar=ms.office.name_ar,
        office_timezone=ms.office.timezone,
        weekend_override=ms.weekend.numbers() if ms.weekend else None,
        weekend_source=ms.weekend.source if ms.weekend else "",
    )


def check_member_states_agree(specs: list[tuple[str | Path, RoadmapSpec]]) -> None:
    """Refuse roadmap files, synced together, that describe one member state differently: its
    record is shared (:func:`member_state_values`), so the last file would win and each sync
    would change it back and forth. Found by a bad-input review.

    Args:
        specs: (file, its validated spec) pairs, in the order they are synced.

    Raises:
        RoadmapFileError: names the later file, the field path (``member_states[i].office.timezone``)
            and its value, and the earlier file with its value.
    """
    first: dict[str, tuple[str | Path, dict, MemberStateSpec]] = {}
    for path, spec in specs:
        for index, ms in enumerate(spec.member_states):
            values = member_state_values(ms)
            if ms.code not in first:
                first[ms.code] = (path, values, ms)
                continue
            earlier, known, earlier_ms = first[ms.code]
            for column, value in values.items():
                if value != known[column]:
                    field, written = _as_written(ms, column)
                    raise RoadmapFileError(
                        path, f"member_states[{index}].{field}", written,
                        f"member state {ms.code} is described otherwise in {earlier} "
                        f"({_as_written(earlier_ms, column)[1]!r}); it is one record for every roadmap: make the "
                        "files say the same",
                    )


#: The roadmap-file field of each ``MemberState`` column (:func:`member_state_values`).
FIELD_OF_COLUMN = {
    "name": "name", "name_ar": "name_ar", "timezone": "timezone", "mission_name": "mission.name",
    "mission_name_ar": "mission.name_ar", "mission_timezone": "mission.timezone", "office_name": "office.name",
    "office_name_ar": "office.name_ar", "office_timezone": "office.timezone",
    "weekend_override": "weekend.days", "weekend_source": "weekend.source",
}


def _as_written(ms: MemberStateSpec, column: str) -> tuple[str, object]:
    """The file's field for ``column`` of member state ``ms``, and its value as the file wrote
    it (weekday names, not numbers); ``("weekend", None)`` when the file gives no weekend."""
    field = FIELD_OF_COLUMN[column]
    if field.startswith("weekend.") and ms.weekend is None:
        return "weekend", None
    value = ms
    for part in field.split("."):
        value = getattr(value, part)
    return field, value


def sync_roadmap_file(path: str | Path, database_url: str | None = None) -> SyncReport:
    """Validate ``path`` and upsert it into the database in one transaction.

    Raises:
        RoadmapFileError: the file is invalid; the database is not touched.
    """
    spec = load_roadmap_file(path)
    with session_scope(database_url) as session:
        return upsert_roadmap(session, spec, source_file=str(path))


#: How a retired roadmap comes back, as the messages that name one say it.
BRING_BACK = "`roadmap sync` its file to bring it back"
#: ``changed_by`` of the statuses and history the roadmap file sets (a milestone's ``status``).
FILE_AUTHOR = "roadmap file"


def retired_error(slug: str) -> str:
    """The message for a retired roadmap a command was asked about by its slug."""
    return f"roadmap {slug!r} is retired ({BRING_BACK})"


class RetireError(LookupError):
    """``retire_roadmap`` got a slug no roadmap has; the message names it and the slugs there are."""


def retire_roadmap(session: Session, slug: str) -> bool:
    """Retire the roadmap ``slug`` (no commit): from then on no check, reminder, dashboard,
    calendar, report or ``roadmap mark`` sees it; its milestones, status rows, states, notes,
    history and reminder log are kept, and :func:`upsert_roadmap` (``roadmap sync`` of its file)
    makes it active again. For a conference that was held, or a roadmap file whose slug was
    changed (loaded again, it is a new roadmap beside the old one).

    Returns:
        True when it was active, False when it was already retired.

    Raises:
        RetireError: no roadmap has that slug.
    """
    roadmap = session.exec(select(Roadmap).where(Roadmap.slug == slug)).first()
    if roadmap is None:
        slugs = ", ".join(session.exec(select(Roadmap.slug).order_by(Roadmap.slug)).all()) or "none"
        raise RetireError(f"unknown roadmap {slug!r}: the database has {slugs}")
    was_active = roadmap.active
    roadmap.active = False
    session.add(roadmap)
    session.flush()
    return was_active


def upsert_roadmap(session: Session, spec: RoadmapSpec, source_file: str = "", revive: bool = True) -> SyncReport:
    """Write ``spec`` into ``session`` (no commit). See the module docstring for the rules.

    A retired roadmap (:func:`retire_roadmap`) is updated; ``revive`` makes it active again (its
    file named to ``roadmap sync``), else it stays retired (a folder synced: found by a review,
    a folder's sync brought a held conference back, its reminders with it). Either is said in
    the report's warnings.

    Raises:
        RoadmapFileError: the slug normalises to that of a roadmap declared with another slug
            (Prefect artifact keys allow only ``[a-z0-9-]``, so the two would share artifacts).
    """
    report = SyncReport(spec.slug)
    roadmap = session.exec(select(Roadmap).where(Roadmap.slug == spec.slug)).first()
    if roadmap is not None and roadmap.declared_slug and spec.declared_slug and roadmap.declared_slug != spec.declared_slug:
        raise RoadmapFileError(
            source_file, "slug", spec.declared_slug,
            f"normalises to {spec.slug!r}, the slug of the roadmap written {roadmap.declared_slug!r}"
            f" (loaded from {roadmap.source_file or 'another file'}): choose another slug",
        )
    roadmap_values = dict(
        declared_slug=spec.declared_slug or None,
        title=spec.title,
        title_ar=spec.title_ar,
        coordinator_timezone=spec.coordinator.timezone,
        coordinator_country=spec.coordinator.country,
        coordinator_email=spec.coordinator.email,
        event_timezone=spec.venue.timezone,
        source_file=source_file,
    )
    retired = roadmap is not None and not roadmap.active
    if retired and revive:
        roadmap_values["active"] = True
        report.warnings.append(f"was retired: it is checked again (`roadmap retire {spec.slug}` retires it again)")
    elif retired:
        report.warnings.append(f"is retired and stays retired (`roadmap sync {source_file or 'ITS-FILE'}`, the file "
                               "named, checks it again)")
    if roadmap is None or (retired and revive):
        # Found by a coordinator's walkthrough: a file whose slug was changed is loaded as a new
        # roadmap, and the old one stays checked beside it (its parties reminded twice).
        twins = session.exec(select(Roadmap.slug).where(
            Roadmap.active, Roadmap.slug != spec.slug,
            (Roadmap.title == spec.title) | ((Roadmap.source_file == source_file) & (Roadmap.source_file != ""))
        ).order_by(Roadmap.slug)).all()
        for twin in twins:
            report.warnings.append(f"roadmap {twin!r} has the same title or file and is still checked: if this one "
                                   f"replaces it, `roadmap retire {twin}`")
    if roadmap is None:
        roadmap = Roadmap(slug=spec.slug, **roadmap_values)
        session.add(roadmap)
        session.flush()
        report.count("created", "roadmap")
    elif _assign(roadmap, roadmap_values):
        report.count("updated", "roadmap")

    states = {row.code: row for row in session.exec(select(MemberState)).all()}
    for ms in spec.member_states:
        values = member_state_values(ms)
        row = states.get(ms.code)
        if row is None:
            states[ms.code] = MemberState(code=ms.code, **values)
            session.add(states[ms.code])
            report.count("created", "member_state")
        elif changed := _assign(row, values):
            report.count("updated", "member_state")
            others = _other_roadmaps(session, ms.code, roadmap.id)
            if others:  # found by a bad-input review: another roadmap's member state changed silently
                fields = ", ".join(dict.fromkeys(FIELD_OF_COLUMN[column] for column in changed))
                report.warnings.append(
                    f"member state {ms.code}: {fields} changed; it is one record for every roadmap "
                    f"that lists it, also {', '.join(others)}, whose files may say otherwise: make them say the "
                    "same (the file synced last wins)")
    session.flush()

    milestones = {m.key: m for m in session.exec(select(Milestone).where(Milestone.roadmap_id == roadmap.id))}
    new_owner: set[str] = set()  # keys of milestones whose owner the file changed
    for position, ms_spec in enumerate(spec.milestones):
        dates = spec.due[ms_spec.key]
        policy = spec.policy(ms_spec)
        values = dict(
            title=ms_spec.title,
            title_ar=ms_spec.title_ar,
            owner=ms_spec.owner.value,
            deadline_rule=ms_spec.deadline,
            opens_rule=ms_spec.opens,
            due_date=dates.due,
            opens_date=dates.opens,
            depends_on=list(ms_spec.depends_on),
            reminder_days=list(policy.before_days),
            overdue_every_days=policy.overdue_every_days,
            non_working_day=ms_spec.non_working_day.value,
            position=position,
            active=True,
        )
        row = milestones.get(ms_spec.key)
        if row is None:
            milestones[ms_spec.key] = Milestone(roadmap_id=roadmap.id, key=ms_spec.key, **values)
            session.add(milestones[ms_spec.key])
            report.count("created", "milestone")
        elif changed := _assign(row, values):
            report.count("updated", "milestone")
            if "owner" in changed:
                new_owner.add(ms_spec.key)
    for key, row in milestones.items():
        if key not in spec.due and row.active:
            row.active = False
            report.count("updated", "milestone")
            # Found by a review of roadmap changes: a key renamed in the file looked like an
            # update, and the statuses recorded under the old key were left behind unsaid.
            report.warnings.append(f"milestone {key!r} is no longer in the file: its statuses and history are kept, "
                                   "inactive, until the file lists that key again (a renamed key starts afresh)")
    session.flush()

    _upsert_statuses(session, spec, roadmap, milestones, new_owner, report)
    _upsert_agenda(session, spec, roadmap, report)
    if report.changed:
        roadmap.loaded_at = utc_now()
    session.flush()
    return report


def _upsert_statuses(session, spec, roadmap, milestones, new_owner, report) -> None:
    """Write each (milestone, member state) row of ``spec``. A row whose local due day moved gets
    the reminders of its new schedule (:func:`models.reminders.restart_schedules`; said in the
    report's warnings per milestone); one whose owner changed, or listed again, loses its hints
    (:func:`models.reminders.forget_hints`): the reminder log, keyed by recipient, decides.

    A milestone's ``status`` and ``note`` in the file are recorded on the rows whose state the
    file set and no one has recorded since (history written by :data:`FILE_AUTHOR`); a row
    recorded by a person keeps its state, and the report says how many differ from the file
    (found by a review of roadmap changes: a file's new ``status: done`` was ignored without a
    word)."""
    moved: dict[str, list[tuple[int, dt.date, dt.date]]] = {}  # per milestone key: (status id, old, new due day)
    unhinted: list[int] = []  # rows of a new owner, or listed again: their hints are cleared
    restated: Counter = Counter()  # per milestone key: rows given the file's new status
    kept: Counter = Counter()  # per milestone key: rows a person recorded otherwise than the file says
    existing = {
        (row.milestone_id, row.member_state_code): row
        for row in session.exec(
            select(Status).join(Milestone).where(Milestone.roadmap_id == roadmap.id)
        )
    }
    for ms_spec in spec.milestones:
        milestone = milestones[ms_spec.key]
        dates = spec.due[ms_spec.key]
        for member in spec.member_states:
            party, due = spec.party_due(ms_spec, member)
            values = dict(
                deadline=_utc(end_of_local_day(due, party.timezone)),
                opens_at=_utc(start_of_local_day(dates.opens, party.timezone)) if dates.opens else None,
                owner_timezone=party.timezone,
                active=True,
            )
            row = existing.get((milestone.id, member.code))
            if row is None:
                row = Status(
                    milestone_id=milestone.id,
                    member_state_code=member.code,
                    state=ms_spec.status.value,
                    changed_by=FILE_AUTHOR,
                    note=ms_spec.note,
                    **values,
                )
                session.add(row)
                report.count("created", "status")
                if ms_spec.status is not State.pending:
                    session.flush()
                    session.add(
                        StatusChange(
                            status_id=row.id,
                            old_state=State.pending.value,
                            new_state=row.state,
                            changed_by=FILE_AUTHOR,
                            note=ms_spec.note,
                        )
                    )
            else:
                old_due = pendulum.instance(row.deadline).in_timezone(row.owner_timezone).date()
                returning = not row.active
                changed = _assign(row, values)
                if (row.changed_by == FILE_AUTHOR and (row.state, row.note) != (ms_spec.status.value, ms_spec.note)
                        and _restate(session, row, ms_spec)):
                    restated[ms_spec.key] += 1
                    changed = True
                elif ms_spec.status is not State.pending and row.state != ms_spec.status.value:
                    kept[ms_spec.key] += 1
                if changed:
                    report.count("updated", "status")
                if old_due != due:
                    moved.setdefault(ms_spec.key, []).append((row.id, old_due, due))
                elif ms_spec.key in new_owner or returning:
                    unhinted.append(row.id)
    listed = {member.code for member in spec.member_states}
    unlisted: set[str] = set()
    for (_, code), row in existing.items():
        if code not in listed and row.active:
            row.active = False  # kept with its state, note and history; read again if listed again
            report.count("updated", "status")
            unlisted.add(code)
    for code in sorted(unlisted):
        report.warnings.append(f"member state {code} is no longer in the file: its statuses and history are kept, "
                               "inactive, until the file lists it again")
    for ms_spec in spec.milestones:
        if restated[ms_spec.key]:
            report.warnings.append(
                f"milestone {ms_spec.key!r}: the file's status ({ms_spec.status.value}) and note recorded for "
                f"{_member_states(restated[ms_spec.key])} that no one had recorded otherwise")
        if kept[ms_spec.key]:
            report.warnings.append(
                f"milestone {ms_spec.key!r}: the file says {ms_spec.status.value}; the state recorded for "
                f"{_member_states(kept[ms_spec.key])} is kept (`roadmap mark` changes it)")
    if not (moved or unhinted):
        return
    # Here, not at the top: importing models.reminders reads ROADMAP_CLAIM_LEASE_S, which every
    # command would then refuse before its own error handling (`roadmap status` too).
    from models.reminders import forget_hints, restart_schedules

    session.flush()
    forget_hints(session, unhinted)
    for key, rows in moved.items():
        restart_schedules(session, rows)
        changed = "deadline and owner" if key in new_owner else "deadline"
        report.warnings.append(f"milestone {key!r}: {changed} changed for {_member_states(len(rows))}: their "
                               "reminders follow the new schedule")
    for key in sorted(new_owner - moved.keys()):
        report.warnings.append(f"milestone {key!r}: owner changed: the new owners get its reminders from the "
                               "current window on")


def _restate(session, row: Status, ms_spec) -> bool:
    """Record the file's status and note of ``ms_spec`` on ``row``, with its history, unless a
    person recorded the row since it was read (one conditional ``UPDATE``; found by a review of
    this change: a ``roadmap mark`` committed during the sync was overwritten). Returns whether
    it was recorded."""
    old_state, old_note = row.state, row.note
    new_state, new_note = ms_spec.status.value, ms_spec.note
    changed_at = utc_now() if new_state != old_state else row.changed_at
    recorded = session.connection().execute(
        update(Status).where(Status.id == row.id, Status.changed_by == FILE_AUTHOR, Status.state == old_state,
                             Status.note == old_note)
        .values(state=new_state, note=new_note, changed_at=changed_at)).rowcount
    if not recorded:
        return False
    for name, value in (("state", new_state), ("note", new_note), ("changed_at", changed_at)):
        set_committed_value(row, name, value)  # what the row holds now, without a second UPDATE
    if new_state != old_state:
        session.add(StatusChange(status_id=row.id, old_state=old_state, new_state=new_state,
                                 changed_at=changed_at, changed_by=FILE_AUTHOR, note=new_note))
    return True


def _member_states(count: int) -> str:
    return f"{count} member state{'s' if count != 1 else ''}"


def _upsert_agenda(session, spec, roadmap, report) -> None:
    wanted = []
    for item in spec.agenda:
        start = pendulum.datetime(item.date.year, item.date.month, item.date.day, item.start.hour, item.start.minute, tz=spec.venue.timezone)
        end = pendulum.datetime(item.date.year, item.date.month, item.date.day, item.end.hour, item.end.minute, tz=spec.venue.timezone)
        wanted.append((_utc(start), _utc(end), item.title, item.title_ar))
    rows = session.exec(
        select(AgendaSession).where(AgendaSession.roadmap_id == roadmap.id).order_by(AgendaSession.starts_at, AgendaSession.id)
    ).all()
    have = [(r.starts_at, r.ends_at, r.title, r.title_ar) for r in rows]
    wanted.sort(key=lambda item: item[0])
    if have == wanted:
        return
    for row in rows:
        session.delete(row)
    for starts_at, ends_at, title, title_ar in wanted:
        session.add(AgendaSession(roadmap_id=roadmap.id, starts_at=starts_at, ends_at=ends_at, title=title, title_ar=title_ar))
    # The agenda is written again whole; the report counts sessions as a reader of the file
    # would (found by bad-input reviews: any change read "updated 1 agenda_session"): a session
    # kept as it was is not counted, one whose start is still there but whose end or titles
    # changed is updated, the others are created or removed.
    kept = Counter(have) & Counter(wanted)
    gone, new = list((Counter(have) - kept).elements()), list((Counter(wanted) - kept).elements())
    starts_gone = Counter(item[0] for item in gone)
    updated = sum((Counter(item[0] for item in new) & starts_gone).values())
    report.count("updated", "agenda_session", updated)
    report.count("created", "agenda_session", len(new) - updated)
    report.count("removed", "agenda_session", len(gone) - updated)


def _utc(moment) -> dt.datetime:
    """Return an aware instant as a stdlib UTC datetime (the form the database returns)."""
    return dt.datetime.fromtimestamp(moment.timestamp(), tz=dt.timezone.utc)
