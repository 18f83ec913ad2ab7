"""Working calendars per office (the `holidays` package), reminder days, DST-safe arithmetic, Hijri dates."""

from __future__ import annotations

import datetime as dt

import pytest

from models.calendars import calendar_for, holiday_before, library_weekend, mission_calendar
from models.deadlines import end_of_month
from models.reminders import current_window, delivery_day
from models.roadmap_file import load_roadmap_file
from notifications.digest import hijri_date
from tests.conftest import SEED_ROADMAP

D = dt.date


def test_next_working_day_differs_between_riyadh_and_geneva():
    assert calendar_for("SA").next_working_day(D(2024, 5, 30)) == D(2024, 6, 2)  # Thu -> Sun
    assert mission_calendar().next_working_day(D(2024, 5, 30)) == D(2024, 5, 31)  # Thu -> Fri


def test_weekends_come_from_the_library_and_the_file_overrides_doubtful_ones():
    assert library_weekend("JO") == {4, 5}  # Friday-Saturday
    assert library_weekend("TN") == {5, 6}  # Saturday-Sunday
    assert library_weekend("AE") == {5, 6}  # Saturday-Sunday since 2022
    overrides = {m.code: (m.weekend.numbers(), m.weekend.source) for m in load_roadmap_file(SEED_ROADMAP).member_states if m.weekend}
    assert {code: days for code, (days, _) in overrides.items()} == {"LY": [4, 5], "MR": [5, 6], "SO": [3, 4]}
    assert all("holidays library" in source or "Conflicting" in source for _, source in overrides.values())


def test_reminder_on_a_weekend_goes_out_the_working_day_before():
    friday = D(2024, 5, 24)
    assert delivery_day(calendar_for("JO"), friday) == D(2024, 5, 23)
    assert delivery_day(calendar_for("TN"), friday) == friday


def test_current_window_for_jordan_office_moves_to_thursday():
    # Deadline Friday 7 June 2024: the 14-day reminder (Fri 24 May) goes out on Thu 23 May in Jordan.
    kwargs = dict(due_day=D(2024, 6, 7), reminder_days=(14, 7, 3, 1, 0), overdue_every_days=3)
    jordan, tunisia = calendar_for("JO"), calendar_for("TN")
    assert current_window(today=D(2024, 5, 22), calendar=jordan, **kwargs) is None
    assert current_window(today=D(2024, 5, 23), calendar=jordan, **kwargs) == "before-14"
    assert current_window(today=D(2024, 5, 23), calendar=tunisia, **kwargs) is None
    assert current_window(today=D(2024, 5, 24), calendar=tunisia, **kwargs) == "before-14"
    # Nothing is delivered on a rest day of the recipient.
    assert current_window(today=D(2024, 5, 25), calendar=jordan, **kwargs) is None
    # The deadline day itself is a Friday: Jordan hears "due" on Thursday 6 June.
    assert current_window(today=D(2024, 6, 6), calendar=jordan, **kwargs) == "due"


def test_a_deadline_two_working_days_after_eid_is_flagged_and_three_is_not():
    """Found by a mutation review (this replaces a second copy of tests/test_deadlines.py's
    pendulum test): no test failed when the flag's "within 2 working days" became "within 1".
    Riyadh: Eid al-Adha holidays end on Wednesday 19 June 2024; Thursday 20 and Sunday 23 are
    worked (Friday-Saturday weekend)."""
    saudi = calendar_for("SA")
    assert holiday_before(saudi, D(2024, 6, 23)) == (D(2024, 6, 19), "Eid al-Adha Holiday (observed)")
    assert holiday_before(saudi, D(2024, 6, 24)) is None


def test_end_of_month_rolled_monthly_never_chains_additions():
    assert [end_of_month(D(2024, 1, 31), months) for months in range(4)] == [
        D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31), D(2024, 4, 30),
    ]


def test_working_days_left_across_eid_al_adha_excludes_the_library_eid_days():
    saudi = calendar_for("SA")
    start, end = D(2024, 6, 13), D(2024, 6, 20)  # Thursday to Thursday
    listed = [day for day, name in saudi.holidays_between(start, end)]
    assert listed == [D(2024, 6, 15), D(2024, 6, 16), D(2024, 6, 17), D(2024, 6, 18), D(2024, 6, 19)]
    # (13, 20]: Fri 14 and Sat 15 weekend, Sun 16 - Wed 19 Eid holidays: only Thu 20 is worked.
    assert saudi.working_days_between(start, end) == 1
    assert saudi.working_days_between(end, start) == -1
    # Tunisia: Fri 14, Wed 19 and Thu 20 are worked (weekend Sat-Sun, Eid holidays 15-18 June).
    assert calendar_for("TN").working_days_between(start, end) == 3


def test_hijri_date_in_umm_al_qura():
    assert hijri_date(D(2024, 5, 31)) == "23 ذي القعدة 1445"
    assert hijri_date(D(2024, 5, 31), "en") == "23 Dhu al-Qa'dah 1445"


@pytest.mark.parametrize("country, subdivision, weekend", [("SA", None, None), ("CH", "GE", None), ("LY", None, [4, 5]), ("MR", None, [5, 6])])
def test_working_day_counts_agree_with_walking_the_calendar_day_by_day(country, subdivision, weekend):
    """working_days_between counts from cached per-year tables (binary search); walking every day
    with is_working_day, as pendulum enumerates them, must give the same counts."""
    import pendulum

    from models.calendars import calendar_for

    calendar = calendar_for(country, subdivision, weekend)
    start = dt.date(2023, 12, 20)
    for days in (0, 1, 6, 45, 400):
        end = start + dt.timedelta(days=days)
        walked = sum(
            1 for day in pendulum.interval(pendulum.date(2023, 12, 20), pendulum.date(end.year, end.month, end.day)).range("days")
            if day != start and calendar.is_working_day(dt.date(day.year, day.month, day.day))
        )
        assert calendar.working_days_between(start, end) == walked
        assert calendar.working_days_between(end, start) == -walked
