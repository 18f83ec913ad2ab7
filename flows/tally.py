"""Streaming what the nightly check needs from classified rows, in bounded memory.

A :class:`MilestoneTally` reads the classified rows of one milestone once and keeps only:
counts per classification, the matrix cells (while the roadmap is small enough to show them),
the rows that need attention (bounded), what changed since the last check, and tonight's
reminder plan. Plain Python, no Prefect: the flows call it, tests can too.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from models.calendars import holiday_before
from models.reminders import current_window
from models.status import Classification, StatusView

#: Rows kept per list (overdue, due soon, blocked, changes) for the summary artifact.
ATTENTION_LIMIT = 200
#: Above this many member states, the matrix is summarised per milestone.
MATRIX_MAX_ROWS = 500
#: Items more than this many working days overdue are escalated to the coordinators (issue 4).
ESCALATE_AFTER_WORKING_DAYS = 5
#: Window of that escalation (sent once per status row).
ESCALATION_OVERDUE = "escalation-overdue"

ACTIONABLE = {Classification.upcoming, Classification.due_soon, Classification.due_today, Classification.overdue}
_ACTIONABLE_VALUES = frozenset(c.value for c in ACTIONABLE)
_SETTLED_VALUES = frozenset({Classification.done.value, Classification.waived.value})
_OVERDUE, _DUE_TODAY, _DUE_SOON, _BLOCKED = (
    Classification.overdue, Classification.due_today, Classification.due_soon, Classification.blocked)


@dataclass(frozen=True)
class PlannedReminder:
    """One item due tonight for one recipient (Apprise tag) in one reminder window."""

    view: StatusView
    recipient: str
    window: str


class _Bounded:
    """Keep the ``limit`` items with the smallest numeric key (ties: first added first); count all."""

    def __init__(self, limit: int):
        self.limit, self.total, self._heap = limit, 0, []

    def add(self, key: float, item) -> None:
        self.total += 1
        entry = (-key, -self.total, item)  # max-heap on (key, arrival) through negation
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list:
        """Kept items, smallest key first."""
        return [item for _, _, item in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]


@dataclass
class MilestoneTally:
    """What one milestone's check keeps. Build with :meth:`add` per row, or :func:`tally`."""

    roadmap: str
    milestone: str
    rows: int = 0
    counts: Counter = field(default_factory=Counter)
    #: {member state code: (name, classification, working days left, local due day)}
    cells: dict[str, tuple[str, Classification, int, dt.date]] = field(default_factory=dict)
    cells_dropped: bool = False
    overdue: _Bounded = field(default_factory=lambda: _Bounded(ATTENTION_LIMIT))
    due: _Bounded = field(default_factory=lambda: _Bounded(ATTENTION_LIMIT))
    blocked: _Bounded = field(default_factory=lambda: _Bounded(ATTENTION_LIMIT))
    newly: dict[str, _Bounded] = field(default_factory=dict)
    transitions: dict[str, list[int]] = field(default_factory=dict)
    reminders: list[PlannedReminder] = field(default_factory=list)
    #: Items due tonight whose window was already delivered (not planned again).
    already_sent: int = 0
    escalations: list[PlannedReminder] = field(default_factory=list)
    holiday_flags: _Bounded = field(default_factory=lambda: _Bounded(ATTENTION_LIMIT))
    statuses: list[StatusView] | None = None
    title: str = ""
    title_ar: str = ""
    #: Earliest and latest local due day, and earliest window opening, across member states.
    due_first: dt.date | None = None
    due_last: dt.date | None = None
    opens_first: dt.date | None = None

    def add(self, view: StatusView) -> None:
        """Account for one classified row (a few comparisons and dict updates: it runs per row)."""
        self.rows += 1
        due_day = view.due_day
        if self.rows == 1:
            self.title, self.title_ar = view.milestone_title, view.milestone_title_ar
            self.due_first = self.due_last = due_day
        elif due_day < self.due_first:
            self.due_first = due_day
        elif due_day > self.due_last:
            self.due_last = due_day
        if view.opens_day and (self.opens_first is None or view.opens_day < self.opens_first):
            self.opens_first = view.opens_day
        c = view.classification
        value = c._value_  # plain str: Enum.value and Enum.__hash__ are Python-level calls
        self.counts[value] += 1
        if not self.cells_dropped:
            # Plain values, not the view: a matrix cell must not keep its row alive.
            self.cells[view.member_state] = (view.member_state_name, c, view.working_days_left, due_day)
            if len(self.cells) > MATRIX_MAX_ROWS:
                self.cells.clear()
                self.cells_dropped = True
        if c is _OVERDUE:
            self.overdue.add(view.days_left, view)  # most overdue first
        elif c is _DUE_TODAY or c is _DUE_SOON:
            self.due.add(view.days_left, view)
        elif c is _BLOCKED:
            self.blocked.add(0, view)
        if view.last_classification != value:
            self.transitions.setdefault(value, []).append(view.status_id)
            newly = self.newly.get(value)
            if newly is None:
                newly = self.newly[value] = _Bounded(ATTENTION_LIMIT)
            newly.add(0, view)
        if value in _ACTIONABLE_VALUES:
            window = _window(due_day, view.today, view.reminder_days, view.overdue_every_days, view.calendar)
            # A window already delivered (the row's hint) is not planned again; the reminder log
            # decides for every other one.
            if window is not None:
                if window != view.last_reminder:
                    self.reminders.append(PlannedReminder(view, view.recipient, window))
                else:
                    self.already_sent += 1
            if (c is _OVERDUE and -view.working_days_left > ESCALATE_AFTER_WORKING_DAYS
                    and view.last_escalation != ESCALATION_OVERDUE):
                self.escalations.append(PlannedReminder(view, "coordinators", ESCALATION_OVERDUE))
        if value not in _SETTLED_VALUES:
            flag = _holiday_flag(view.calendar, due_day, view.opens_day)
            if flag:
                self.holiday_flags.add(0, (view, flag))
        if self.statuses is not None:
            self.statuses.append(view)

    @property
    def done(self) -> int:
        """Rows done or waived."""
        return self.counts[Classification.done.value] + self.counts[Classification.waived.value]


def holiday_flag(view: StatusView) -> str | None:
    """Say why a public holiday of the owner's country weighs on this row, or None.

    Two cases: the deadline falls within 2 working days after a public holiday; a window
    (e.g. "June 2024") contains public holidays (Eid al-Adha 2024 in the June window).
    """
    return _holiday_flag(view.calendar, view.due_day, view.opens_day)


@lru_cache(maxsize=65_536)
def _holiday_flag(calendar, due_day: dt.date, opens_day: dt.date | None) -> str | None:
    near = holiday_before(calendar, due_day, 2)
    if near:
        return f"deadline {due_day} is within 2 working days after {near[1]} ({near[0]})"
    if opens_day:
        inside = calendar.holidays_between(opens_day, due_day)
        if inside:
            names = sorted({name for _, name in inside})
            return f"window {opens_day} to {due_day} contains {len(inside)} public holiday days: " + ", ".join(names)
    return None


@lru_cache(maxsize=65_536)
def _window(due_day, today, reminder_days, overdue_every_days, calendar) -> str | None:
    # Rows of one milestone share a handful of (due day, today, calendar) combinations.
    return current_window(
        due_day=due_day, today=today, reminder_days=reminder_days,
        overdue_every_days=overdue_every_days, calendar=calendar,
    )


def tally(roadmap: str, milestone: str, views: Iterable[StatusView], keep_statuses: bool = False) -> MilestoneTally:
    """Tally every view of one milestone (see :class:`MilestoneTally`)."""
    result = MilestoneTally(roadmap, milestone, statuses=[] if keep_statuses else None)
    for view in views:
        result.add(view)
    return result


def status_json(view: StatusView) -> dict:
    """One row of ``roadmap check --json``: deadline in the owner's zone, ISO-8601 with offset."""
    return {
        "roadmap": view.roadmap,
        "milestone": view.milestone,
        "member_state": view.member_state,
        "state": view.classification.value,
        "deadline": view.deadline_local.isoformat(),
        "days_left": view.days_left,
    }


def as_of_text(moment: dt.datetime) -> str:
    """ISO-8601 text of an aware instant."""
    return moment.isoformat()
