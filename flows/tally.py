"""Streaming what the nightly check needs from classified rows, in bounded memory.

A :class:`MilestoneTally` reads the classified rows of one milestone once and keeps only:
counts per classification, the matrix cells (while the roadmap is small enough to show them),
the rows that need attention (bounded), what changed since the last check, and tonight's
reminder plan. Plain Python, no Prefect: the flows call it, tests can too.
"""

from __future__ import annotations

import datetime as dt
import heapq
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from typing import NamedTuple

from models.calendars import holiday_before
from models.reminders import ESCALATION_OVERDUE, current_window
from models.status import ClassifiedRow, Classification, MilestoneContext, RowOutcome, StatusView, status_view

#: Rows kept per list (overdue, due soon, blocked, changes) for the summary artifact.
ATTENTION_LIMIT = 200
#: Above this many member states, the matrix is summarised per milestone.
MATRIX_MAX_ROWS = 500
#: Items more than this many working days overdue are escalated to the coordinators (issue 4).
ESCALATE_AFTER_WORKING_DAYS = 5

ACTIONABLE = {Classification.upcoming, Classification.due_soon, Classification.due_today, Classification.overdue}
_ACTIONABLE_VALUES = frozenset(c.value for c in ACTIONABLE)
_SETTLED_VALUES = frozenset({Classification.done.value, Classification.waived.value})
_OVERDUE, _DUE_TODAY, _DUE_SOON, _BLOCKED = (
    Classification.overdue, Classification.due_today, Classification.due_soon, Classification.blocked)


@dataclass(slots=True)
class PlannedReminder:
    """One item due tonight for one recipient (Apprise tag) in one reminder window.

    ``source`` is the item's :class:`StatusView`, or the (milestone context, classified row) it
    is built from on demand: a night plans tens of thousands of items, and a row costs a third of
    the memory of a view. Read-only by convention: :class:`PlannedItems` builds one each time an
    item is read, and a frozen dataclass takes three times as long to build.
    """

    source: StatusView | tuple[MilestoneContext, ClassifiedRow]
    recipient: str
    window: str

    @property
    def view(self) -> StatusView:
        """The item's classified status row (built anew from a row source on each access)."""
        source = self.source
        return source if isinstance(source, StatusView) else status_view(*source)

    @property
    def status_id(self) -> int:
        """Id of the item's status row."""
        source = self.source
        return source.status_id if isinstance(source, StatusView) else source[1][0]

    @property
    def planned_hints(self) -> tuple[str | None, str | None]:
        """The row's hints (last reminder window, last escalation window) as the check read them."""
        source = self.source
        return (source.last_reminder, source.last_escalation) if isinstance(source, StatusView) else source[1][5:7]

    @property
    def owner_recipient(self) -> str:
        """Apprise tag of the party that acts on the item's row (the row's own reminders go
        there), read from the source without building a view."""
        source = self.source
        return source.recipient if isinstance(source, StatusView) else source[1][1][2].recipient


#: Interned (last classification, last reminder, last escalation, window) of planned items, kept
#: as one reference an item instead of four. Each value is a classification or a window of the
#: reminder policy, so the process meets few distinct tuples, night after night.
_BOOKKEEPING: dict[tuple, tuple] = {}
#: References :class:`PlannedItems` keeps per item in its flat list: acting party, outcome,
#: bookkeeping (:data:`_BOOKKEEPING`).
_STRIDE = 3


class PlannedItems(Sequence):
    """One recipient's planned items, kept column by column rather than as one
    :class:`PlannedReminder` per item: a sequence of :class:`PlannedReminder` (each built on
    access, with a (milestone context, classified row) source) in the order added.

    Per item it holds the status id in an ``array`` of 8-byte integers, and references to
    shared objects: the row's acting party, its outcome, its milestone context, and one interned
    tuple of the row's last classification and hints with the item's window: 40 bytes. A
    :class:`PlannedReminder` with its source and row, and the row's id as a Python int, was about
    240 bytes, and a first night at 1M status rows plans 314,000 items
    (``benchmarks/nightly_check.py --prior-nights 0 --tracemalloc``).

    Not the row's note: no digest, escalation or reminder event shows it, so an item's row (and
    view) has an empty note. Kept, the notes were one string per noted row held for the night.
    """

    __slots__ = ("recipient", "status_ids", "_contexts", "_fields")

    def __init__(self, recipient: str):
        self.recipient = recipient
        #: Per item, in order: its status id.
        self.status_ids = array("q")
        self._contexts: list[MilestoneContext] = []
        self._fields: list = []  # _STRIDE references per item

    def append(self, context: MilestoneContext, row: ClassifiedRow, window: str) -> None:
        """Add the item of ``row`` (of ``context``'s milestone) in ``window``."""
        status_id, acting, outcome, _note, *bookkeeping = row
        key = (*bookkeeping, window)
        self.status_ids.append(status_id)
        self._fields += (acting, outcome, _BOOKKEEPING.setdefault(key, key))
        self._contexts.append(context)

    def extend(self, other: "PlannedItems") -> None:
        """Add ``other``'s items (the same recipient's), after these."""
        self.status_ids.extend(other.status_ids)
        self._fields += other._fields
        self._contexts += other._contexts

    @property
    def windows(self) -> Iterator[str]:
        """Each item's window, in order."""
        return (kept[3] for kept in islice(self._fields, _STRIDE - 1, None, _STRIDE))

    def __len__(self) -> int:
        return len(self.status_ids)

    def __getitem__(self, position: int) -> PlannedReminder:
        """The item at ``position`` (an int, negative from the end; no slices), built anew.

        Raises:
            IndexError: ``position`` out of range.
        """
        if position < 0:
            position += len(self.status_ids)
        if not 0 <= position < len(self.status_ids):
            raise IndexError(f"planned item {position} of {len(self.status_ids)}")
        start = position * _STRIDE
        acting, outcome, (last, reminded, escalated, window) = self._fields[start : start + _STRIDE]
        row = (self.status_ids[position], acting, outcome, "", last, reminded, escalated)
        return PlannedReminder((self._contexts[position], row), self.recipient, window)

    def __iter__(self) -> Iterator[PlannedReminder]:
        return map(self.__getitem__, range(len(self.status_ids)))


class ReminderPlan:
    """Tonight's planned items, by recipient (Apprise tag): ``recipients`` is
    {recipient: :class:`PlannedItems`}, recipients in the order first met. ``len()`` counts the
    items, of every recipient."""

    __slots__ = ("recipients",)

    def __init__(self):
        self.recipients: dict[str, PlannedItems] = {}

    def add(self, context: MilestoneContext, row: ClassifiedRow, recipient: str, window: str) -> None:
        """Plan the item of ``row`` (of ``context``'s milestone) for ``recipient`` in ``window``."""
        items = self.recipients.get(recipient)
        if items is None:
            items = self.recipients[recipient] = PlannedItems(recipient)
        items.append(context, row, window)

    def merge(self, other: "ReminderPlan") -> None:
        """Take ``other``'s items, after these for each recipient. ``other`` is emptied: its
        items may be shared with this plan."""
        for recipient, items in other.recipients.items():
            mine = self.recipients.get(recipient)
            if mine is None:
                self.recipients[recipient] = items
            else:
                mine.extend(items)
        other.recipients = {}

    def __len__(self) -> int:
        return sum(len(items) for items in self.recipients.values())


def claim_keys(items: Sequence[PlannedReminder]) -> Iterator[tuple[int, str]]:
    """(status id, window) of each of ``items``, in order: read from the columns of
    :class:`PlannedItems` without building its items."""
    if isinstance(items, PlannedItems):
        return zip(items.status_ids, items.windows)
    return ((p.status_id, p.window) for p in items)


class _Bounded:
    """Keep the ``limit`` items with the smallest numeric key (ties: first added first); count all.

    Items are kept as given and turned into what :meth:`items` returns by ``make(*item)`` (by
    default the item itself): the check keeps (milestone context, row) pairs and builds a
    :class:`StatusView` only for the few lists a summary shows.
    """

    def __init__(self, limit: int, make=None):
        self.limit, self.total, self._heap, self._make = limit, 0, [], make

    def offer(self, key: float, item) -> None:
        """Count an item and keep it if it is among the ``limit`` smallest keys so far."""
        self.total += 1
        heap = self._heap  # a max-heap on (key, arrival) through negation
        if len(heap) < self.limit:
            heapq.heappush(heap, (-key, -self.total, item))
        elif (-key, -self.total) > heap[0][:2]:
            heapq.heapreplace(heap, (-key, -self.total, item))

    def items(self, make=None) -> list:
        """Kept items, smallest key first (ties: first added first), each turned into what
        ``make(*item)`` returns (default: the ``make`` given to the constructor)."""
        make = make or self._make
        # Entries (-key, -arrival, item) are unique on their first two values: sorted
        # descending, they are in key then arrival order, without a Python key function.
        kept = [item for _, _, item in sorted(self._heap, reverse=True)]
        return kept if make is None else [make(*item) for item in kept]


def _views() -> _Bounded:
    return _Bounded(ATTENTION_LIMIT, status_view)


class Listed(NamedTuple):
    """A row as a summary lists it (overdue, due, blocked), built straight from the classified
    row (:func:`listed`) rather than as a :class:`StatusView`: a night's summaries list hundreds
    of thousands of rows at 1M status rows. As a tuple it sorts as the summary lists rows:
    fewest days left (most overdue) first, then milestone key, then member state code."""

    days_left: int
    milestone: str
    member_state: str
    member_state_name: str
    #: Aware UTC instant, shown in ``owner_timezone`` (IANA).
    deadline: dt.datetime
    owner_timezone: str
    working_days_left: int
    blocked_by: tuple[str, ...]


def listed(context: MilestoneContext, row: ClassifiedRow) -> Listed:
    """The :class:`Listed` form of a classified row of ``context``'s milestone."""
    o, (code, info, _) = row[2], row[1]
    return Listed(o.days_left, context.key, code, info.name, o.deadline, o.owner_timezone, o.working_days_left,
                  o.blocked_by)


@dataclass
class MilestoneTally:
    """What one milestone's check keeps. Build with :meth:`add_rows`."""

    roadmap: str
    milestone: str
    rows: int = 0
    counts: Counter = field(default_factory=Counter)
    #: {member state code: (member state name, the row's outcome)}: a cell's classification,
    #: working days left and local due day are its outcome's, which rows share.
    cells: dict[str, tuple[str, RowOutcome]] = field(default_factory=dict)
    cells_dropped: bool = False
    overdue: _Bounded = field(default_factory=_views)
    due: _Bounded = field(default_factory=_views)
    blocked: _Bounded = field(default_factory=_views)
    newly: dict[str, _Bounded] = field(default_factory=dict)
    transitions: dict[str, list[int]] = field(default_factory=dict)
    #: Tonight's reminders, to the party acting on each row.
    reminders: ReminderPlan = field(default_factory=ReminderPlan)
    #: Items due tonight whose window was already delivered (not planned again).
    already_sent: int = 0
    #: Tonight's escalations of rows more than :data:`ESCALATE_AFTER_WORKING_DAYS` overdue,
    #: to the coordinators.
    escalations: ReminderPlan = field(default_factory=ReminderPlan)
    holiday_flags: _Bounded = field(default_factory=lambda: _Bounded(ATTENTION_LIMIT, _flagged))
    statuses: list[StatusView] | None = None
    title: str = ""
    title_ar: str = ""
    #: Earliest and latest local due day, and earliest window opening, across member states.
    due_first: dt.date | None = None
    due_last: dt.date | None = None
    opens_first: dt.date | None = None
    #: What an outcome means for this milestone's policy, {(outcome, reminder days, overdue
    #: period): (value, window, escalate, flag)}: pass one dict to the tallies of one check's
    #: milestones, which share outcomes (:class:`models.status.RowOutcome`).
    shared: dict = field(default_factory=dict, repr=False)

    def add_rows(self, context: MilestoneContext, rows: list[ClassifiedRow], escalating: bool = True) -> None:
        """Account for the classified rows of this milestone (:meth:`models.status.Classifier.iter_classified`).
        ``escalating``: whether tonight's overdue escalations are planned (False when it is not a
        working day of the coordinators: :func:`models.parties.coordinators_at_work`; they are
        planned on their next working day, the rows still overdue).

        Per row a few dict updates; what rows sharing a :class:`models.status.RowOutcome` share
        (reminder window, escalation, holiday flag, cell) is worked out once per outcome, and a
        :class:`StatusView` is built only for a row the tally keeps (a list, a reminder).
        """
        if not rows:
            return
        self.title, self.title_ar = context.title, context.title_ar
        counts, cells, transitions = self.counts, self.cells, self.transitions
        statuses = self.statuses
        per_outcome: dict[RowOutcome, tuple] = {}
        policy = reminder_days, overdue_every_days = context.reminder_days, context.overdue_every_days
        known = self.shared
        for row in rows:
            status_id, acting, o, _, last, reminded, escalated = row
            shared = per_outcome.get(o)
            if shared is None:
                key = (o, *policy)
                shared = known.get(key)
                if shared is None:
                    shared = known[key] = self._shared(o, reminder_days, overdue_every_days)
                per_outcome[o] = shared
            value, window, escalate, flag = shared
            counts[value] += 1
            if not self.cells_dropped:
                # The shared outcome, not the view: a matrix cell must not keep its row alive.
                cells[acting[0]] = (acting[1].name, o)
                if len(cells) > MATRIX_MAX_ROWS:
                    cells.clear()
                    self.cells_dropped = True
            c = o.classification
            if c is _OVERDUE:
                self.overdue.offer(o.days_left, (context, row))  # most overdue first
            elif c is _DUE_TODAY or c is _DUE_SOON:
                self.due.offer(o.days_left, (context, row))
            elif c is _BLOCKED:
                self.blocked.offer(0, (context, row))
            if last != value:
                transitions.setdefault(value, []).append(status_id)
                newly = self.newly.get(value)
                if newly is None:
                    newly = self.newly[value] = _views()
                newly.offer(0, (context, row))
            if window is not None:
                # A window already delivered (the row's hint) is not planned again; the reminder
                # log decides for every other one.
                if window != reminded:
                    self.reminders.add(context, row, acting[2].recipient, window)
                else:
                    self.already_sent += 1
            if escalate and escalating and escalated != ESCALATION_OVERDUE:
                self.escalations.add(context, row, "coordinators", ESCALATION_OVERDUE)
            if flag:
                self.holiday_flags.offer(0, (context, row, flag))
            if statuses is not None:
                statuses.append(status_view(context, row))
        self.rows += len(rows)
        days = [o.due_day for o in per_outcome]
        opens = [o.opens_day for o in per_outcome if o.opens_day]
        self.due_first = min(days) if self.due_first is None else min(self.due_first, *days)
        self.due_last = max(days) if self.due_last is None else max(self.due_last, *days)
        if opens:
            self.opens_first = min(opens) if self.opens_first is None else min(self.opens_first, *opens)

    @staticmethod
    def _shared(o: RowOutcome, reminder_days, overdue_every_days) -> tuple:
        """(classification value, reminder window due tonight or None, escalate?, holiday flag)."""
        value = o.classification._value_  # plain str: Enum.value and Enum.__hash__ are Python-level calls
        window = escalate = None
        if value in _ACTIONABLE_VALUES:
            window = _window(o.due_day, o.today, reminder_days, overdue_every_days, o.calendar)
            escalate = o.classification is _OVERDUE and -o.working_days_left > ESCALATE_AFTER_WORKING_DAYS
        flag = None if value in _SETTLED_VALUES else _holiday_flag(o.calendar, o.due_day, o.opens_day)
        return value, window, escalate, flag

    @property
    def done(self) -> int:
        """Rows done or waived."""
        return self.counts[Classification.done.value] + self.counts[Classification.waived.value]


def _flagged(context: MilestoneContext, row: ClassifiedRow, flag: str) -> tuple[StatusView, str]:
    return status_view(context, row), flag


# Bounded small: a portfolio has more (calendar, day) pairs than any cache size worth keeping,
# and each group's tallies share what they found (MilestoneTally.shared).
@lru_cache(maxsize=8192)
def _holiday_flag(calendar, due_day: dt.date, opens_day: dt.date | None) -> str | None:
    """Say why a public holiday of the owner's country (``calendar``) weighs on a row, or None.

    Two cases: the deadline falls within 2 working days after a public holiday; a window
    (e.g. "June 2024") contains public holidays (Eid al-Adha 2024 in the June window).
    """
    near = holiday_before(calendar, due_day, 2)
    if near:
        return f"deadline {due_day} is within 2 working days after {near[1]} ({near[0]})"
    if opens_day:
        inside = calendar.holidays_between(opens_day, due_day)
        if inside:
            names = sorted({name for _, name in inside})
            return f"window {opens_day} to {due_day} contains {len(inside)} public holiday days: " + ", ".join(names)
    return None


@lru_cache(maxsize=8192)
def _window(due_day, today, reminder_days, overdue_every_days, calendar) -> str | None:
    # Rows of one milestone share a handful of (due day, today, calendar) combinations.
    return current_window(
        due_day=due_day, today=today, reminder_days=reminder_days,
        overdue_every_days=overdue_every_days, calendar=calendar,
    )


def status_json(view: StatusView) -> dict:
    """One row of ``roadmap check --json``: ``state`` is the classification, ``recorded_state``
    what coordinators recorded (``pending``, ``in_progress``, ``done``, ``waived``), the deadline
    in the owner's zone, ISO-8601 with offset."""
    return {
        "roadmap": view.roadmap,
        "milestone": view.milestone,
        "member_state": view.member_state,
        "state": view.classification.value,
        "recorded_state": view.recorded_state,
        "deadline": view.deadline_local.isoformat(),
        "days_left": view.days_left,
    }


def as_of_text(moment: dt.datetime) -> str:
    """ISO-8601 text of an aware instant."""
    return moment.isoformat()
