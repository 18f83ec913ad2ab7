"""Working calendars per office: weekends and public holidays from the ``holidays`` package.

Each member state's country office keeps its country's weekend and public holidays (Islamic
holidays included: Eid al-Fitr, Eid al-Adha, Islamic New Year, the Prophet's Birthday, as the
library lists them, some marked "(estimated)"). Permanent missions in Geneva keep Swiss working
days with the canton of Geneva's holidays. The roadmap file may override a weekend, with a
source note, where the library's value is doubtful.

Dates here are *local calendar dates* (``datetime.date``) of the office concerned; turning an
instant into such a date is the caller's job (``pendulum.instance(t).in_tz(zone).date()``).
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache

import holidays
import pendulum

#: Country and subdivision of the permanent missions' calendar (Geneva, Switzerland).
GENEVA = ("CH", "GE")
#: Longest run of non-working days searched before giving up (a misconfigured 7-day weekend).
_MAX_SEARCH_DAYS = 60


class CalendarError(ValueError):
    """A calendar with no working day within reach (e.g. a weekend of all seven days)."""


@dataclass(frozen=True)
class WorkingCalendar:
    """The working days of one office.

    Attributes:
        country: ISO 3166-1 alpha-2 code of the holidays that apply.
        subdivision: ``holidays`` subdivision code ("GE" for the canton of Geneva), or None.
        weekend: weekday numbers (Monday = 0) that are not worked.
        weekend_source: "holidays library" or the roadmap file's note for an override.
    """

    country: str
    subdivision: str | None = None
    weekend: frozenset[int] = field(default_factory=frozenset)
    weekend_source: str = "holidays library"
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        # Calendars key many caches (working days, windows): hash once, not per lookup.
        object.__setattr__(self, "_hash", hash((self.country, self.subdivision, self.weekend, self.weekend_source)))

    def __hash__(self) -> int:
        return self._hash

    def holiday_name(self, day: dt.date) -> str | None:
        """Return the public holiday's name on ``day`` (the library's text), or None."""
        return _holidays(self.country, self.subdivision, day.year).get(day)

    def is_working_day(self, day: dt.date) -> bool:
        """True when ``day`` is neither a weekend day nor a public holiday."""
        return day.weekday() not in self.weekend and self.holiday_name(day) is None

    def _step(self, day: dt.date, days: int) -> dt.date:
        for _ in range(_MAX_SEARCH_DAYS):
            day = shift_days(day, days)
            if self.is_working_day(day):
                return day
        raise CalendarError(f"no working day within {_MAX_SEARCH_DAYS} days of {day} for {self.country}")

    def next_working_day(self, day: dt.date) -> dt.date:
        """Return the first working day strictly after ``day``."""
        return self._step(day, 1)

    def previous_working_day(self, day: dt.date) -> dt.date:
        """Return the last working day strictly before ``day``."""
        return self._step(day, -1)

    def on_or_before(self, day: dt.date) -> dt.date:
        """Return ``day`` if it is a working day, else the previous working day."""
        return day if self.is_working_day(day) else self.previous_working_day(day)

    def on_or_after(self, day: dt.date) -> dt.date:
        """Return ``day`` if it is a working day, else the next working day."""
        return day if self.is_working_day(day) else self.next_working_day(day)

    def working_days_between(self, start: dt.date, end: dt.date) -> int:
        """Count working days in ``(start, end]``; negative (counting ``(end, start]``) when end < start.

        "Working days left" from today to a deadline day: today itself is not counted, the
        deadline day is (if it is a working day).
        """
        sign = 1
        if end < start:
            start, end, sign = end, start, -1
        low, high = start.toordinal(), end.toordinal()
        count = 0
        for year in range(start.year, end.year + 1):
            days = _working_ordinals(self, year)
            count += bisect.bisect_right(days, high) - bisect.bisect_right(days, low)
        return sign * count

    def holidays_between(self, start: dt.date, end: dt.date) -> list[tuple[dt.date, str]]:
        """Public holidays in ``[start, end]`` as (date, name), in date order."""
        found: list[tuple[dt.date, str]] = []
        for year in range(start.year, end.year + 1):
            days, names = _sorted_holidays(self.country, self.subdivision, year)
            low, high = bisect.bisect_left(days, start), bisect.bisect_right(days, end)
            found += zip(days[low:high], names[low:high])
        return found


def plain_date(day: dt.date) -> dt.date:
    """Return ``day`` as a plain ``datetime.date`` (pendulum's dates subclass it)."""
    return dt.date(day.year, day.month, day.day)


# A night asks for the same few thousand (day, offset) pairs hundreds of thousands of times
# (reminder windows, holiday look-backs): pendulum's arithmetic costs 3 us a call, a hit 0.1 us.
@lru_cache(maxsize=16384)
def shift_days(day: dt.date, days: int) -> dt.date:
    """Return the plain ``datetime.date`` ``days`` calendar days after ``day`` (before, if
    negative), computed by pendulum. Calendar days: no time zone, no working-day rule."""
    return plain_date(pendulum.date(day.year, day.month, day.day).add(days=days))


@lru_cache(maxsize=2048)
def _working_ordinals(calendar: WorkingCalendar, year: int) -> list[int]:
    """Proleptic ordinals of ``calendar``'s working days in ``year``, ascending: counting working
    days between two dates is then two binary searches per year, not a walk over every day."""
    first, last = dt.date(year, 1, 1).toordinal(), dt.date(year, 12, 31).toordinal()
    holiday = {day.toordinal() for day in _holidays(calendar.country, calendar.subdivision, year)}
    # Ordinal 1 (0001-01-01) is a Monday, so (ordinal - 1) % 7 is the weekday, Monday = 0.
    return [o for o in range(first, last + 1) if (o - 1) % 7 not in calendar.weekend and o not in holiday]


@lru_cache(maxsize=2048)
def _sorted_holidays(country: str, subdivision: str | None, year: int) -> tuple[list[dt.date], list[str]]:
    """The year's public holidays in date order: (dates, names), for binary search."""
    ordered = sorted(_holidays(country, subdivision, year).items())
    return [day for day, _ in ordered], [name for _, name in ordered]


@lru_cache(maxsize=512)
def _holidays(country: str, subdivision: str | None, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision, years=year)


@lru_cache(maxsize=512)
def library_weekend(country: str, subdivision: str | None = None) -> frozenset[int]:
    """Return the ``holidays`` library's weekend for ``country`` (weekday numbers, Monday = 0)."""
    return frozenset(holidays.country_holidays(country, subdiv=subdivision).weekend)


def calendar_for(
    country: str,
    subdivision: str | None = None,
    weekend_override: list[int] | None = None,
    weekend_source: str = "",
) -> WorkingCalendar:
    """Return the working calendar of an office in ``country``.

    Args:
        country: ISO 3166-1 alpha-2 code; the ``holidays`` package must support it.
        subdivision: a ``holidays`` subdivision code, or None.
        weekend_override: weekday numbers (Mon = 0) from the roadmap file, or None for the library's.
        weekend_source: where the override comes from.

    Raises:
        NotImplementedError: the ``holidays`` package has no calendar for ``country``.
    """
    weekend = tuple(weekend_override) if weekend_override is not None else None
    return _calendar(country, subdivision, weekend, weekend_source if weekend is not None else "")


@lru_cache(maxsize=4096)
def _calendar(country: str, subdivision: str | None, weekend: tuple[int, ...] | None, weekend_source: str) -> WorkingCalendar:
    # One object per distinct calendar: the caches keyed by calendars then match by identity.
    if weekend is not None:
        return WorkingCalendar(country, subdivision, frozenset(weekend), weekend_source or "roadmap file")
    return WorkingCalendar(country, subdivision, library_weekend(country, subdivision))


def mission_calendar() -> WorkingCalendar:
    """Return the calendar of the permanent missions in Geneva (Swiss weekend, Geneva holidays)."""
    return calendar_for(*GENEVA)


@lru_cache(maxsize=4096)
def holiday_before(calendar: WorkingCalendar, due_day: dt.date, within_working_days: int = 2) -> tuple[dt.date, str] | None:
    """Return the public holiday (date, name) that ends at most ``within_working_days`` working
    days before ``due_day`` (or falls on it), or None: a deadline that follows a holiday this
    closely leaves the office little time (the issue's Eid al-Adha 2024 case).
    """
    start = shift_days(due_day, -31)
    found = calendar.holidays_between(start, due_day)
    if not found:
        return None
    day, name = found[-1]
    return (day, name) if calendar.working_days_between(day, due_day) <= within_working_days else None
