"""Classifying every (milestone, member state) of a roadmap at an instant, and recording states.

Classification rules (issue "nightly status check"; times in the owner's IANA zone):

- ``done`` / ``waived``: as recorded.
- ``blocked``: a milestone it depends on is neither done nor waived for the same member state.
- ``overdue``: the deadline instant has passed (the owner's local due day has ended).
- ``due_today``: the owner's local date is the due day.
- ``due_soon``: no more days left than the first (largest) reminder offset.
- ``upcoming``: otherwise.

The read is set-based: one query per roadmap (its rows and those of the milestones they depend
on), so memory is bounded by the largest roadmap, never by the portfolio. What rows share (local
dates, parties, working-day counts) is computed once per check by a :class:`Classifier`.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import zoneinfo
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from typing import Callable, Iterable, Iterator

import pendulum
from sqlalchemy import Integer, String, Text, any_, bindparam, cast, func, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from models.calendars import WorkingCalendar
from models.db import UTCDateTime
from models.deadlines import parse_instant
from models.parties import party_for
from models.roadmap_file import normalise_slug
from models.sync import BRING_BACK, retired_error
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
#: One str object per state, classification and zone name, whatever the rows read.
_CANONICAL: dict[str, str] = {
    value: value
    for value in (*(s.value for s in State), *(c.value for c in Classification), *zoneinfo.available_timezones())
}
_DONE, _WAIVED = State.done.value, State.waived.value


@dataclass(slots=True, eq=False)
class StatusView:
    """One classified status row; plain values only, safe to pass between tasks. Read-only by
    convention (not frozen: a frozen dataclass costs ten times more to build, per row).

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
    #: Window of the last reminder delivered to the owner, and of the last escalation (hints).
    last_reminder: str | None = None
    last_escalation: str | None = None

    @property
    def deadline_local(self) -> pendulum.DateTime:
        """The deadline in the owner's zone (aware)."""
        return pendulum.instance(self.deadline.astimezone(zone(self.owner_timezone)))


@dataclass(slots=True, eq=False)
class RowOutcome:
    """What status rows share when they share a raw deadline, window opening, owner zone,
    working calendar, recorded state, unmet dependencies and their milestone's first reminder
    offset: everything a :class:`StatusView` holds but the row's identity, note and reminder
    hints. Fields as in :class:`StatusView`. One object per distinct combination per
    :class:`Classifier`, across milestones and roadmaps (compared by identity): the roadmaps of
    a portfolio share deadlines.
    """

    classification: Classification
    recorded_state: str
    deadline: dt.datetime
    owner_timezone: str
    due_day: dt.date
    today: dt.date
    opens_day: dt.date | None
    days_left: int
    working_days_left: int
    calendar: WorkingCalendar
    blocked_by: tuple[str, ...]


#: One classified status row, as :meth:`Classifier.iter_classified` yields it: (status id,
#: (member state code, member state info, party), outcome, note, last classification, last
#: reminder window, last escalation window).
ClassifiedRow = tuple


def status_view(context: "MilestoneContext", row: ClassifiedRow) -> StatusView:
    """The :class:`StatusView` of a classified row of ``context``'s milestone."""
    status_id, (code, info, party), o, note, last, reminded, escalated = row
    return StatusView(  # positional, in field order: the fastest way to build it
        status_id, context.roadmap, context.roadmap_title, context.key, context.title, context.title_ar, code,
        info.name, info.name_ar, context.owner, party.recipient, o.recorded_state, o.classification, o.deadline,
        o.owner_timezone, o.due_day, o.today, o.days_left, o.working_days_left, o.blocked_by, note,
        context.reminder_days, context.overdue_every_days, o.calendar, last, o.opens_day, reminded, escalated,
    )


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
    return _classify(
        recorded_state, blocked_by, as_of, deadline,
        _local_date(as_of, owner_timezone), _local_date(deadline, owner_timezone), first_reminder_days,
    )


@dataclass(frozen=True, eq=False)
class _MemberStateInfo:
    """A member state's names, zones and weekend. One object per distinct value
    (:func:`_member_state_info`), so it hashes and compares by identity: it keys the parties
    cache, looked up for every (group, owner, member state) of a night."""

    name: str
    name_ar: str
    mission_timezone: str
    office_timezone: str
    weekend_override: tuple[int, ...] | None
    weekend_source: str


@lru_cache(maxsize=4096)
def _member_state_info(name, name_ar, mission_timezone, office_timezone, weekend_override, weekend_source) -> _MemberStateInfo:
    """The one :class:`_MemberStateInfo` of these values (a member state table row's columns)."""
    return _MemberStateInfo(name, name_ar, mission_timezone, office_timezone, weekend_override, weekend_source)


# Bounded: a portfolio has a few thousand (owner, coordinators, member state) combinations.
@lru_cache(maxsize=16384)
def _shared_acting(owner: str, coordinator_timezone: str, coordinator_country: str, code: str, info: _MemberStateInfo) -> tuple:
    """The (code, member state info, party) acting for ``owner`` on a member state's row, one
    object per distinct value across classifiers (pure: the party follows from these values).

    Each task run of a large check has its own :class:`Classifier`, and each met every member
    state anew: at 1M status rows the night worked out 248,000 parties, for at most 7,470
    distinct (owner, coordinators' office, member state) in the benchmark's portfolio (13 % of
    the classification). The night's reminder plan keeps its rows until they are sent, and one
    object per value also keeps it small: 52,000 equal parties and 56,000 equal triples were
    11 MB (``benchmarks/nightly_check.py --tracemalloc``)."""
    party = party_for(
        owner, member_state_code=code, mission_timezone=info.mission_timezone, office_timezone=info.office_timezone,
        weekend_override=list(info.weekend_override) if info.weekend_override is not None else None,
        weekend_source=info.weekend_source, coordinator_timezone=coordinator_timezone,
        coordinator_country=coordinator_country,
    )
    return code, info, party


class Classifier:
    """Classifies status rows at one instant, computing once what rows share.

    Rows of a milestone share a few deadlines and zones, and a member state keeps its party
    across milestones, so local dates, parties and working-day counts are kept in dicts for the
    classifier's life (one check): a row then costs a few dict lookups and one ``StatusView``
    (issue "Scale"; the figures against the time of merely reading the rows are in
    docs/benchmarks.md). Not thread-safe: one classifier per task run.

    Args:
        as_of: aware instant of the check.

    Raises:
        ValueError: ``as_of`` is naive.
    """

    #: Entries kept per memo before it is emptied (bounds memory on very large portfolios).
    MEMO_LIMIT = 50_000

    def __init__(self, as_of: dt.datetime):
        if as_of.tzinfo is None:
            raise ValueError("as_of must be time-zone aware")
        self.as_of = as_of
        self._dates: dict[tuple[dt.datetime, str], dt.date] = {}
        self._working: dict[tuple, int] = {}
        self._member_states: dict[str, _MemberStateInfo] | None = None
        self._party_tables: dict[tuple, dict] = {}
        #: One str object per reminder hint ("before-7", "escalation-overdue"; open-ended, so not
        #: in _CANONICAL), not one per row: each row of a night's reminder plan keeps its hints.
        self._hints: dict[str | None, str | None] = {}
        #: {first reminder offset: {(raw deadline, raw opening, zone, calendar, state, blocked by): RowOutcome}}
        self._outcomes: dict[int, dict[tuple, RowOutcome]] = {}
        #: {(raw deadline, raw opening, zone, calendar): (deadline, due day, today, opening day,
        #: working days left)}: what outcomes differing only in state or dependencies share.
        self._days: dict[tuple, tuple] = {}
        self._instant = None  # the deadline column's own result processor, once a connection is known

    def _bound_memos(self) -> None:
        for memo in (self._dates, self._working, self._days):
            if len(memo) > self.MEMO_LIMIT:
                memo.clear()
        if sum(len(outcomes) for outcomes in self._outcomes.values()) > self.MEMO_LIMIT:
            self._outcomes.clear()

    def local_date(self, instant: dt.datetime, timezone: str) -> dt.date:
        """The local calendar date of an aware ``instant`` in the IANA ``timezone``."""
        key = (instant, timezone)
        found = self._dates.get(key)
        if found is None:
            found = self._dates[key] = _local_date(instant, timezone)
        return found

    def member_state(self, session: Session, code: str) -> _MemberStateInfo:
        """The member state's names, zones and weekend (all member states are read once)."""
        if self._member_states is None or code not in self._member_states:
            columns = (MemberState.code, MemberState.name, MemberState.name_ar, MemberState.mission_timezone,
                       MemberState.office_timezone, MemberState.weekend_override, MemberState.weekend_source)
            self._member_states = {
                code_: _member_state_info(name, name_ar, mission_tz, office_tz,
                                          tuple(weekend) if weekend is not None else None, weekend_source)
                for code_, name, name_ar, mission_tz, office_tz, weekend, weekend_source in session.exec(select(*columns))
            }
        return self._member_states[code]

    def iter_roadmap(
        self,
        session: Session,
        roadmap: Roadmap,
        milestones: list[Milestone] | None = None,
        every_milestone: list[Milestone] | None = None,
    ) -> Iterator[StatusView]:
        """Yield the status rows of ``milestones`` (default: the roadmap's active ones, file order),
        classified, milestone by milestone, member states in code order (see
        :meth:`iter_classified`)."""
        for context, rows in self.iter_classified(session, roadmap, milestones, every_milestone):
            for row in rows:
                yield status_view(context, row)

    def iter_classified(
        self,
        session: Session,
        roadmap: Roadmap,
        milestones: list[Milestone] | None = None,
        every_milestone: list[Milestone] | None = None,
        rows: list | None = None,
    ) -> Iterator[tuple["MilestoneContext", list[ClassifiedRow]]]:
        """Yield (milestone context, classified rows in member-state code order) for each of
        ``milestones`` (default: the roadmap's active ones, in file order).

        One query for the roadmap: the rows of these milestones and of the milestones they depend
        on, read together (a roadmap holds at most member states x milestones rows, so memory
        stays bounded by the largest roadmap, not by the portfolio). ``every_milestone``, when the
        caller has them, are all the roadmap's milestones, removed ones included (dependencies).
        Rows are plain tuples (:data:`ClassifiedRow`) sharing their :class:`RowOutcome`: a
        caller that needs a :class:`StatusView` for a few of them builds it with
        :func:`status_view`. ``rows``, when the caller read them already (:func:`read_ahead`),
        are :func:`read_status_rows` of :func:`milestones_to_read`.
        """
        every = every_milestone if every_milestone is not None else list(
            session.exec(select(Milestone).where(Milestone.roadmap_id == roadmap.id)))
        wanted = milestones if milestones is not None else sorted(
            (m for m in every if m.active), key=lambda m: m.position)
        dependency_ids = _dependencies(wanted, every)
        ids = {m.id for m in wanted} | set(dependency_ids)  # milestones_to_read, from what is at hand
        if not ids:
            return
        connection = session.connection()
        if rows is None:
            rows = read_status_rows(connection, ids)
        if self._instant is None:
            self._instant = instant_reader(connection.dialect)
        per_milestone: dict[int, list] = {}
        #: {dependency key: member state codes that did it (done or waived)}
        satisfied: dict[str, set[str]] = {key: set() for key in dependency_ids.values()}
        for row in rows:
            per_milestone.setdefault(row[0], []).append(row)
            if row[0] in dependency_ids and row[3] in _SATISFIED:
                satisfied[dependency_ids[row[0]]].add(row[1])
        del rows
        self._bound_memos()
        for milestone in wanted:
            context = MilestoneContext.of(roadmap, milestone)
            yield context, self._classify_milestone(
                session, context, milestone.depends_on, per_milestone.pop(milestone.id, ()), satisfied)

    def _parties_of(self, context: "MilestoneContext") -> dict:
        """{member state code: ((code, member state info, party), ``id()`` of the party's working
        calendar)} for ``context``'s owner (and its coordinators), filled as member states are
        met (:meth:`_acting`); a :class:`models.parties.Party` each."""
        key = (context.owner, context.coordinator_timezone, context.coordinator_country)
        table = self._party_tables.get(key)
        if table is None:
            table = self._party_tables[key] = {}
        return table

    def _acting(self, session: Session, context: "MilestoneContext", code: str) -> tuple:
        """((code, member state info, party), id(the party's calendar)) acting on ``context``'s
        milestone for ``code`` (an entry of :meth:`_parties_of`)."""
        acting = _shared_acting(context.owner, context.coordinator_timezone, context.coordinator_country, code,
                                self.member_state(session, code))
        return acting, id(acting[2].calendar)

    def _classify_milestone(self, session, context, depends_on, rows, satisfied) -> list[ClassifiedRow]:
        # Runs once per status row: everything rows share is looked up, never recomputed.
        first_reminder_days = max(context.reminder_days, default=0)
        parties = self._parties_of(context)
        outcomes = self._outcomes.setdefault(first_reminder_days, {})
        canonical, hints = _CANONICAL, self._hints
        unknown = set()  # a dependency missing from the roadmap (removed) counts as unmet
        needs = [(d, satisfied.get(d, unknown)) for d in depends_on]
        # Most milestones wait for at most one other: then a row is blocked by it or by nothing.
        single = (needs[0][1], tuple(depends_on)) if len(needs) == 1 else None
        classified = []
        append = classified.append
        for _, code, status_id, state, raw_deadline, raw_opens, timezone, note, last, reminded, escalated in rows:
            entry = parties.get(code)
            if entry is None:
                entry = parties[code] = self._acting(session, context, code)
            acting, calendar_id = entry
            if single is not None:
                blocked_by = () if code in single[0] else single[1]
            else:
                blocked_by = tuple(d for d, done in needs if code not in done) if needs else ()
            # The calendar by identity: its own __hash__ is a Python call, once per row. The
            # party in the parties table keeps it alive (its id is not reused) for the
            # classifier's life.
            outcome_key = (raw_deadline, raw_opens, timezone, calendar_id, state, blocked_by)
            outcome = outcomes.get(outcome_key)
            if outcome is None:
                outcome = outcomes[outcome_key] = self._outcome(
                    raw_deadline, raw_opens, canonical.get(timezone, timezone), acting[2].calendar,
                    canonical.get(state, state), blocked_by, first_reminder_days)
            # One object per distinct value, not one per row: rows kept for the night (reminders,
            # the summary's lists) then cost their own fields only.
            append((status_id, acting, outcome, note, canonical.get(last, last),
                    hints.setdefault(reminded, reminded), hints.setdefault(escalated, escalated)))
        return classified

    def _outcome(self, raw_deadline, raw_opens, timezone, calendar, state, blocked_by, first_reminder_days) -> RowOutcome:
        days_key = (raw_deadline, raw_opens, timezone, calendar)
        days = self._days.get(days_key)
        if days is None:
            days = self._days[days_key] = self._days_of(raw_deadline, raw_opens, timezone, calendar)
        deadline, due_day, today, opens_day, working_days_left = days
        return RowOutcome(
            _classify(state, blocked_by, self.as_of, deadline, today, due_day, first_reminder_days),
            state, deadline, timezone, due_day, today, opens_day, (due_day - today).days, working_days_left,
            calendar, blocked_by,
        )

    def _days_of(self, raw_deadline, raw_opens, timezone, calendar) -> tuple:
        """(deadline, due day, today, opening day, working days left) of a raw deadline and
        opening in ``timezone`` and ``calendar``."""
        deadline = self._instant(raw_deadline)
        opens_at = self._instant(raw_opens) if raw_opens is not None else None
        due_day, today = self.local_date(deadline, timezone), self.local_date(self.as_of, timezone)
        opens_day = self.local_date(opens_at, timezone) if opens_at is not None else None
        working_key = (calendar, today, due_day)
        working_days_left = self._working.get(working_key)
        if working_days_left is None:
            working_days_left = self._working[working_key] = calendar.working_days_between(today, due_day)
        return deadline, due_day, today, opens_day, working_days_left


#: The status columns classification reads, in the order :meth:`Classifier.iter_classified`
#: unpacks them. Deadlines raw: a milestone's rows share a few, each converted once.
STATUS_COLUMNS = (
    Status.milestone_id, Status.member_state_code, Status.id, Status.state,
    type_coerce(Status.deadline, String), type_coerce(Status.opens_at, String),
    Status.owner_timezone, Status.note, Status.last_classification, Status.last_reminder, Status.last_escalation,
)


#: Positions in :data:`STATUS_COLUMNS` of the deadline and the window opening.
STATUS_INSTANTS = (4, 5)


def read_status_rows(connection: Connection, milestone_ids: set[int]) -> list:
    """The :data:`STATUS_COLUMNS` of every active status row of these milestones (a member state
    removed from the roadmap file has inactive rows: ``models.sync``), ordered by milestone
    id and member state code (sequences; read the deadline and opening columns, text, with
    :func:`instant_reader`): :func:`send_status_query`, then its rows at once.

    Args:
        connection: a SQLAlchemy connection (SQLite or PostgreSQL).
        milestone_ids: ids of the milestones whose rows to read.
    """
    return send_status_query(connection, milestone_ids)()


def send_status_query(connection: Connection, milestone_ids: set[int]) -> Callable[[], list]:
    """Run the query of :func:`read_status_rows` and return a function that gives its rows
    (a list, in that order; call it once).

    On SQLite the rows come back as one JSON array built by the database, in one row, decoded
    here. Python's ``sqlite3`` lets go of the GIL for every row it steps through, and while any
    other thread of the process is busy (artifacts being published, Prefect's event and log
    workers) each row then waits for that thread's turn to end (``benchmarks/sqlite_reads.py``:
    20,000 rows read in 8.5 s instead of 0.03 s next to one busy thread); one row per roadmap
    waits once: 0.2 s.

    On PostgreSQL the statement runs here and its result stays in the driver (libpq's buffer,
    no Python object per row) until the function is called, which takes the rows from the
    driver's cursor as plain tuples (timestamps as text), built by psycopg in C, and closes it:
    :func:`read_ahead` runs the statements in a thread that only waits for the server, and
    builds the rows in the caller's. The statement's text is the same for any set of ids (one
    array parameter), so psycopg prepares it once. The server's own ``json_agg`` of the same
    rows took 3.2 s at 1M status rows, against 1.5 s for the plain rows, read one roadmap after
    the other (``benchmarks/nightly_check.py``'s portfolio). The server sorts them (``ORDER
    BY``, the codes compared byte by byte, ``COLLATE "C"``, as Python compares ``str``; the
    codes are ASCII, ``models.roadmap_file.check_country``): about 1.5 ms of the server's per
    statement while the caller classifies (0.6 s a night at 1M status rows), instead of a
    Python sort by a key tuple per row in the caller's thread (docs/benchmarks-history.md, seventeenth
    session).
    """
    if connection.dialect.name == "postgresql":
        # Instants as text ("2024-05-31 21:59:59+00"): ISO 8601, as psycopg itself requires of
        # the session's DateStyle to read any timestamp; parsed once per distinct value.
        columns = [cast(c, Text) if i in STATUS_INSTANTS else c for i, c in enumerate(STATUS_COLUMNS)]
        wanted = Status.milestone_id == any_(bindparam("ids", sorted(milestone_ids), type_=ARRAY(Integer)))
        order = (Status.milestone_id, Status.member_state_code.collate("C"))
        statement = select(*columns).where(wanted, Status.active).order_by(*order)
        cursor = connection.execute(statement).cursor  # the driver's own cursor

        def rows() -> list:
            try:
                return cursor.fetchall()  # the driver's tuples: no Row object per row
            finally:
                cursor.close()

        return rows
    aggregate = func.json_group_array(func.json_array(*STATUS_COLUMNS))
    where = Status.milestone_id.in_(milestone_ids)
    found = connection.execute(
        select(cast(aggregate, Text)).where(where, Status.active)).scalar_one()  # text: json.loads here
    decoded = json.loads(found) if found else []
    decoded.sort(key=itemgetter(0, 1))
    return lambda: decoded


def _dependencies(milestones: list[Milestone], every_milestone: list[Milestone]) -> dict[int, str]:
    """{id: key} of the milestones ``milestones`` depend on, found among ``every_milestone`` (the
    roadmap's; a removed dependency is not there and counts as unmet)."""
    by_key = {m.key: m for m in every_milestone}
    return {by_key[d].id: d for m in milestones for d in m.depends_on if d in by_key}


def milestones_to_read(milestones: list[Milestone], every_milestone: list[Milestone]) -> set[int]:
    """Ids of the milestones whose status rows classifying ``milestones`` reads: theirs and those
    of the milestones they depend on (:func:`_dependencies`)."""
    return {m.id for m in milestones} | set(_dependencies(milestones, every_milestone))


#: Statements read ahead of the roadmaps being classified (:func:`read_ahead`).
READ_AHEAD = 2
#: Milestone sets (roadmaps) read in one statement by :func:`read_ahead`.
READ_BATCH = 4


def read_ahead(
    engine: Engine, id_sets: Iterable[set[int]], depth: int = READ_AHEAD, batch: int = READ_BATCH
) -> Iterator[list]:
    """Yield :func:`read_status_rows` of each set of milestone ids, in order. ``batch`` sets are
    read in one statement (one consistent snapshot of those roadmaps) on a connection of the
    reader's own, in autocommit (no BEGIN and ROLLBACK around each statement: on PostgreSQL two
    round trips a statement, 3.1 % of a check at 1M status rows sampled by py-spy), and their
    rows split again, each set's in the order :func:`read_status_rows` gives.

    The statements run in a worker thread, up to ``depth`` ahead, while the caller classifies
    (:func:`send_status_query`). On SQLite the database builds the JSON array inside
    ``sqlite3``'s step, without Python's GIL, on the machine's other core. On PostgreSQL the
    thread only sends the statement and waits for the server, without the GIL; the caller
    builds the rows (in C) when they are due.

    Why not all the work in the thread: what waits in a reader thread is the GIL. Each time it
    needs it back (to build rows, to decode them) it waits for the classifying thread's turn to
    end (``sys.getswitchinterval()``, 5 ms), longer than the classification of a roadmap. On
    PostgreSQL a reader thread that also fetched the rows gained nothing (the check took as long
    as with every read in the caller's thread, docs/benchmarks-history.md, ninth session).

    Memory holds ``depth`` statements' rows ahead (``batch`` roadmaps each, hundreds of rows per
    roadmap). A statement's error is raised when its first set's rows are due, after the sets of
    the statements before it.
    """
    held: dict[str, Connection] = {}
    postgresql = engine.dialect.name == "postgresql"

    def send(chunk: list[set[int]]) -> Callable[[], list[list]]:
        connection = held.get("connection")
        if connection is None:
            connection = held["connection"] = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        rows = send_status_query(connection, set().union(*chunk))
        if postgresql:
            return lambda: split(chunk, rows())
        split_here = split(chunk, rows())  # SQLite: decoded in this thread already
        return lambda: split_here

    def split(chunk: list[set[int]], rows: list) -> list[list]:
        if len(chunk) == 1:
            return [rows]
        by_milestone = {key: list(group) for key, group in groupby(rows, key=itemgetter(0))}
        return [[row for milestone_id in sorted(ids) for row in by_milestone.get(milestone_id, ())] for ids in chunk]

    def close() -> None:
        connection = held.pop("connection", None)
        if connection is not None:
            connection.close()

    sets, size = list(id_sets), max(1, batch)  # a group's roadmaps: tens
    chunks = [sets[start : start + size] for start in range(0, len(sets), size)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-rows") as pool:
        pending: deque = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(send, chunk))
                if len(pending) > depth:
                    yield from pending.popleft().result()()  # the rows, built here on PostgreSQL
            while pending:
                yield from pending.popleft().result()()
        finally:
            for future in pending:
                future.cancel()
            pool.submit(close)  # in the thread that used it (SQLite connections belong to one)


def instant_reader(dialect) -> Callable[[str], dt.datetime]:
    """Turn a deadline or opening as :func:`read_status_rows` gives it (text) into an aware UTC
    datetime: SQLite's stored text through the column type's own reader (:class:`models.db.UTCDateTime`),
    PostgreSQL's ISO 8601 text with its offset through :meth:`datetime.datetime.fromisoformat`."""
    if dialect.name == "postgresql":
        return lambda text: dt.datetime.fromisoformat(text).astimezone(dt.timezone.utc)
    return UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)


def iter_milestone_views(
    session: Session, roadmap: Roadmap, milestone: Milestone, as_of: dt.datetime
) -> Iterator[StatusView]:
    """Yield the status rows of one milestone classified at ``as_of`` (aware), in member-state order.

    Raises:
        ValueError: ``as_of`` is naive.
    """
    return Classifier(as_of).iter_roadmap(session, roadmap, [milestone])


def iter_status_views(session: Session, roadmap: Roadmap, as_of: dt.datetime) -> Iterator[StatusView]:
    """Yield every active status row of ``roadmap`` classified at ``as_of`` (aware), milestone by
    milestone (file order), member states in code order.

    Raises:
        ValueError: ``as_of`` is naive.
    """
    return Classifier(as_of).iter_roadmap(session, roadmap)


@dataclass(frozen=True)
class MilestoneContext:
    """What every status row of one milestone shares: roadmap and milestone names and policy
    (plain values; build with :meth:`of`)."""

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
    def of(cls, roadmap: Roadmap, milestone: Milestone) -> "MilestoneContext":
        """The context of ``milestone`` of ``roadmap`` (ORM rows)."""
        return cls(
            roadmap.slug, roadmap.title, roadmap.coordinator_timezone, roadmap.coordinator_country,
            milestone.key, milestone.title, milestone.title_ar, milestone.owner,
            tuple(milestone.reminder_days), milestone.overdue_every_days,
        )


@lru_cache(maxsize=1024)
def zone(name: str) -> pendulum.Timezone:
    """The pendulum time zone for an IANA name, kept once read (``pendulum.timezone()`` reads
    the zone file on every call; a zone is immutable).

    Raises:
        pendulum.tz.exceptions.InvalidTimezone: an unknown name.
    """
    return pendulum.timezone(name)


def _local_date(instant: dt.datetime, timezone: str) -> dt.date:
    local = instant.astimezone(zone(timezone))
    return dt.date(local.year, local.month, local.day)


def _classify(recorded_state, blocked_by, as_of, deadline, today, due_day, first_reminder_days) -> Classification:
    if recorded_state == _DONE:
        return Classification.done
    if recorded_state == _WAIVED:
        return Classification.waived
    if blocked_by:
        return Classification.blocked
    if as_of > deadline:
        return Classification.overdue
    if today == due_day:
        return Classification.due_today
    if (due_day - today).days <= first_reminder_days:
        return Classification.due_soon
    return Classification.upcoming


class StatusError(LookupError):
    """``record_status`` got an unknown roadmap, milestone, member state or state; the message names it."""


#: How far in the future a recorded change may be dated (``record_status``'s ``at``): the clocks
#: of the machine that records and of the one that reads may differ by this much.
FUTURE_SLACK = dt.timedelta(minutes=5)


#: Longest ``changed_by`` accepted (characters): a name or an account, with its source ("cli:", "csv:").
CHANGED_BY_MAX = 200


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
        state: a :class:`models.tables.State` value, in any case, a space or hyphen for its
            underscore ("In progress").
        note: replaces the note when given (e.g. the note verbale number); None keeps it.
        changed_by: who records it.
        roadmap: roadmap slug; optional when only one roadmap has that milestone key.
        at: when it happened (default: now): an aware datetime, or ISO-8601 text; text without a
            UTC offset is read in the owner's zone for this member state (e.g. the mission's
            Europe/Zurich), as a person filling in a form would mean it.

    Raises:
        StatusError: unknown state, roadmap, milestone or member state, an ambiguous milestone,
            a note over 2000 characters, ``changed_by`` over :data:`CHANGED_BY_MAX` characters,
            a NUL or undecodable byte in a text, or ``at`` that is not ISO-8601, is
            naive, is later than now by more than :data:`FUTURE_SLACK` (found by a bad-input
            review) or earlier than a change a person already recorded for the row.
    """
    try:
        # Written as people write it in a spreadsheet or a shell ("Done", "In progress"); found
        # by a coordinator's walkthrough.
        new_state = State(state.strip().lower().replace(" ", "_").replace("-", "_"))
    except ValueError:
        allowed = ", ".join(s.value for s in State)
        raise StatusError(f"unknown state {state!r}: expected one of {allowed}") from None
    if note is not None and len(note) > 2000:
        raise StatusError(f"note is {len(note)} characters long: at most 2000")
    # Found by a review of the record-status flow: changed_by (typed in the Prefect UI) was stored
    # 100,000 characters long, or with a NUL that PostgreSQL refused with its own error.
    if len(changed_by) > CHANGED_BY_MAX:
        raise StatusError(f"changed_by is {len(changed_by)} characters long: at most {CHANGED_BY_MAX}")
    for name, value in (("milestone", milestone), ("member state", member_state), ("note", note or ""),
                        ("changed_by", changed_by), ("roadmap", roadmap or "")):
        if "\x00" in value:
            raise StatusError(f"{name} {value[:60]!r} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line (a Latin-1 terminal)
            raise StatusError(f"{name} {value[:60]!r} is not valid text: it holds bytes that are not UTF-8") from None
    if roadmap is not None:
        # As the file's slug is read ("GCM-ARAB-2024" is gcm-arab-2024); found by a review.
        roadmap = normalise_slug(roadmap) or roadmap
    query = select(Status, Milestone, Roadmap).join(Milestone, Status.milestone_id == Milestone.id).join(
        Roadmap, Milestone.roadmap_id == Roadmap.id
    ).where(Milestone.key == milestone, Status.member_state_code == member_state.upper(), Milestone.active,
            Status.active, Roadmap.active)
    if roadmap is not None:
        query = query.where(Roadmap.slug == roadmap)
    # The row locked until the change commits (PostgreSQL; SQLite has one writer at a time): two
    # people recording it at once are written one after the other, each history row starting
    # from the state the other left (found by a review of things happening at once: both started
    # from "pending").
    found = session.exec(query.with_for_update(of=Status)).all()
    if not found:
        _explain_missing(session, milestone=milestone, member_state=member_state, roadmap=roadmap)
    if len(found) > 1:
        slugs = ", ".join(sorted(r.slug for _, _, r in found))
        raise StatusError(f"milestone {milestone!r} exists in several roadmaps ({slugs}): name one (roadmap, --roadmap)")
    status, _, _ = found[0]
    given = at
    if isinstance(at, str):
        try:
            at = parse_instant(at, default_timezone=status.owner_timezone)
        except ValueError as exc:
            raise StatusError(str(exc)) from None
    elif at is not None and at.tzinfo is None:
        raise StatusError(f"naive datetime {at!r}: give a UTC offset")
    if at is not None and at > utc_now() + FUTURE_SLACK:
        shown = given if isinstance(given, str) else given.isoformat()
        raise StatusError(f"at {shown!r} is in the future ({at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC): "
                          "record what has happened, when it happened")
    if at is not None:
        _refuse_before_a_later_change(session, status, at, given if isinstance(given, str) else given.isoformat())
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


def _refuse_before_a_later_change(session: Session, status: Status, at: dt.datetime, shown: str) -> None:
    """Refuse a change dated before one a person already recorded for this status row: the
    backdated state would replace the later one as the current state (found by a review:
    ``--at 2024-01-01`` turned a ``done`` recorded minutes earlier back into ``pending``). The
    states a roadmap file set when it was loaded do not count: a change that happened before
    the load may still be recorded with its date."""
    later = session.exec(
        select(StatusChange).where(StatusChange.status_id == status.id, StatusChange.changed_by != "roadmap file")
        .order_by(StatusChange.changed_at.desc(), StatusChange.id.desc())
    ).first()
    if later is not None and later.changed_at > at:  # aware UTC: models.db.UTCDateTime
        raise StatusError(
            f"at {shown!r} ({at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M} UTC) is before the change already recorded "
            f"({later.new_state} at {later.changed_at:%Y-%m-%d %H:%M} UTC by {later.changed_by}): it would "
            "replace it as the current state; record it with a later time, or without one (now)")


def _explain_missing(session: Session, *, milestone: str, member_state: str, roadmap: str | None) -> None:
    if roadmap is not None:
        named = session.exec(select(Roadmap.active).where(Roadmap.slug == roadmap)).first()
        if named is None:
            raise StatusError(f"unknown roadmap {roadmap!r}")
        if not named:
            raise StatusError(retired_error(roadmap))
    live = (Milestone.active, Roadmap.active)
    if session.exec(select(Milestone.id).join(Roadmap, Milestone.roadmap_id == Roadmap.id).where(
            Milestone.key == milestone, *live)).first() is None:
        retired = sorted(set(session.exec(select(Roadmap.slug).join(Milestone, Milestone.roadmap_id == Roadmap.id).where(
            Milestone.key == milestone, Milestone.active, ~Roadmap.active)).all()))
        if retired:
            raise StatusError(f"milestone {milestone!r} belongs to retired roadmap(s) {', '.join(retired)} "
                              f"({BRING_BACK})")
        keys = sorted(set(session.exec(select(Milestone.key).join(Roadmap, Milestone.roadmap_id == Roadmap.id).where(
            *live)).all()))
        raise StatusError(f"unknown milestone {milestone!r}: expected one of {', '.join(keys)}")
    if roadmap is not None and session.exec(select(Milestone.id).join(Roadmap, Milestone.roadmap_id == Roadmap.id).where(
            Milestone.key == milestone, Milestone.active, Roadmap.slug == roadmap)).first() is None:
        # Found by a review: the member state was blamed for a milestone the named roadmap lacks.
        keys = sorted(set(session.exec(select(Milestone.key).join(Roadmap, Milestone.roadmap_id == Roadmap.id).where(
            Milestone.active, Roadmap.slug == roadmap)).all()))
        raise StatusError(f"roadmap {roadmap!r} has no milestone {milestone!r}: expected one of {', '.join(keys)}")
    removed = session.exec(select(Status.id).join(Milestone, Status.milestone_id == Milestone.id).join(
        Roadmap, Milestone.roadmap_id == Roadmap.id).where(
        Milestone.key == milestone, *live, Status.member_state_code == member_state.upper(), ~Status.active,
    )).first()
    if removed is not None:
        raise StatusError(f"member state {member_state!r} was removed from the roadmap file of milestone {milestone!r}")
    raise StatusError(f"unknown member state {member_state!r} for milestone {milestone!r}")
