"""Deadline rules as people write them, resolved to local dates and instants with pendulum.

Grammar (the forms the seed roadmap uses; case-insensitive, English month names or
three-letter abbreviations):

- ``2024-03-17``: that day.
- ``mid-April 2024``: the 15th of the month.
- ``end of May 2024``: the last day of the month (computed as the month's end, never by
  chaining month additions).
- ``June 2024``: a window: opens on the 1st, due on the last day.
- ``invitations + 10 days``, ``conference.start - 14 days``, ``travel.end``: relative to another
  milestone of the same roadmap. ``KEY`` and ``KEY.end`` mean its due date, ``KEY.start`` the day
  its window opens (its due date when it has no window). Units: ``day(s)`` or ``week(s)``.

A rule resolves to a *local calendar date*; the deadline instant is that day's end
(23:59:59) in the owner's IANA zone, so "end of May 2024" for an owner in Asia/Riyadh is
2024-05-31T23:59:59+03:00. A window opens at 00:00:00 local on its first day.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

import pendulum

from models.calendars import plain_date, shift_days

#: Dates a roadmap may use (deadlines, windows, agenda) and instants a person may type (``--as-of``,
#: ``--at``): far from the ends of ``datetime.date``, so that no conversion to an owner's zone or
#: UTC, and no working-day count or timeline around them, overflows.
FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2999, 12, 31)

_MONTHS: dict[str, int] = {}
for _number in range(1, 13):
    _MONTHS[calendar.month_name[_number].lower()] = _number
    _MONTHS[calendar.month_abbr[_number].lower()] = _number
_MONTHS["sept"] = 9

_MONTH = r"(?P<month>[A-Za-z]+)\.?\s+(?P<year>\d{4})"
_ISO_DATE = re.compile(r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})$")
_MID = re.compile(rf"^mid[-\s]+{_MONTH}$", re.IGNORECASE)
_END = re.compile(rf"^end\s+of\s+{_MONTH}$", re.IGNORECASE)
_WHOLE_MONTH = re.compile(rf"^{_MONTH}$", re.IGNORECASE)
_RELATIVE = re.compile(
    r"^(?P<ref>[a-z0-9][a-z0-9_-]*)(?:\.(?P<anchor>start|end))?"
    r"(?:\s*(?P<sign>[+-])\s*(?P<amount>\d{1,4})\s*(?P<unit>days?|weeks?))?$",
    re.IGNORECASE,
)


class DeadlineRuleError(ValueError):
    """A deadline rule that does not parse or names an impossible date. The message says why."""


@dataclass(frozen=True)
class LocalDates:
    """A resolved rule: ``due`` is the local deadline day; ``opens`` the first day of a window."""

    due: dt.date
    opens: dt.date | None = None


@dataclass(frozen=True)
class RelativeRule:
    """A parsed relative rule: ``offset_days`` after (negative: before) ``ref``'s ``anchor`` day."""

    ref: str
    anchor: str  # "start" or "end"
    offset_days: int


def _month(name: str, year: str, rule: str) -> tuple[int, int]:
    number = _MONTHS.get(name.lower())
    if number is None:
        raise DeadlineRuleError(f"unknown month {name!r} in deadline rule {rule!r}")
    if int(year) < 1:
        raise DeadlineRuleError(f"impossible date {rule!r}: year {year} is out of range")
    return int(year), number


def parse_rule(rule: str) -> LocalDates | RelativeRule:
    """Parse one deadline rule.

    Args:
        rule: the text from the roadmap file.

    Returns:
        ``LocalDates`` for an absolute rule, ``RelativeRule`` for one that names a milestone.

    Raises:
        DeadlineRuleError: the text matches no form, or names an impossible date ("2024-02-30").
    """
    text = " ".join(str(rule).split())
    if match := _ISO_DATE.match(text):
        try:
            return LocalDates(due=dt.date(int(match["year"]), int(match["month"]), int(match["day"])))
        except ValueError as exc:
            raise DeadlineRuleError(f"impossible date {text!r}: {exc}") from None
    if match := _MID.match(text):
        year, month = _month(match["month"], match["year"], text)
        return LocalDates(due=dt.date(year, month, 15))
    if match := _END.match(text):
        year, month = _month(match["month"], match["year"], text)
        return LocalDates(due=end_of_month(dt.date(year, month, 1)))
    if (match := _WHOLE_MONTH.match(text)) and match["month"].lower() in _MONTHS:
        year, month = _month(match["month"], match["year"], text)
        first = pendulum.date(year, month, 1)
        return LocalDates(due=end_of_month(first), opens=plain_date(first))
    if re.match(r"^(mid\b|end\s+of\b)", text, re.IGNORECASE):
        raise DeadlineRuleError(f"cannot read deadline rule {text!r}: expected 'mid-Month YYYY' or 'end of Month YYYY'")
    if match := _RELATIVE.match(text):
        amount = int(match["amount"] or 0)
        if (match["unit"] or "").lower().startswith("week"):
            amount *= 7
        if match["sign"] == "-":
            amount = -amount
        return RelativeRule(ref=match["ref"], anchor=(match["anchor"] or "end").lower(), offset_days=amount)
    raise DeadlineRuleError(
        f"cannot read deadline rule {text!r}: expected YYYY-MM-DD, 'mid-Month YYYY', "
        "'end of Month YYYY', 'Month YYYY' or 'milestone[.start|.end] +/- N days'"
    )


def end_of_month(anchor: dt.date, months_ahead: int = 0) -> dt.date:
    """Return the last day of the month ``months_ahead`` after ``anchor``'s month.

    Computed from the first of the target month, never by chaining month additions (which
    would carry 29 February into 29 March). ``end_of_month(2024-01-31, 1)`` is 2024-02-29.
    """
    first = pendulum.date(anchor.year, anchor.month, 1).add(months=months_ahead)
    return plain_date(first.end_of("month"))


def shift(anchor: dt.date, rule: RelativeRule) -> dt.date:
    """Return ``anchor`` moved by ``rule.offset_days`` calendar days (pendulum arithmetic,
    :func:`models.calendars.shift_days`)."""
    return shift_days(anchor, rule.offset_days)


def end_of_local_day(day: dt.date, timezone: str) -> pendulum.DateTime:
    """Return 23:59:59 on ``day`` in the IANA zone ``timezone``, aware (the deadline instant).

    Raises:
        pendulum.tz.exceptions.InvalidTimezone: ``timezone`` is not an IANA zone.
    """
    return pendulum.datetime(day.year, day.month, day.day, 23, 59, 59, tz=timezone)


def start_of_local_day(day: dt.date, timezone: str) -> pendulum.DateTime:
    """Return 00:00:00 on ``day`` in the IANA zone ``timezone``, aware (a window's opening)."""
    return pendulum.datetime(day.year, day.month, day.day, tz=timezone)


def parse_instant(text: str, default_timezone: str | None = None) -> pendulum.DateTime:
    """Parse a timestamp typed by a person: ISO-8601 only (``2024-06-05T09:00:00+02:00``, ``...Z``).

    A timestamp without an offset is read in ``default_timezone`` (the owner's zone, where the
    caller knows it); with no default it is refused, because its instant would be a guess.
    A bare date (``2024-06-05``) means its start (00:00) in the same way.

    Raises:
        ValueError: not ISO-8601, no offset and no ``default_timezone``, or an instant whose UTC
            date is outside :data:`FIRST_DATE` .. :data:`LAST_DATE` (the dates a roadmap may use).
            The message quotes ``text``.
    """
    stripped = str(text).strip()
    try:
        parsed = dt.datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r} (e.g. 2024-06-05T09:00:00+02:00)") from None
    if parsed.tzinfo is None:
        if default_timezone is None:
            # A bare date parses as its midnight: the example must carry a time before the offset.
            example = stripped if "T" in stripped or " " in stripped else f"{stripped}T09:00:00"
            raise ValueError(f"timestamp {text!r} has no UTC offset: add one, e.g. {example}+02:00 or {example}Z")
        moment = pendulum.instance(parsed, tz=default_timezone)
    else:
        moment = pendulum.instance(parsed)
    try:  # years 1-9999 in UTC first: outside them there is no UTC date to compare
        utc_day = dt.datetime.fromtimestamp(moment.timestamp(), tz=dt.timezone.utc).date()
    except (OverflowError, ValueError, OSError):
        utc_day = None
    if utc_day is None or not FIRST_DATE <= utc_day <= LAST_DATE:
        raise ValueError(f"timestamp {text!r} is out of range: instants must fall between {FIRST_DATE} and {LAST_DATE}")
    return moment
