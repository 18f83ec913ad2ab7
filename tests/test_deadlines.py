"""Deadline rules, as people write them, resolved with pendulum in the owner's zone."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from models.deadlines import (
    DeadlineRuleError,
    LocalDates,
    RelativeRule,
    end_of_local_day,
    parse_instant,
    parse_rule,
)
from models.status import Classification, classify

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("2024-03-17", LocalDates(dt.date(2024, 3, 17))),
        ("mid-April 2024", LocalDates(dt.date(2024, 4, 15))),
        ("end of May 2024", LocalDates(dt.date(2024, 5, 31))),
        ("end of February 2024", LocalDates(dt.date(2024, 2, 29))),
        ("June 2024", LocalDates(dt.date(2024, 6, 30), opens=dt.date(2024, 6, 1))),
        ("Sept 2024", LocalDates(dt.date(2024, 9, 30), opens=dt.date(2024, 9, 1))),
        ("conference.start - 14 days", RelativeRule("conference", "start", -14)),
        ("invitations + 10 days", RelativeRule("invitations", "end", 10)),
        ("travel + 2 weeks", RelativeRule("travel", "end", 14)),
    ],
)
def test_rules_parse(rule, expected):
    assert parse_rule(rule) == expected


@pytest.mark.parametrize("rule", ["2024-02-30", "2024-13-01", "end of Smarch 2024", "in two weeks", "mid-April"])
def test_bad_rules_say_why(rule):
    with pytest.raises(DeadlineRuleError) as info:
        parse_rule(rule)
    assert repr(rule) in str(info.value) or repr(rule.split()[-2]) in str(info.value)


def test_end_of_may_in_riyadh_is_a_local_day_end():
    deadline = end_of_local_day(parse_rule("end of May 2024").due, "Asia/Riyadh")
    assert deadline.isoformat() == "2024-05-31T23:59:59+03:00"


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (dt.datetime(2024, 5, 31, 21, 0, tzinfo=UTC), Classification.overdue),
        (dt.datetime(2024, 5, 31, 20, 0, tzinfo=UTC), Classification.due_today),
        (dt.datetime(2024, 5, 30, 20, 0, tzinfo=UTC), Classification.due_soon),
        (dt.datetime(2024, 5, 16, 20, 0, tzinfo=UTC), Classification.upcoming),
        (dt.datetime(2024, 5, 17, 20, 0, tzinfo=UTC), Classification.due_soon),
    ],
)
def test_riyadh_owner_classification_follows_the_local_day(as_of, expected):
    deadline = end_of_local_day(dt.date(2024, 5, 31), "Asia/Riyadh")
    got = classify(
        recorded_state="pending",
        deadline=deadline,
        owner_timezone="Asia/Riyadh",
        as_of=as_of,
        blocked_by=(),
        first_reminder_days=14,
    )
    assert got is expected


def test_recorded_and_blocked_states_win_over_dates():
    deadline = end_of_local_day(dt.date(2024, 5, 31), "Europe/Zurich")
    late = dt.datetime(2024, 7, 1, tzinfo=UTC)
    kwargs = dict(deadline=deadline, owner_timezone="Europe/Zurich", as_of=late, first_reminder_days=14)
    assert classify(recorded_state="done", blocked_by=("x",), **kwargs) is Classification.done
    assert classify(recorded_state="waived", blocked_by=(), **kwargs) is Classification.waived
    assert classify(recorded_state="in_progress", blocked_by=("invitations",), **kwargs) is Classification.blocked


def test_parse_instant_is_strict_iso():
    assert parse_instant("2024-06-05T09:00:00+02:00").in_tz("UTC").isoformat() == "2024-06-05T07:00:00+00:00"
    assert parse_instant("2024-06-05T09:00", "Asia/Riyadh").isoformat() == "2024-06-05T09:00:00+03:00"
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_instant("2024-06-05T09:00")
    with pytest.raises(ValueError, match="not an ISO-8601"):
        parse_instant("5 June 2024")
    with pytest.raises(ValueError) as bare:
        parse_instant("2024-05-27")
    assert str(bare.value) == ("timestamp '2024-05-27' has no UTC offset: add one, "
                               "e.g. 2024-05-27T09:00:00+02:00 or 2024-05-27T09:00:00Z")
    assert parse_instant("2024-05-27T09:00:00+02:00").isoformat() == "2024-05-27T09:00:00+02:00"  # the hint parses


@pytest.mark.parametrize("text", ["9999-12-31T00:00Z", "0001-01-01T12:00Z", "1899-12-31T23:59:59Z", "3000-01-01T00:00Z",
                                  "0001-01-01T00:00:00+01:00"])
def test_parse_instant_refuses_instants_outside_the_roadmap_years(text):
    """Found by a bad-input review: --as-of 9999-12-31 crashed the check (OverflowError) and the
    timeline (matplotlib's year range). The bounds are those of roadmap dates."""
    with pytest.raises(ValueError) as info:
        parse_instant(text)
    assert str(info.value) == f"timestamp {text!r} is out of range: instants must fall between 1900-01-01 and 2999-12-31"


def test_parse_instant_takes_the_first_and_last_roadmap_days():
    assert parse_instant("1900-01-01T00:00Z").isoformat() == "1900-01-01T00:00:00+00:00"
    assert parse_instant("2999-12-31T23:59:59Z").isoformat() == "2999-12-31T23:59:59+00:00"


def test_pendulum_day_arithmetic_keeps_wall_clock_across_dst():
    spring = pendulum.datetime(2024, 3, 30, 9, tz="Europe/Zurich").add(days=1)
    autumn = pendulum.datetime(2024, 10, 26, 9, tz="Europe/Zurich").add(days=1)
    assert spring.isoformat() == "2024-03-31T09:00:00+02:00"
    assert autumn.isoformat() == "2024-10-27T09:00:00+01:00"
