"""Calendar feeds: parsed back with icalendar, times checked as instants."""

from __future__ import annotations

import datetime as dt

from icalendar import Calendar
from sqlmodel import select
from typer.testing import CliRunner

from flows.cli import app
from flows.ics import build_calendar, write_feeds
from models.db import session_scope
from models.tables import Roadmap

UTC = dt.timezone.utc


def _events(data: bytes) -> dict[str, object]:
    return {str(c["uid"]): c for c in Calendar.from_ical(data).walk("VEVENT")}


def test_jordan_calendar_holds_deadlines_with_alarms_and_the_agenda(seeded, tmp_path):
    out = tmp_path / "jo.ics"
    result = CliRunner().invoke(app, ["calendar", "--member-state", "JO", "--out", str(out)])
    assert result.exit_code == 0, result.output
    events = _events(out.read_bytes())

    invitation = events["gcm-arab-2024.invitations.jo@roadmap-tracker"]
    start = invitation["dtstart"].dt
    # Mission-owned: the deadline is the end of 31 May in Geneva (the owner's zone), i.e. 21:59:59Z.
    assert start.astimezone(UTC) == dt.datetime(2024, 5, 31, 21, 59, 59, tzinfo=UTC)
    assert invitation["dtstart"].params["TZID"] == "Europe/Zurich"
    triggers = sorted(alarm["trigger"].dt for alarm in invitation.walk("VALARM"))
    # At 09:00 Geneva time on each reminder day: 14 h 59 min 59 s before the 23:59:59 deadline.
    assert triggers == [-dt.timedelta(days=d, hours=14, minutes=59, seconds=59) for d in (14, 7, 3, 1, 0)]
    assert [start + t for t in triggers][-2:] == [
        dt.datetime(2024, 5, 30, 9, 0, tzinfo=start.tzinfo), dt.datetime(2024, 5, 31, 9, 0, tzinfo=start.tzinfo)]
    assert b"TRIGGER:-P14DT14H59M59S" in out.read_bytes()
    title = ("Joint signed invitations with the League of Arab States to the ministers of foreign affairs, through "
             "the permanent missions (Jordan)")
    assert str(invitation["summary"]) == f"Deadline: {title}"
    # The due day in the Hijri calendar too (found by a mutation review: today's date passed).
    assert str(invitation["description"]).endswith("الموعد النهائي 2024-05-31 الموافق 23 ذي القعدة 1445 هـ")
    # The seed's orientation briefing (17 March) was held: its event says so and rings no more.
    briefing = events["gcm-arab-2024.orientation-briefing.jo@roadmap-tracker"]
    assert str(briefing["summary"]).startswith("Done: ") and list(briefing.walk("VALARM")) == []
    assert [str(alarm["description"]) for alarm in invitation.walk("VALARM")] == [
        f"{title} due in 14 days", f"{title} due in 7 days", f"{title} due in 3 days", f"{title} due in 1 day",
        f"{title} due today"]  # was "due in 1 days", "due in 0 days"

    nomination = events["gcm-arab-2024.nominations.jo@roadmap-tracker"]
    assert nomination["dtstart"].params["TZID"] == "Asia/Amman"  # office-owned: Amman time
    assert nomination["dtstart"].dt.astimezone(UTC) == dt.datetime(2024, 6, 30, 20, 59, 59, tzinfo=UTC)

    assert not any(uid.endswith(".tn@roadmap-tracker") for uid in events)  # only Jordan's deadlines
    july_4 = sorted(
        (e["dtstart"].dt, e["dtend"].dt, str(e["summary"]))
        for uid, e in events.items() if ".agenda." in uid and e["dtstart"].dt.date() == dt.date(2024, 7, 4)
    )
    assert [(s.strftime("%H:%M"), e.strftime("%H:%M")) for s, e, _ in july_4] == [
        ("09:00", "10:30"), ("10:45", "12:30"), ("14:00", "15:30"), ("15:45", "16:30"), ("16:30", "16:50"), ("16:50", "17:00"),
    ]
    # Cairo is on summer time (UTC+3) in July 2024: 09:00 local is 06:00Z.
    assert july_4[0][0].astimezone(UTC) == dt.datetime(2024, 7, 4, 6, 0, tzinfo=UTC)
    assert july_4[0][0].tzinfo.key == "Africa/Cairo"
    assert july_4[-1][2] == "Closing session"
    tzids = {str(tz["tzid"]) for tz in Calendar.from_ical(out.read_bytes()).walk("VTIMEZONE")}
    assert tzids == {"Europe/Zurich", "Asia/Amman", "Africa/Cairo"}


def test_feeds_are_written_per_member_state(seeded, tmp_path):
    with session_scope() as session:
        roadmap = session.exec(select(Roadmap)).one()
        paths = write_feeds(session, roadmap, tmp_path, dt.datetime(2024, 6, 5, tzinfo=UTC))
    assert sorted(p.name for p in paths) == sorted(["all.ics"] + [f"{c}.ics" for c in "ae bh dj dz iq jo kw lb ly mr qa sa sd so tn ye".split()])
    everything = _events((tmp_path / "gcm-arab-2024" / "all.ics").read_bytes())
    assert len(everything) == 96 + 11


def test_unknown_member_state_is_a_clear_error(seeded):
    result = CliRunner().invoke(app, ["calendar", "--member-state", "XX"])
    assert result.exit_code == 2
    assert "unknown member state 'XX'" in result.stderr
    with session_scope() as session:
        assert build_calendar(session, member_state="jo").startswith(b"BEGIN:VCALENDAR")


def test_the_feed_of_a_member_state_removed_from_the_file_is_removed(seeded, tmp_path):
    """Found by a bad-input review: ``ye.ics`` stayed beside the new feeds, with old deadlines."""
    import yaml

    from models.sync import sync_roadmap_file
    from tests.conftest import SEED_ROADMAP

    as_of = dt.datetime(2024, 6, 5, tzinfo=UTC)
    with session_scope() as session:
        write_feeds(session, session.exec(select(Roadmap)).one(), tmp_path, as_of)
    assert (tmp_path / "gcm-arab-2024" / "ye.ics").exists()
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    data["member_states"] = [m for m in data["member_states"] if m["code"] != "YE"]
    without = tmp_path / "without-ye.yaml"
    without.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    sync_roadmap_file(without)
    with session_scope() as session:
        paths = write_feeds(session, session.exec(select(Roadmap)).one(), tmp_path, as_of)
    assert len(paths) == 16  # all.ics and 15 member states
    assert sorted(p.name for p in (tmp_path / "gcm-arab-2024").glob("*.ics")) == sorted(p.name for p in paths)
    assert not (tmp_path / "gcm-arab-2024" / "ye.ics").exists()


def test_a_feed_is_written_again_when_a_status_is_recorded(seeded, tmp_path):
    """Found by the twenty-first session's reviews: a row marked done kept its alarms, and the
    feeds, written again only when the roadmap was loaded again, would have kept them too."""
    from models.status import record_status

    as_of = dt.datetime(2024, 5, 27, 6, tzinfo=UTC)

    def jordan_invitation() -> object:
        with session_scope() as session:
            write_feeds(session, session.exec(select(Roadmap)).one(), tmp_path, as_of)
        return _events((tmp_path / "gcm-arab-2024" / "jo.ics").read_bytes())["gcm-arab-2024.invitations.jo@roadmap-tracker"]

    before = jordan_invitation()
    assert str(before["summary"]).startswith("Deadline: ") and len(before.walk("VALARM")) == 5
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done", note="NV 2024/051",
                      at="2024-05-26T10:00:00+02:00")
    after = jordan_invitation()
    assert str(after["summary"]).startswith("Done: ") and after.walk("VALARM") == []
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="waived", at="2024-05-27T07:00:00+02:00")
    assert str(jordan_invitation()["summary"]).startswith("Waived: ")


def test_a_deadline_in_an_hour_the_clocks_repeat_is_written_at_its_own_instant(database_url, outbox, tmp_path):
    """Found by a code review: Cairo's summer time of 2024 ended at midnight on 31 October, so
    23:59:59 that day came twice; the deadline is the second (UTC+2), but the feed wrote the local
    time with its TZID, which RFC 5545 (3.3.5) reads as the first: an hour early."""
    import yaml

    from models.sync import sync_roadmap_file
    from tests.conftest import SEED_ROADMAP

    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    conference = next(m for m in data["milestones"] if m["key"] == "conference")  # coordinator-owned: Cairo
    conference.update(opens="2024-10-29", deadline="2024-10-31")
    moved = tmp_path / "october.yaml"
    moved.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    sync_roadmap_file(moved)
    with session_scope() as session:
        data = build_calendar(session, member_state="JO", as_of=dt.datetime(2024, 10, 1, tzinfo=UTC))
    event = _events(data)["gcm-arab-2024.conference.jo@roadmap-tracker"]
    assert event["dtstart"].dt == dt.datetime(2024, 10, 31, 21, 59, 59, tzinfo=UTC)  # 23:59:59 at UTC+2
    assert b"DTSTART:20241031T215959Z" in data
    # The alarms still ring at 09:00 Cairo time (summer time, UTC+3) on each reminder day.
    triggers = sorted(alarm["trigger"].dt for alarm in event.walk("VALARM"))
    assert [event["dtstart"].dt + t for t in triggers] == [
        dt.datetime(2024, 10, day, 6, 0, tzinfo=UTC) for day in (17, 24, 30)]
    # Any other deadline keeps its local time and TZID.
    nomination = _events(data)["gcm-arab-2024.nominations.jo@roadmap-tracker"]
    assert nomination["dtstart"].params["TZID"] == "Asia/Amman"


def test_feeds_written_the_old_way_are_written_again(seeded, tmp_path):
    """Found by a review: feeds published before a change of how they are written (the repeated
    hour's deadlines in UTC) were kept, their stamp naming only the load and the last change."""
    as_of = dt.datetime(2024, 5, 27, 6, tzinfo=UTC)
    with session_scope() as session:
        roadmap = session.exec(select(Roadmap)).one()
        write_feeds(session, roadmap, tmp_path, as_of)
        folder = tmp_path / "gcm-arab-2024"
        stamp = folder / ".loaded_at"
        assert stamp.read_text(encoding="utf-8").endswith(" format 2")
        (folder / "jo.ics").write_text("old", encoding="utf-8")
        write_feeds(session, roadmap, tmp_path, as_of)
        assert (folder / "jo.ics").read_text(encoding="utf-8") == "old"  # nothing changed: nothing rewritten
        stamp.write_text(stamp.read_text(encoding="utf-8").removesuffix(" format 2"), encoding="utf-8")
        assert len(write_feeds(session, roadmap, tmp_path, as_of)) == 17
    assert (folder / "jo.ics").read_bytes().startswith(b"BEGIN:VCALENDAR")
