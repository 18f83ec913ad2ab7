"""The seed roadmap loads with the seed's facts; bad files fail with file, field path and value, changing nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, select

from models.roadmap_file import RoadmapFileError, load_roadmap_file
from models.sync import sync_roadmap_file
from models.tables import AgendaSession, MemberState, Milestone, Status
from tests.conftest import SEED_ROADMAP

SEED_CODES = ["AE", "BH", "DJ", "DZ", "IQ", "JO", "KW", "LB", "LY", "MR", "QA", "SA", "SD", "SO", "TN", "YE"]


def test_seed_roadmap_holds_the_seed_facts():
    spec = load_roadmap_file(SEED_ROADMAP)
    assert spec.slug == "gcm-arab-2024"
    assert spec.coordinator.email == "gcmrrarabstates@iom.int"  # the last slide's mailbox
    assert sorted(m.code for m in spec.member_states) == SEED_CODES
    assert all(m.mission.timezone == "Europe/Zurich" for m in spec.member_states)
    assert [m.key for m in spec.milestones] == [
        "orientation-briefing", "save-the-date", "invitations", "nominations", "travel", "conference",
    ]
    due = {key: (d.opens, d.due) for key, d in spec.due.items()}
    assert due == {
        "orientation-briefing": (None, dt.date(2024, 3, 17)),
        "save-the-date": (None, dt.date(2024, 4, 15)),
        "invitations": (None, dt.date(2024, 5, 31)),
        "nominations": (dt.date(2024, 6, 1), dt.date(2024, 6, 30)),
        "travel": (dt.date(2024, 6, 1), dt.date(2024, 6, 30)),
        "conference": (dt.date(2024, 7, 2), dt.date(2024, 7, 4)),
    }
    agenda = [(a.date, a.start.strftime("%H:%M"), a.end.strftime("%H:%M")) for a in spec.agenda]
    assert len(agenda) == 11
    assert agenda[0] == (dt.date(2024, 7, 3), "09:00", "09:45")
    assert agenda[5] == (dt.date(2024, 7, 4), "09:00", "10:30")
    assert agenda[-1] == (dt.date(2024, 7, 4), "16:50", "17:00")


def _mutated(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _milestone(data, key):
    return next(m for m in data["milestones"] if m["key"] == key)


BAD_FILES = {
    "unknown dependency": (
        lambda d: _milestone(d, "travel")["depends_on"].append("visas"),
        "milestones[4].depends_on[1]", "'visas'", "unknown milestone",
    ),
    "dependency cycle": (
        lambda d: _milestone(d, "invitations").update(depends_on=["travel"]),
        "milestones[", "", "dependency cycle: invitations -> travel -> nominations -> invitations",
    ),
    "impossible date": (
        lambda d: _milestone(d, "orientation-briefing").update(deadline="2024-02-30"),
        "milestones[0].deadline", "'2024-02-30'", "impossible date",
    ),
    "unknown time zone": (
        lambda d: d["member_states"][4]["mission"].update(timezone="Europe/Geneva"),
        "member_states[4].mission.timezone", "'Europe/Geneva'", "Europe/Zurich",
    ),
    "unknown country code": (
        lambda d: d["member_states"][0].update(code="XX"),
        "member_states[0].code", "'XX'", "unknown ISO 3166-1 alpha-2",
    ),
    "duplicate milestone key": (
        lambda d: d["milestones"].append(dict(d["milestones"][2])),
        "milestones[6].key", "'invitations'", "duplicate milestone key",
    ),
    # Found by a bad-input review: YAML's yes is true, which pydantic read as 1 day.
    "a yes for a number of days": (
        lambda d: d["reminders"].update(overdue_every_days=True),
        "reminders.overdue_every_days", "True", "valid integer",
    ),
    "a yes among the days before": (
        lambda d: _milestone(d, "conference")["reminders"].update(before_days=[14, True]),
        "milestones[5].reminders.before_days[1]", "True", "valid integer",
    ),
    # Found by a bad-input review: a milestone could be due before one it depends on.
    "due before its dependency": (
        lambda d: _milestone(d, "nominations").update(deadline="mid-May 2024", opens=None),
        "milestones[3].deadline", "'mid-May 2024'",
        "due on 2024-05-15, before 'invitations' (due on 2024-05-31), which it depends on",
    ),
    # Found by a bad-input review: the check above compared the dates as written, before
    # non_working_day moved them to each party's working day.
    "due before its dependency on an office's working day": (
        lambda d: _milestone(d, "travel").update(non_working_day="previous_working_day"),
        "milestones[4].deadline", "'June 2024'",
        "due for LB on 2024-06-28 (moved to the previous working day), before 'nominations' on 2024-06-30, "
        "which it depends on",
    ),
    "a deadline moved past the last date": (
        lambda d: (_milestone(d, "travel").update(deadline="2999-12-31", non_working_day="next_working_day"),
                   d["member_states"][7]["weekend"].update(days=["Tue", "Wed"])),
        "milestones[4].deadline", "'2999-12-31'",
        "due for LY on 3000-01-02 (moved to the next working day): dates must fall between 1900-01-01 and 2999-12-31",
    ),
    # Found by a review of the digests' greetings: a name with line breaks became lines of the
    # digest, and a right-to-left override reordered the Arabic greeting.
    "a mission's name over several lines": (
        lambda d: d["member_states"][5]["mission"].update(name="Permanent Mission\nBcc: someone@example.org"),
        "member_states[5].mission.name", "'Permanent Mission\\nBcc: someone@example.org'",
        "holds a line break (U+000A): a name or title is one line of plain text",
    ),
    "an Arabic name with a right-to-left override": (
        lambda d: d["member_states"][5].update(name_ar="الأردن\u202eevil"),
        "member_states[5].name_ar", "'الأردن\\u202eevil'",
        "holds a right-to-left override (U+202E): a name or title is one line of plain text",
    ),
    "a milestone title with a tab": (
        lambda d: _milestone(d, "travel").update(title="Travel\tarrangements"),
        "milestones[4].title", "'Travel\\tarrangements'", "holds a tab (U+0009)",
    ),
    # Found by a mutation review: no test failed with either check below removed or loosened.
    "a window opening after its deadline": (
        lambda d: _milestone(d, "conference").update(opens="2024-07-10"),
        "milestones[5].opens", "2024-07-10", "opens after its deadline 2024-07-04",
    ),
    "an agenda session ending as it starts": (
        lambda d: d["agenda"][0].update(end="09:00"),
        "agenda[0]", "", "session ends at 09:00:00 before it starts at 09:00:00",
    ),
    # The coordinators' mailbox is one plain address: the digests print it and link it (mailto:).
    "a mailbox with a display name": (
        lambda d: d["coordinator"].update(email="GCM review <gcmrrarabstates@iom.int>"),
        "coordinator.email", "'GCM review <gcmrrarabstates@iom.int>'", "is not one e-mail address",
    ),
    "two mailboxes": (
        lambda d: d["coordinator"].update(email="gcmrrarabstates@iom.int, mena@iom.int"),
        "coordinator.email", "'gcmrrarabstates@iom.int, mena@iom.int'", "is not one e-mail address",
    ),
    "a mailbox whose domain has no dot": (
        lambda d: d["coordinator"].update(email="gcmrrarabstates@iom"),
        "coordinator.email", "'gcmrrarabstates@iom'", "is not one plain e-mail address such as name@example.org",
    ),
    "a mailbox with no domain": (
        lambda d: d["coordinator"].update(email="gcmrrarabstates@"),
        "coordinator.email", "'gcmrrarabstates@'", "is not one e-mail address (no domain)",
    ),
    # Found by a review of this change: valid addresses that a mailto: link reads otherwise.
    "a mailbox with a query": (
        lambda d: d["coordinator"].update(email="reports?subject=x@iom.int"),
        "coordinator.email", "'reports?subject=x@iom.int'", "is not one plain e-mail address",
    ),
    "a mailbox at an address, not a host name": (
        lambda d: d["coordinator"].update(email="gcm@[192.0.2.1]"),
        "coordinator.email", "'gcm@[192.0.2.1]'", "is not one plain e-mail address",
    ),
    "a mailbox whose domain starts with a hyphen": (
        lambda d: d["coordinator"].update(email="gcm@-iom.int"),
        "coordinator.email", "'gcm@-iom.int'", "is not one plain e-mail address",
    ),
    "a quoted mailbox": (
        lambda d: d["coordinator"].update(email='"gcm review"@iom.int'),
        "coordinator.email", "'\"gcm review\"@iom.int'", "is not one plain e-mail address",
    ),
    # Weekday names were checked on their first three letters only.
    "a weekday that only starts like one": (
        lambda d: d["member_states"][7]["weekend"].update(days=["Friyay", "Sat"]),
        "member_states[7].weekend.days", "['Friyay', 'Sat']", "unknown weekday 'Friyay'",
    ),
}


def _snapshot(url: str) -> list:
    from models.db import get_engine

    with Session(get_engine(url)) as session:
        return [
            sorted((s.milestone_id, s.member_state_code, s.state, s.deadline, s.note) for s in session.exec(select(Status))),
            sorted((m.key, m.due_date, m.deadline_rule) for m in session.exec(select(Milestone))),
            sorted((m.code, m.timezone, m.mission_timezone) for m in session.exec(select(MemberState))),
            sorted((a.starts_at, a.title) for a in session.exec(select(AgendaSession))),
        ]


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_roadmap_file_names_file_field_value_and_changes_nothing(case, tmp_path, seeded):
    change, field, value, reason = BAD_FILES[case]
    path = _mutated(tmp_path, change)
    before = _snapshot(seeded)
    with pytest.raises(RoadmapFileError) as info:
        sync_roadmap_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}")
    assert value in message
    assert reason in message
    assert _snapshot(seeded) == before


@pytest.mark.parametrize(("written", "expected"), [
    ("deadline: 2024-07-04", "milestones[5].deadline: impossible date '2024-06-31': day is out of range for month "
                             "(value: '2024-06-31')"),
    ('date: 2024-07-03, start: "09:00"', "agenda[0].date: Input should be a valid date or datetime, day value is "
                                         "outside expected range (value: '2024-06-31')"),
])
def test_an_impossible_date_written_without_quotes_names_its_field(tmp_path, written, expected):
    """Found by a review of roadmap changes: unquoted, YAML itself read the date and its error
    named a line and column, not the field, as a quoted date's does."""
    path = tmp_path / "unquoted.yaml"
    text = SEED_ROADMAP.read_text(encoding="utf-8")
    assert text.count(written) == 1
    path.write_text(text.replace(written, written.replace(written.split()[1].rstrip(","), "2024-06-31")),
                    encoding="utf-8")
    with pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    assert str(info.value) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("", "", "a roadmap file is a mapping"),
        ("slug: [unclosed", "line 1", "invalid YAML"),
        ("a: &x [1]\nb: *x\n", "line 2", "aliases"),
        ("slug: x\ncolour: red\n", "colour", "Extra inputs are not permitted"),
        # Found by a bad-input review: YAML 1.1 read 010 as 8 days.
        ("reminders:\n  before_days: [14, 010]\n", "line 2, column 21",
         "invalid YAML: write the number '010' in plain decimal digits (YAML 1.1 reads a leading 0 as octal"),
        ("reminders:\n  overdue_every_days: 0x3\n", "line 2, column 23", "write the number '0x3' in plain decimal"),
        # A time left unquoted: YAML 1.1 reads it as a number (the agenda said so before the rule above).
        ("agenda:\n  - {date: 2024-07-03, start: 10:00, end: '11:00', title: x}\n", "line 2, column 31",
         "invalid YAML: YAML 1.1 reads '10:00' as a number (minutes and seconds); write a time or text in quotes "
         "('10:00'), a number in decimal digits"),
    ],
)
def test_unreadable_files_fail_clearly(tmp_path, text, field, reason):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    assert str(info.value).startswith(f"{path}: {field}")
    assert reason in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read file: No such file or directory"  # no "(value: None)"
    assert info.value.value is None


def test_a_yaml_syntax_error_names_its_line_and_no_value(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("slug: [unclosed", encoding="utf-8")
    with pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    assert str(info.value).startswith(f"{path}: line 1, column ")
    assert not str(info.value).endswith("(value: None)")


@pytest.mark.parametrize(("text", "where", "key", "first"), [
    ("slug: a\ntitle: x\nslug: b\n", "line 3, column 1", "slug", 1),
    ("milestones:\n  - key: m\n    deadline: 2024-05-31\n    deadline: end of May 2025\n", "line 4, column 5", "deadline", 3),
    ("member_states: [{code: JO, code: LB}]\n", "line 1, column 28", "code", 1),
])
def test_a_key_given_twice_is_refused_where_it_repeats(tmp_path, text, where, key, first):
    """Found by a bad-input review: PyYAML kept the last of two keys silently (a second slug made
    a second roadmap; a second deadline replaced the first)."""
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    assert str(info.value) == f"{path}: {where}: invalid YAML: key {key!r} given twice (first on line {first})"


def test_weekdays_may_be_written_in_full_or_abbreviated(tmp_path):
    def full_names(data):
        data["member_states"][7]["weekend"]["days"] = ["friday", "SATURDAY"]  # LY
        data["member_states"][8]["weekend"]["days"] = ["Sat", "sun"]  # MR

    spec = load_roadmap_file(_mutated(tmp_path, full_names))
    assert [(m.code, m.weekend.numbers()) for m in spec.member_states if m.weekend] == [
        ("LY", [4, 5]), ("MR", [5, 6]), ("SO", [3, 4])]


def test_a_null_value_is_still_shown():
    assert str(RoadmapFileError("r.yaml", "milestones[0].deadline", None, "a date is required")) == (
        "r.yaml: milestones[0].deadline: a date is required (value: None)")


def test_a_deadline_relative_to_a_windows_start_counts_from_its_opening(tmp_path):
    """Found by a mutation review: no test failed when ``conference.start - 14 days`` counted
    from the conference's deadline (4 July) instead of its opening (2 July)."""
    path = _mutated(tmp_path, lambda d: d["milestones"].append({
        "key": "speakers", "title": "Speakers confirmed", "title_ar": "تأكيد المتحدثين", "owner": "coordinator",
        "deadline": "conference.start - 14 days"}))
    spec = load_roadmap_file(path)
    assert (spec.due["speakers"].opens, spec.due["speakers"].due) == (None, dt.date(2024, 6, 18))
