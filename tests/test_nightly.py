"""The nightly check end to end, under a real Prefect test server, through the `roadmap` CLI."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.nightly import nightly_status_check
from tests.conftest import SEED_ROADMAP, error_lines

AS_OF = "2024-06-05T09:00:00+02:00"
CODES = "ae bh dj dz iq jo kw lb ly mr qa sa sd so tn ye".split()
runner = CliRunner()

pytestmark = pytest.mark.usefixtures("prefect_server")


@contextlib.contextmanager
def claims_made():
    """Collect the statements that claim reminders (``INSERT INTO reminder_log``) on the
    configured database's engine while inside."""
    from sqlalchemy import event

    from models.db import get_engine

    claims: list[str] = []

    def seen(connection, cursor, statement, *rest):
        if statement.lstrip().upper().startswith("INSERT INTO REMINDER_LOG"):
            claims.append(statement)

    event.listen(get_engine(), "before_cursor_execute", seen)
    try:
        yield claims
    finally:
        event.remove(get_engine(), "before_cursor_execute", seen)


def _check(as_of: str = AS_OF) -> dict:
    result = runner.invoke(app, ["check", "--as-of", as_of, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _states(result: dict, milestone: str) -> Counter:
    return Counter(s["state"] for s in result["statuses"] if s["milestone"] == milestone)


@contextlib.contextmanager
def run_log_messages():
    """Collect the messages the check's flow and task runs log (Prefect's ``prefect.flow_runs``
    and ``prefect.task_runs`` loggers, what a deployment's run shows). Call the flow itself
    inside: the CLI sets Prefect's logging up again, which replaces these loggers' handlers."""
    import logging

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(logging.INFO)
    loggers = [logging.getLogger(name) for name in ("prefect.task_runs", "prefect.flow_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(min(logger.level or logging.INFO, logging.INFO))
    try:
        yield messages
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


def test_seed_roadmap_on_5_june(database_url, outbox):
    assert runner.invoke(app, ["sync", str(SEED_ROADMAP)]).exit_code == 0

    first = _check()

    assert first["as_of"] == "2024-06-05T07:00:00+00:00"
    assert len(first["statuses"]) == 96
    assert _states(first, "invitations") == Counter(overdue=16)
    assert _states(first, "nominations") == Counter(blocked=16)
    assert _states(first, "travel") == Counter(blocked=16)
    jo_invitation = next(s for s in first["statuses"] if s["milestone"] == "invitations" and s["member_state"] == "JO")
    assert jo_invitation == {
        "roadmap": "gcm-arab-2024", "milestone": "invitations", "member_state": "JO", "state": "overdue",
        "recorded_state": "pending", "deadline": "2024-05-31T23:59:59+02:00", "days_left": -5,
    }
    # One overdue item per mission: 16 digests, one file each.
    assert first["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        f"mission-{c}" for c in "ae bh dj dz iq jo kw lb ly mr qa sa sd so tn ye".split()
    )
    assert all(len(list(p.glob("*.txt"))) == 1 for p in outbox.iterdir())

    # The second check plans nothing: the rows' hints skip the windows delivered, so no claim is
    # even tried (found by a mutation review: without the hints the reminder log alone refused them).
    with claims_made() as claims:
        second = _check()
    assert second["reminders"] == {"sent": 0, "already_sent": 16, "failed": 0, "escalated": 0, "in_flight": 0}
    assert claims == []
    assert sum(len(list(p.glob("*.txt"))) for p in outbox.iterdir()) == 16

    # The rows remember the window delivered (a hint, so the check does not plan them again);
    # without the hints, the reminder log alone still refuses a second delivery.
    from sqlalchemy import update
    from sqlmodel import select

    from models.db import session_scope
    from models.tables import Milestone, Status

    with session_scope() as session:
        hints = session.exec(select(Status.last_reminder).join(Milestone).where(Milestone.key == "invitations")).all()
        assert hints == ["overdue-3"] * 16
        session.execute(update(Status).values(last_reminder=None))
    assert _check()["reminders"] == {"sent": 0, "already_sent": 16, "failed": 0, "escalated": 0, "in_flight": 0}
    assert sum(len(list(p.glob("*.txt"))) for p in outbox.iterdir()) == 16

    marked = runner.invoke(app, ["mark", "invitations", "JO", "done", "--note", "NV 2024/051"])
    assert marked.exit_code == 0, marked.output
    assert marked.stdout.strip() == "invitations JO: done (NV 2024/051)"

    third = _check()
    assert _states(third, "invitations") == Counter(overdue=15, done=1)
    jo = {s["milestone"]: s for s in third["statuses"] if s["member_state"] == "JO"}
    assert jo["nominations"]["state"] == "upcoming"  # no longer blocked; due 30 June, 25 days left
    assert jo["nominations"]["days_left"] == 25
    assert jo["travel"]["state"] == "blocked"
    assert _states(third, "nominations") == Counter(blocked=15, upcoming=1)


def test_a_missed_night_is_caught_up_once(seeded, outbox):
    # Nobody ran the check between 20 May and 5 June: one reminder per item, not one per window.
    result = _check("2024-06-05T09:00:00+02:00")
    assert result["reminders"]["sent"] == 16
    files = list((outbox / "mission-jo").glob("*.txt"))
    assert len(files) == 1
    assert "OVERDUE by 5 days (3 working)" in files[0].read_text(encoding="utf-8")  # Geneva: 3, 4 and 5 June
    # Next window, overdue-6, on Thursday 6 June: one more each, once.
    assert _check("2024-06-06T09:00:00+02:00")["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert _check("2024-06-06T18:00:00+02:00")["reminders"] == {"sent": 0, "already_sent": 16, "failed": 0, "escalated": 0, "in_flight": 0}
    # overdue-9 falls on Sunday 9 June, not a working day in Geneva: it goes out on Friday 7 June.
    assert _check("2024-06-07T09:00:00+02:00")["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert _check("2024-06-08T09:00:00+02:00")["reminders"] == {"sent": 0, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert _check("2024-06-10T09:00:00+02:00")["reminders"] == {"sent": 0, "already_sent": 16, "failed": 0, "escalated": 16, "in_flight": 0}
    assert len(list((outbox / "mission-jo").glob("*.txt"))) == 3


@pytest.mark.parametrize("claim_part, hints_held", [(None, None), (5, 3)])
def test_an_escalation_of_a_coordinators_row_keeps_its_reminder_hint(seeded, outbox, monkeypatch, claim_part,
                                                                     hints_held):
    # The conference (owner: coordinator, in Riyadh; due Thursday 4 July 2024) is 7 working days
    # overdue on Monday 15 July (the weekend there is Friday and Saturday): on the same night the
    # coordinators get its last reminder window (before-1) and its overdue escalation. The row's
    # hint must stay the reminder's window, or every later night plans the reminder again for the
    # log to refuse. Claimed 5 items a transaction and hints written 3 at a time, the night is
    # the same: the 32 escalations are claimed in 7 parts and still go out as one digest.
    from sqlmodel import func, select

    import flows.reminders as reminders
    from models.db import session_scope
    from models.tables import Milestone, ReminderLog, Status

    if claim_part:
        monkeypatch.setattr(reminders, "CLAIM_PART", claim_part)
        monkeypatch.setattr(reminders, "HINTS_HELD", hints_held)
    with claims_made() as claims:
        result = _check("2024-07-15T09:00:00+03:00")
    assert result["reminders"] == {"sent": 32, "already_sent": 0, "failed": 0, "escalated": 32, "in_flight": 0}
    # Reminders: 16 to the coordinators and one to each of 16 missions, claimed for 10 and then 7
    # recipients (25 and 7 items); then the 32 escalations. In parts of 5: 5 + 2 + 7 claims.
    assert len(claims) == (14 if claim_part else 3)
    with session_scope() as session:
        assert session.exec(select(func.count()).select_from(ReminderLog).where(ReminderLog.state == "sent")).one() == 64
    with session_scope() as session:
        hints = session.exec(
            select(Status.last_reminder, Status.last_escalation).join(Milestone).where(Milestone.key == "conference")
        ).all()
    assert hints == [("before-1", "escalation-overdue")] * 16
    digests = sorted(p.read_text(encoding="utf-8").splitlines()[0] for p in (outbox / "coordinators").glob("*.txt"))
    assert digests == [
        "Subject: Escalation to the coordinators: 32 items | تصعيد إلى المنسقين: 32 بندًا",
        "Subject: Roadmap reminders: 16 items (16 overdue) | تذكيرات خريطة الطريق: 16 بندًا (المتأخر منها: 16)",
    ]


def test_failing_channel_is_logged_and_retried_next_run(seeded, outbox, tmp_path, monkeypatch):
    from tests.sinks import HttpSink

    sink = HttpSink(status=500).start()
    try:
        config = tmp_path / "apprise.yaml"
        config.write_text(f'urls:\n  - "json://127.0.0.1:{sink.port}/":\n      tag: mission-jo\n', encoding="utf-8")
        monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(config))
        monkeypatch.setattr("notifications.delivery.BACKOFF_S", 0.0)
        failed = _check()
        assert failed["reminders"] == {"sent": 0, "already_sent": 0, "failed": 16, "escalated": 0, "in_flight": 0}
        assert len(sink.requests) == 3  # mission-jo tried 3 times; the other 15 tags have no channel
        sink.status = 200
        retried = _check()
        assert retried["reminders"] == {"sent": 1, "already_sent": 0, "failed": 15, "escalated": 0, "in_flight": 0}
        assert len(sink.requests) == 4
        assert "Jordan" in sink.requests[-1]["message"]
    finally:
        sink.stop()


def test_the_run_log_names_the_digests_that_failed(seeded, outbox, tmp_path, monkeypatch):
    """Found by a coordinator's walkthrough: a deployment's run logged "1 sent, 15 failed" and
    no more; the recipients and reasons were in the reminder artifact only. The run's log names
    the first ``FAILURES_LOGGED`` of them, in recipient order, and counts the rest."""
    import flows.nightly

    from tests.sinks import HttpSink

    sink = HttpSink().start()
    try:
        config = tmp_path / "apprise.yaml"
        config.write_text(f'urls:\n  - "json://127.0.0.1:{sink.port}/":\n      tag: mission-jo\n', encoding="utf-8")
        monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(config))
        monkeypatch.setattr(flows.nightly, "FAILURES_LOGGED", 3)
        with run_log_messages() as logged:
            assert nightly_status_check(as_of=AS_OF, publish=False)["reminders"] == {
                "sent": 1, "already_sent": 0, "failed": 15, "escalated": 0, "in_flight": 0}
    finally:
        sink.stop()
    assert len(sink.requests) == 1
    failed = [m for m in logged if m.startswith("digests that failed")]
    assert failed == [
        "digests that failed (15): mission-ae: no channel configured for this recipient tag; mission-bh: no channel "
        "configured for this recipient tag; mission-dj: no channel configured for this recipient tag; and 12 more in "
        "the nightly-check-reminders artifact"]


def test_the_run_log_counts_the_items_the_json_counts(seeded, outbox):
    """Found by a fault review: the second check of a night logged "0 already sent" while its
    JSON said 16 (the log left out the items skipped before planning)."""
    nightly_status_check(as_of=AS_OF, publish=False)
    with run_log_messages() as logged:
        again = nightly_status_check(as_of=AS_OF, publish=False)["reminders"]
    assert again == {"sent": 0, "already_sent": 16, "failed": 0, "escalated": 0, "in_flight": 0}
    assert [m for m in logged if m.startswith("reminders:")] == [
        "reminders: 0 sent in 0 digests, 16 already sent, 0 failed; 0 escalated"]
    # One roadmap, 16 member states x 6 milestones (found by a seed review: "in 1 roadmaps").
    assert [m for m in logged if m.startswith("checked")] == [
        "checked 96 status rows in 1 roadmap as of 2024-06-05T07:00:00+00:00"]


def test_escalations_that_fail_are_counted_and_a_failing_copy_is_reported_not_failed(seeded, outbox, tmp_path,
                                                                                     monkeypatch):
    """Found by a fault review: an escalation digest that failed was in no count, and a failing
    copy channel (tagged ``always``) failed every mission's reminder. 20 June 2024: the 16
    missions' overdue invitations go out (their copies fail: reported, the items sent); the
    coordinators' 16 conference reminders and 16 escalations fail: 32 failed."""
    from tests.sinks import HttpSink

    missions, refusing = HttpSink().start(), HttpSink(status=500).start()
    try:
        config = tmp_path / "apprise.yaml"
        config.write_text(
            "urls:\n"
            f'  - "json://127.0.0.1:{missions.port}/":\n      tag: [{", ".join(f"mission-{c}" for c in CODES)}]\n'
            f'  - "json://127.0.0.1:{refusing.port}/coordinators":\n      tag: coordinators\n'
            f'  - "json://127.0.0.1:{refusing.port}/archive":\n      tag: always\n', encoding="utf-8")
        monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(config))
        monkeypatch.setattr("notifications.delivery.BACKOFF_S", 0.0)
        with run_log_messages() as logged:
            result = nightly_status_check(as_of="2024-06-20T09:00:00+03:00", publish=False)
    finally:
        missions.stop()
        refusing.stop()
    assert result["reminders"] == {"sent": 16, "already_sent": 0, "failed": 32, "escalated": 0, "in_flight": 0}
    assert len(missions.requests) == 16
    # Each mission's copy once, the coordinators' reminder and escalation three times each, with
    # their copies once.
    assert Counter(refusing.paths) == {"/archive": 16 + 2, "/coordinators": 2 * 3}
    failed = [m for m in logged if m.startswith("digests that failed")]
    # In recipient order (the coordinators' reminders first), then the escalation digest.
    assert failed == ["digests that failed (18): coordinators: JSON: failure; " + "".join(
        f"mission-{c} (copy channels): JSON: failure; " for c in CODES) + "coordinators: JSON: failure"]


def test_a_member_state_removed_from_the_file_is_no_longer_checked_nor_reminded(database_url, outbox, tmp_path):
    """Found by a bad-input review: a member state deleted from the roadmap file kept being
    checked, listed and reminded. Its rows are kept (state, note, history), inactive, until the
    file lists it again."""
    import yaml

    assert runner.invoke(app, ["sync", str(SEED_ROADMAP)]).exit_code == 0
    assert runner.invoke(app, ["mark", "invitations", "YE", "in_progress", "--note", "NV-17"]).exit_code == 0
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    data["member_states"] = [m for m in data["member_states"] if m["code"] != "YE"]
    without = tmp_path / "without-ye.yaml"
    without.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    synced = runner.invoke(app, ["sync", str(without)])
    assert synced.exit_code == 0, synced.output
    assert synced.stdout.strip() == "gcm-arab-2024: created nothing; updated 1 roadmap, 6 status"
    assert synced.stderr.strip() == ("warning: gcm-arab-2024: member state YE is no longer in the file: its statuses "
                                     "and history are kept, inactive, until the file lists it again")

    checked = _check()
    assert len(checked["statuses"]) == 90
    assert "YE" not in {s["member_state"] for s in checked["statuses"]}
    assert checked["reminders"] == {"sent": 15, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        f"mission-{c}" for c in "ae bh dj dz iq jo kw lb ly mr qa sa sd so tn".split())
    marked = runner.invoke(app, ["mark", "invitations", "YE", "done"])
    assert marked.exit_code == 2
    assert "member state 'YE' was removed from the roadmap file of milestone 'invitations'" in marked.stderr

    assert runner.invoke(app, ["sync", str(SEED_ROADMAP)]).exit_code == 0  # listed again
    again = _check()
    ye = [s for s in again["statuses"] if s["member_state"] == "YE"]
    assert len(ye) == 6
    assert next(s for s in ye if s["milestone"] == "invitations")["state"] == "overdue"
    from sqlmodel import Session, select

    from models.db import get_engine
    from models.tables import Milestone, Status

    with Session(get_engine(database_url)) as session:
        kept = session.exec(select(Status).join(Milestone).where(
            Milestone.key == "invitations", Status.member_state_code == "YE")).one()
    assert (kept.state, kept.note, kept.active) == ("in_progress", "NV-17", True)
    assert again["reminders"] == {"sent": 1, "already_sent": 15, "failed": 0, "escalated": 0, "in_flight": 0}
    assert len(list((outbox / "mission-ye").glob("*.txt"))) == 1


def _changed_seed(tmp_path: Path, key: str, without: str = "", **changes) -> str:
    """The seed roadmap with milestone ``key``'s fields set to ``changes`` and, if given, member
    state ``without`` left out, written to a file; its path."""
    import yaml

    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    next(m for m in data["milestones"] if m["key"] == key).update(changes)
    data["member_states"] = [m for m in data["member_states"] if m["code"] != without]
    path = tmp_path / f"{key}-changed{'-without-' + without if without else ''}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return str(path)


def _files(outbox: Path, prefix: str) -> Counter:
    """Digests in the outbox per recipient folder whose name starts with ``prefix``."""
    return Counter(p.parent.name for p in outbox.rglob("*.txt") if p.parent.name.startswith(prefix))


def test_a_deadline_moved_later_gets_the_reminders_of_its_new_schedule(seeded, outbox, tmp_path):
    """Found by a review of roadmap changes: the reminder log is keyed by window name, so after
    the invitations' deadline moved from 31 May to 15 June the "7 days left" of 7 June (8 June
    is a Saturday in Geneva) was counted already sent: it had gone out for 31 May."""
    assert _check("2024-05-24T09:00:00+03:00")["reminders"]["sent"] == 16  # before-7 of 31 May
    synced = runner.invoke(app, ["sync", _changed_seed(tmp_path, "invitations", deadline="mid-June 2024")])
    assert synced.exit_code == 0, synced.output
    assert synced.stderr.strip() == ("warning: gcm-arab-2024: milestone 'invitations': deadline changed for 16 member "
                                     "states: their reminders follow the new schedule")
    assert _check("2024-05-31T09:00:00+03:00")["reminders"]["sent"] == 16  # before-14 of 15 June, on Friday 31 May
    moved = _check("2024-06-07T09:00:00+03:00")
    assert moved["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert _files(outbox, "mission-") == {f"mission-{c}": 3 for c in CODES}
    assert _check("2024-06-07T10:00:00+03:00")["reminders"]["already_sent"] == 16  # and once only


def test_an_extended_deadline_missed_again_is_reminded_and_escalated_again(seeded, outbox, tmp_path):
    """Found by a review of roadmap changes: after the invitations were escalated (12 June, 8
    working days late) and their deadline extended to 30 June, the second lapse was neither
    reminded nor escalated (``escalation-overdue`` was sent once per row for ever)."""
    first = _check("2024-06-12T09:00:00+03:00")["reminders"]
    assert (first["sent"], first["escalated"]) == (16, 16)
    assert runner.invoke(app, ["sync", _changed_seed(tmp_path, "invitations", deadline="end of June 2024")]).exit_code == 0
    # Wednesday 10 July, 8 Geneva working days after 30 June and a working day in Cairo, where
    # escalations wait for one. The coordinators' 16 conference rows (due 4 July) get their last
    # window's catch-up besides.
    again = _check("2024-07-10T09:00:00+03:00")["reminders"]
    assert (again["sent"], again["escalated"], again["already_sent"]) == (16 + 16, 16, 0)
    assert _files(outbox, "mission-") == {f"mission-{c}": 2 for c in CODES}
    assert _files(outbox, "coordinators") == {"coordinators": 2 + 1}  # one escalation digest a lapse, one reminder


def test_an_escalation_waits_for_the_coordinators_working_day(seeded, outbox, tmp_path):
    """Found by a replay of the 2024 campaign: escalations went out on the coordinators' weekend.
    Invitations due Thursday 30 May are more than 5 Geneva working days late on Friday 7 June,
    and Friday and Saturday are the weekend in Cairo: the coordinators get them on Sunday 9 June,
    once."""
    assert runner.invoke(app, ["sync", _changed_seed(tmp_path, "invitations", deadline="2024-05-30")]).exit_code == 0
    friday = _check("2024-06-07T09:00:00+03:00")["reminders"]
    assert (friday["sent"], friday["escalated"]) == (16, 0)  # the missions' "overdue" of 7 June
    assert _check("2024-06-08T09:00:00+03:00")["reminders"]["escalated"] == 0
    sunday = _check("2024-06-09T09:00:00+03:00")["reminders"]
    assert (sunday["sent"], sunday["escalated"]) == (0, 16)
    assert _check("2024-06-10T09:00:00+03:00")["reminders"]["escalated"] == 0
    (escalation,) = [p.read_text(encoding="utf-8").splitlines() for p in (outbox / "coordinators").glob("*.txt")]
    assert escalation[3] == "Escalation to the coordinators (16 items), as of 2024-06-09 06:00 UTC"
    assert escalation.count("  escalated: overdue by 6 working days (10 days)") == 16


def test_a_milestone_given_to_another_owner_reminds_the_new_owner_of_the_current_window(seeded, outbox, tmp_path):
    """Found by a review of roadmap changes: after the missions' "7 days left" of 24 May, the
    invitations given to the country offices reached no office on 27 May (the window's hint
    and name said it was sent)."""
    assert _check("2024-05-24T09:00:00+03:00")["reminders"]["sent"] == 16
    synced = runner.invoke(app, ["sync", _changed_seed(tmp_path, "invitations", owner="office")])
    assert synced.stderr.strip() == ("warning: gcm-arab-2024: milestone 'invitations': owner changed: the new owners "
                                     "get its reminders from the current window on")
    assert _check("2024-05-27T09:00:00+03:00")["reminders"]["sent"] == 16
    assert _files(outbox, "office-") == {f"office-{c}": 1 for c in CODES}
    assert _files(outbox, "mission-") == {f"mission-{c}": 1 for c in CODES}


def _windows(database_url: str, code: str) -> list[str]:
    """The reminder log's windows of ``code``'s invitations row, sorted."""
    from sqlmodel import Session, select

    from models.db import get_engine
    from models.tables import Milestone, ReminderLog, Status

    with Session(get_engine(database_url)) as session:
        return sorted(session.exec(select(ReminderLog.window).join(Status).join(Milestone).where(
            Milestone.key == "invitations", Status.member_state_code == code)).all())


def test_a_deadline_moved_and_moved_back_is_not_reminded_twice_and_its_log_names_stay_short(seeded, outbox, tmp_path):
    """Found by a review of this change: a deadline moved and moved back (a typo mended) had its
    "7 days left" sent twice for the same 31 May, and each move appended to the log's window
    names until PostgreSQL refused the sync (VARCHAR(32))."""
    june = _changed_seed(tmp_path, "invitations", deadline="mid-June 2024")
    assert _check("2024-05-24T09:00:00+03:00")["reminders"]["sent"] == 16  # before-7 of 31 May
    for path in (june, str(SEED_ROADMAP)):
        assert runner.invoke(app, ["sync", path]).exit_code == 0
    assert _check("2024-05-24T10:00:00+03:00")["reminders"] == {
        "sent": 0, "already_sent": 16, "failed": 0, "escalated": 0, "in_flight": 0}
    assert _windows(seeded, "JO") == ["before-7"]
    assert runner.invoke(app, ["sync", june]).exit_code == 0
    assert _check("2024-05-31T09:00:00+03:00")["reminders"]["sent"] == 16  # before-14 of 15 June
    for _ in range(3):
        for path in (str(SEED_ROADMAP), june):
            synced = runner.invoke(app, ["sync", path])
            assert synced.exit_code == 0, synced.output
    assert _windows(seeded, "JO") == ["before-14", "before-7@2024-05-31"]
    assert _check("2024-05-31T10:00:00+03:00")["reminders"]["already_sent"] == 16
    assert _files(outbox, "mission-") == {f"mission-{c}": 2 for c in CODES}


def test_a_member_state_listed_again_after_its_milestone_changed_owner_reminds_the_new_owner(seeded, outbox, tmp_path):
    """Found by a review of this change: Yemen, out of the file while the invitations went to
    the country offices, came back with the missions' hint, and its office got no reminder."""
    assert _check("2024-05-24T09:00:00+03:00")["reminders"]["sent"] == 16
    without_yemen = _changed_seed(tmp_path, "invitations", without="YE", owner="office")
    for path in (without_yemen, _changed_seed(tmp_path, "invitations", owner="office")):
        assert runner.invoke(app, ["sync", path]).exit_code == 0
    assert _check("2024-05-27T09:00:00+03:00")["reminders"]["sent"] == 16
    assert _files(outbox, "office-") == {f"office-{c}": 1 for c in CODES}


def test_bad_input_on_the_command_line_is_one_clear_error(seeded):
    cases = {
        ("mark", "visas", "JO", "done"): "unknown milestone 'visas'",
        ("mark", "invitations", "XX", "done"): "unknown member state 'XX'",
        ("mark", "invitations", "JO", "finished"): "unknown state 'finished'",
        ("check", "--as-of", "5 June 2024"): "not an ISO-8601 timestamp",
        ("check", "--as-of", "2024-06-05T09:00"): "has no UTC offset",
        ("check", "--as-of", "9999-12-31T00:00Z"): "instants must fall between 1900-01-01 and 2999-12-31",
        ("status", "--as-of", "0001-01-01T12:00Z"): "instants must fall between 1900-01-01 and 2999-12-31",
    }
    for args, message in cases.items():
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)


@pytest.mark.parametrize(("variable", "blocker", "folder", "shown", "reason"), [
    ("ROADMAP_REPORT_DIR", "reports", "reports", "reports", "it is a file, not a folder"),
    ("ROADMAP_CALENDAR_DIR", "calendars", "calendars/feeds", "calendars/feeds", "Not a directory"),
    ("ROADMAP_CALENDAR_DIR", "feeds/gcm-arab-2024", "feeds", "feeds (its folder feeds/gcm-arab-2024)",
     "it is a file, not a folder"),
], ids=["report-folder-a-file", "calendar-folder-under-a-file", "roadmap-calendar-folder-a-file"])
def test_a_folder_that_cannot_be_published_into_fails_the_check_before_any_reminder(
        seeded, outbox, tmp_path, monkeypatch, variable, blocker, folder, shown, reason):
    """Found by bad-input reviews: a report folder, then a roadmap's own calendar folder
    (``<ROADMAP_CALENDAR_DIR>/<slug>``), that was a file failed the check after its reminders had
    gone out (and ``--json`` printed nothing). The command refuses before it starts the flow: a
    failed run would alert the coordinators."""
    import flows.nightly
    from models.db import SettingError

    (tmp_path / blocker).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / blocker).write_text("a file, not a folder", encoding="utf-8")
    monkeypatch.setenv(variable, str(tmp_path / folder))
    with monkeypatch.context() as patched:
        patched.setattr(flows.nightly, "nightly_status_check", lambda **_: pytest.fail("the flow was started"))
        result = runner.invoke(app, ["check", "--as-of", AS_OF, "--json"])
    assert isinstance(result.exception, SettingError), result.output
    assert str(result.exception) == f"{variable}={tmp_path}/{shown}: cannot publish there: {reason}".replace(
        "(its folder ", f"(its folder {tmp_path}/")
    assert not outbox.exists() or not any(outbox.iterdir())
    with pytest.raises(SettingError, match=f"^{variable}="):  # the flow, run by a deployment, checks too
        flows.nightly.nightly_status_check(as_of=AS_OF)
    assert not outbox.exists() or not any(outbox.iterdir())
    monkeypatch.setenv(variable, str(tmp_path / "elsewhere"))
    assert _check()["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}  # none was sent before


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` made read-only for this process: by its mode, or, for root (whom modes do not
    stop), by the immutable attribute (``chattr +i``)."""
    import subprocess

    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a folder read-only as root here: chattr: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_roadmap_folder_or_a_broken_link_fails_the_check_before_any_reminder(seeded, outbox, tmp_path,
                                                                                         monkeypatch):
    """Found by a bad-input review: a roadmap's report folder that could not be written into
    failed the check after its 16 reminders had gone out."""
    from models.db import SettingError

    reports = tmp_path / "reports"
    (reports / "gcm-arab-2024").mkdir(parents=True)
    monkeypatch.setenv("ROADMAP_REPORT_DIR", str(reports))
    with _read_only(reports / "gcm-arab-2024"):
        result = runner.invoke(app, ["check", "--as-of", AS_OF, "--json"])
    assert isinstance(result.exception, SettingError), result.output
    reason = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    assert str(result.exception) == (
        f"ROADMAP_REPORT_DIR={reports} (its folder {reports}/gcm-arab-2024): cannot publish there: {reason}")
    (tmp_path / "feeds").symlink_to(tmp_path / "gone")
    monkeypatch.setenv("ROADMAP_CALENDAR_DIR", str(tmp_path / "feeds"))
    result = runner.invoke(app, ["check", "--as-of", AS_OF, "--json"])
    assert str(result.exception) == (f"ROADMAP_CALENDAR_DIR={tmp_path}/feeds: cannot publish there: it is a link to "
                                     f"{tmp_path}/gone, which does not exist")
    assert not outbox.exists() or not any(outbox.iterdir())
    assert not [p for p in reports.rglob("*") if p.name.startswith(".roadmap-probe-")]


def test_an_unusable_channel_config_refuses_the_command_and_fails_the_run(seeded, outbox, tmp_path, monkeypatch):
    """Found by a new user's walkthrough: with ``ROADMAP_APPRISE_CONFIG`` naming no file, every
    reminder failed, and the run completed with exit status 0, so no automation told the
    coordinators. The command refuses before it starts the flow; the flow (a deployment's run)
    publishes the dashboards, then fails; the reminders go out on the next good night."""
    import flows.nightly
    from notifications.channels import ChannelConfigError

    missing = tmp_path / "apprise.yaml"
    monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(missing))
    with monkeypatch.context() as patched:
        patched.setattr(flows.nightly, "nightly_status_check", lambda **_: pytest.fail("the flow was started"))
        result = runner.invoke(app, ["check", "--as-of", AS_OF, "--json"])
    assert result.exit_code == 2, result.output
    # Only the error's line: Prefect's log handlers may also write there, after an earlier test.
    assert [line for line in error_lines(result.stderr) if line.startswith("error:")] == [
        f"error: no reminder could be sent: {missing}: cannot read Apprise config: [Errno 2] No such file or "
        f"directory: '{missing}'"]
    with pytest.raises(ChannelConfigError) as info:
        flows.nightly.nightly_status_check(as_of=AS_OF)
    assert str(info.value) == (f"no reminder sent tonight (16 failed): {missing}: cannot read Apprise config: "
                               f"[Errno 2] No such file or directory: '{missing}'")
    assert (tmp_path / "reports" / "gcm-arab-2024" / "timeline.png").exists()  # published before it failed
    assert not outbox.exists() or not any(outbox.iterdir())
    monkeypatch.delenv("ROADMAP_APPRISE_CONFIG")
    assert _check()["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}


def test_serve_refuses_an_unusable_channel_config(seeded, tmp_path, monkeypatch):
    """Found by the twenty-first session's walkthrough of the README: an exported
    ``ROADMAP_APPRISE_CONFIG`` naming a file not made yet was served, and every scheduled check
    then failed. ``roadmap serve`` stops before it serves anything; with the file there, it serves."""
    import flows.deployments

    served = []
    monkeypatch.setattr(flows.deployments, "serve_all", lambda: served.append(True))
    missing = tmp_path / "apprise.yaml"
    monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(missing))
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2, result.output
    assert [line for line in error_lines(result.stderr) if line.startswith("error:")] == [
        f"error: no reminder could be sent: {missing}: cannot read Apprise config: [Errno 2] No such file or "
        f"directory: '{missing}'"]
    assert served == []
    missing.write_text('urls:\n  - "json://127.0.0.1:9/hook":\n      tag: coordinators\n', encoding="utf-8")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert served == [True]


def test_the_demo_writes_to_the_outbox_whatever_channels_are_configured(tmp_path, outbox, monkeypatch):
    """Found by a new user's walkthrough: the demo sent its 2024 digests to the channels of an
    exported config (here a loopback HTTP sink), and said they were in the outbox."""
    from tests.sinks import HttpSink

    sink = HttpSink().start()
    try:
        config = tmp_path / "apprise.yaml"
        config.write_text(f'urls:\n  - "json://127.0.0.1:{sink.port}/":\n      tag: always\n', encoding="utf-8")
        monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(config))
        monkeypatch.chdir(SEED_ROADMAP.parent.parent)
        result = runner.invoke(app, ["demo", "--database", str(tmp_path / "demo.db"), "--no-color"])
        assert result.exit_code == 0, result.output
        assert "Reminders: 14 sent, 0 already sent, 0 failed; 0 escalated." in result.stdout
        # Only the note's line: Prefect's log handlers may also write there, after an earlier test.
        assert [line for line in error_lines(result.stderr) if line.startswith("note:")] == [
            "note: ROADMAP_APPRISE_CONFIG is ignored by the demo: its reminders go to the local outbox"]
        assert sink.requests == []
        assert len(list(outbox.rglob("*.txt"))) == 14
    finally:
        sink.stop()


@pytest.mark.parametrize("named_in", ["environment", ".env"])
def test_the_demo_runs_on_a_temporary_server_whatever_prefect_api_url_names_and_from_any_folder(tmp_path, named_in):
    """Found by a review of the docs: the demo, run where the README exports PREFECT_API_URL,
    replaced the real roadmap's dashboards on that server with its 2024 ones; and run outside
    the checkout it ended in a traceback. Then by a review of the change: a URL in the working
    folder's .env was missed. A child process: Prefect reads its settings once."""
    from tests.sinks import HttpSink

    server = HttpSink().start()  # stands for the real Prefect server: it must get no request
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"),
           "ROADMAP_OUTBOX_DIR": str(tmp_path / "outbox"), "ROADMAP_REPORT_DIR": str(tmp_path / "reports"),
           "ROADMAP_CALENDAR_DIR": str(tmp_path / "calendars")}
    url = f"http://127.0.0.1:{server.port}/api"
    if named_in == "environment":
        env["PREFECT_API_URL"] = url
    else:
        env.pop("PREFECT_API_URL", None)
        (folder / ".env").write_text(f"PREFECT_API_URL={url}\n", encoding="utf-8")
    try:
        done = subprocess.run([sys.executable, "-c", "from flows.cli import main; main()", "demo", "--no-color"],
                              cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert "Reminders: 14 sent, 0 already sent, 0 failed; 0 escalated." in done.stdout
    assert done.stderr.splitlines()[0] == (
        f"note: PREFECT_API_URL=http://127.0.0.1:{server.port}/api is ignored by the demo: it runs on a temporary "
        "Prefect server, so its 2024 dashboards leave that server's alone")
    assert server.paths == []
    assert len(list((tmp_path / "outbox").rglob("*.txt"))) == 14


def test_demo_runs_on_a_fresh_database(tmp_path, outbox, monkeypatch):
    monkeypatch.chdir(SEED_ROADMAP.parent.parent)
    db = tmp_path / "demo.db"
    result = runner.invoke(app, ["demo", "--database", str(db), "--no-color"])
    assert result.exit_code == 0, result.output
    assert "Loaded roadmaps/gcm-arab-2024.yaml: 96 status rows" in result.stdout
    assert "Reminders: 14 sent, 0 already sent, 0 failed; 0 escalated." in result.stdout
    assert db.exists()


def test_status_rows_read_for_classification_equal_the_plain_query(seeded):
    """A roadmap's rows as ``read_status_rows`` reads them (SQLite: one JSON array; PostgreSQL:
    the driver's tuples, instants as text): the same values, in the same order, as the plain
    query, deadlines and openings the same instants."""
    from sqlmodel import select

    from models.db import session_scope
    from models.status import STATUS_COLUMNS, instant_reader, read_status_rows
    from models.tables import Milestone, Status

    with session_scope() as session:
        connection = session.connection()
        ids = set(session.exec(select(Milestone.id)).all())
        instant = instant_reader(connection.dialect)
        read = [(*row[:4], instant(row[4]), row[5] and instant(row[5]), *row[6:])
                for row in read_status_rows(connection, ids)]
        columns = [*STATUS_COLUMNS[:4], Status.deadline, Status.opens_at, *STATUS_COLUMNS[6:]]
        plain = [tuple(row) for row in connection.execute(
            select(*columns).where(Status.milestone_id.in_(ids))
            .order_by(Status.milestone_id, Status.member_state_code)).all()]
    assert len(read) == 96  # 16 member states x 6 milestones
    assert read == plain
    assert read[0][1] == "AE" and read[15][1] == "YE"  # member states in code order within a milestone
    jo_invitations = next(row for row in read if row[1] == "JO" and row[4].day == 31)
    assert jo_invitations[4].isoformat() == "2024-05-31T21:59:59+00:00"  # 23:59:59 in Geneva, summer time


@pytest.mark.parametrize(("depth", "batch"), [(1, 1), (3, 1), (2, 4)])
def test_read_ahead_yields_each_milestone_set_in_order_and_raises_a_failed_read_when_due(seeded, monkeypatch, depth, batch):
    """Six milestone sets read ahead (``batch`` sets a statement) give the rows that one read of
    each gives, in order; a statement that fails raises when its first set is due, after the
    sets of the statements before it, and the reader lets go of its connection."""
    from sqlmodel import select

    import models.status as status
    from models.db import session_scope
    from models.tables import Milestone

    with session_scope() as session:
        connection = session.connection()
        ids = [{m} for m in session.exec(select(Milestone.id).order_by(Milestone.position)).all()]
        one_by_one = [status.read_status_rows(connection, s) for s in ids]
        engine = session.get_bind()
    assert [len(rows) for rows in one_by_one] == [16] * 6
    assert list(status.read_ahead(engine, ids, depth=depth, batch=batch)) == one_by_one

    real = status.send_status_query
    statements = []

    def fail_with_the_fourth(connection, milestone_ids):
        statements.append(sorted(milestone_ids))
        if ids[3] <= milestone_ids:
            raise RuntimeError(f"read of {sorted(milestone_ids)} failed")
        return real(connection, milestone_ids)

    monkeypatch.setattr(status, "send_status_query", fail_with_the_fourth)
    got = []
    failing = sorted(set().union(*ids[3 // batch * batch : 3 // batch * batch + batch]))
    with pytest.raises(RuntimeError, match=rf"read of {re.escape(str(failing))} failed"):
        for rows in status.read_ahead(engine, ids, depth=depth, batch=batch):
            got.append(rows)
    assert got == one_by_one[: 3 // batch * batch]  # batch 4: the first statement holds the fourth set
    assert statements[0] == sorted(set().union(*ids[:batch]))
    assert engine.pool.checkedout() == 0


def test_the_collector_is_paused_only_inside_and_restored():
    import gc

    from flows.collector import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # a caller that paused it keeps it paused
    finally:
        gc.enable()


_GLIBC_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                 reason="glibc only")
#: What both allocator probes start with: the process's resident memory, in KiB.
_RSS_PRELUDE = """
import sys, threading

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
"""


def _probe_mb(probe: str, mode: str) -> float:
    """Run ``probe`` (after :data:`_RSS_PRELUDE`) in a fresh Python process with ``mode`` as its
    argument; return the KiB it prints, in MiB."""
    run = subprocess.run([sys.executable, "-c", _RSS_PRELUDE + probe, mode], capture_output=True, text=True,
                         cwd=SEED_ROADMAP.parent.parent, check=True)
    return int(run.stdout.strip()) / 1024


_LARGE_BLOCKS_PROBE = """
if sys.argv[1] == "mapped":
    from flows.collector import map_large_blocks
    assert map_large_blocks()
first = bytearray(300 * 1024)  # glibc maps it; freed, its own threshold rises past it
del first
before = rss_kb()
large, kept = [], []
for _ in range(200):
    large.append(bytearray(200 * 1024))
    kept.append(bytearray(1024))  # a small block after each large one, kept
del large
print(rss_kb() - before)
"""


@_GLIBC_ONLY
def test_large_blocks_go_back_to_the_system_when_freed_once_mapped():
    """200 blocks of 200 KiB, each followed by a small block that stays, then freed: with glibc's
    own threshold (risen past 300 KiB by a first mapped block freed) they came from the heap,
    which keeps their 40 MB; with :func:`flows.collector.map_large_blocks` each is unmapped."""
    assert _probe_mb(_LARGE_BLOCKS_PROBE, "default") > 38  # 200 x 200 KiB = 39 MiB
    assert _probe_mb(_LARGE_BLOCKS_PROBE, "mapped") < 2


_FREE_PAGES_PROBE = """
kept = []

def allocate():  # a thread of its own: glibc serves it from an arena of its own
    blocks = [bytearray(1024) for _ in range(60_000)]  # above Python's small-object limit: malloc's
    kept.extend(blocks[::10])  # every tenth stays, so the heap cannot shrink from its top

worker = threading.Thread(target=allocate)
worker.start()
worker.join()
before = rss_kb()
if sys.argv[1] == "released":
    from flows.collector import release_free_memory
    assert release_free_memory()
print(before - rss_kb())
"""


@_GLIBC_ONLY
def test_free_pages_a_thread_left_in_its_arena_go_back_to_the_system_when_released():
    """A thread allocates 60,000 blocks of 1 KiB (59 MiB) and keeps every tenth: glibc keeps the
    freed nine tenths in that thread's arena (none of the RSS goes back); after
    :func:`flows.collector.release_free_memory`, the pages wholly free go back (about 29 MiB
    here: a freed run of nine blocks, 9 KiB, holds one or two whole pages)."""
    assert _probe_mb(_FREE_PAGES_PROBE, "default") < 1
    assert _probe_mb(_FREE_PAGES_PROBE, "released") > 20


def test_what_a_paused_block_froze_is_collectable_again_after_the_check():
    import gc
    import weakref

    from flows.collector import freeze_survivors, frozen_until_done

    class Node:
        pass

    assert gc.get_freeze_count() == 0
    with frozen_until_done():
        cycle = Node()
        cycle.self = cycle
        freeze_survivors()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is not None  # frozen: a full collection does not look at it
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None


def test_a_status_recorded_in_progress_is_shown_beside_its_classification(database_url, outbox):
    """Found by the twentieth session's review: a row marked ``in_progress`` looked exactly like a
    pending one in the check's JSON, the terminal table and the dashboards' cells. Its deadline
    still classifies it (Mauritania's invitation stays overdue, and is still reminded)."""
    assert runner.invoke(app, ["sync", str(SEED_ROADMAP)]).exit_code == 0
    assert runner.invoke(app, ["mark", "invitations", "MR", "in_progress", "--note", "NV 2024/077"]).exit_code == 0

    checked = _check()
    invitations = {s["member_state"]: s for s in checked["statuses"] if s["milestone"] == "invitations"}
    assert invitations["MR"] == {
        "roadmap": "gcm-arab-2024", "milestone": "invitations", "member_state": "MR", "state": "overdue",
        "recorded_state": "in_progress", "deadline": "2024-05-31T23:59:59+02:00", "days_left": -5,
    }
    assert Counter(s["recorded_state"] for s in invitations.values()) == Counter(pending=15, in_progress=1)
    assert checked["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}

    shown = runner.invoke(app, ["status", "--as-of", AS_OF, "--no-color"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    rows = {line.split("│")[1].split()[0]: [c.strip() for c in line.split("│")[2:-1]]
            for line in shown.stdout.splitlines() if line.startswith("│")}
    assert len(rows) == 16
    assert rows["MR"] == ["✔", "✔", "✖ 5d ◐", "⛔", "⛔", "○ 29d"]
    assert rows["DZ"] == ["✔", "✔", "✖ 5d", "⛔", "⛔", "○ 29d"]
    assert shown.stdout.rstrip().endswith("○ upcoming (days left)  ◐ in progress")


def test_digests_greet_missions_and_coordinators_by_name_and_explain_escalations_in_both_languages(seeded, outbox):
    """The 20 June 2024 check (09:00 Cairo): each mission's digest names its permanent mission as
    the roadmap file does, in both languages (the Arabic, "in Geneva", as the slides say it:
    found by a review of the seed); the coordinators' escalation of the invitations, 20 days (14 Geneva
    working days: 3-7, 10-14 and 17-20 June) after 31 May, gives its reason in both."""
    result = _check("2024-06-20T09:00:00+03:00")
    # 32 reminder items, and the 16 overdue invitations escalated besides
    assert result["reminders"] == {"sent": 32, "already_sent": 0, "failed": 0, "escalated": 16, "in_flight": 0}

    def lines(tag: str) -> list[list[str]]:
        return [p.read_text(encoding="utf-8").splitlines() for p in sorted((outbox / tag).glob("*.txt"))]

    (emirates,) = lines("mission-ae")
    assert emirates[3:5] == ["Roadmap reminders (1 item), as of 2024-06-20 06:00 UTC",
                             "To: Permanent Mission of the United Arab Emirates to the United Nations Office at Geneva"]
    assert "إلى: البعثة الدائمة للإمارات في جنيف" in emirates
    assert emirates[-1] == "Recipient tag | وسم المستلم: mission-ae"
    # A mission is told what to do when it has done it (found by a review of the digests), and
    # where: the review's mailbox, from the seed's last slide (found by a review of the seed).
    ask_en, ask_ar = ("Done already? Please tell the coordinators, who record it on the roadmap: gcmrrarabstates@iom.int",
                      "هل أُنجز ذلك؟ يُرجى إبلاغ المنسقين ليسجّلوه في خريطة الطريق: gcmrrarabstates@iom.int")
    assert emirates.count(ask_en) == 1 and emirates.count(ask_ar) == 1
    assert emirates.index(ask_en) < emirates.index("---") < emirates.index(ask_ar)
    (djibouti,) = lines("mission-dj")
    assert "إلى: البعثة الدائمة لجيبوتي في جنيف" in djibouti
    (libya,) = lines("mission-ly")
    assert "إلى: البعثة الدائمة لليبيا في جنيف" in libya

    escalation, reminders = sorted(lines("coordinators"), key=lambda d: d[0])
    assert escalation[0] == "Subject: Escalation to the coordinators: 16 items | تصعيد إلى المنسقين: 16 بندًا"
    assert [escalation[4], escalation[-1]] == ["To: the coordinators", "Recipient tag | وسم المستلم: coordinators"]
    assert [escalation[3], reminders[3]] == ["Escalation to the coordinators (16 items), as of 2024-06-20 06:00 UTC",
                                             "Roadmap reminders (16 items), as of 2024-06-20 06:00 UTC"]
    assert "إلى: المنسقين" in escalation
    assert escalation.count("  escalated: overdue by 14 working days (20 days)") == 16
    assert escalation.count("  تصعيد: مدة التأخير 14 يوم عمل (20 يومًا)") == 16
    assert reminders[0] == "Subject: Roadmap reminders: 16 items | تذكيرات خريطة الطريق: 16 بندًا"
    assert ask_en not in escalation + reminders and ask_ar not in escalation + reminders  # they record it
    assert not any("gcmrrarabstates@iom.int" in line for line in escalation + reminders)


def test_an_owner_changed_while_a_check_sends_reminds_the_new_owners_at_the_next_check(seeded, outbox, tmp_path,
                                                                                       monkeypatch):
    """Found by a review of things happening at once: the invitations given to the country
    offices by a sync while the 24 May check sent the missions' "7 days left" were never
    reminded to the offices: the check wrote its hints after the sync had cleared them, and the
    next check took the missions' window for the offices'. The sync lands here just before the
    check writes its hints."""
    import flows.reminders
    from models.sync import sync_roadmap_file

    changed = _changed_seed(tmp_path, "invitations", owner="office")
    write = flows.reminders._Hints.write

    def sync_first(hints) -> None:
        if hints.reminders:
            sync_roadmap_file(changed)
        write(hints)

    monkeypatch.setattr(flows.reminders._Hints, "write", sync_first)
    assert _check("2024-05-24T09:00:00+03:00")["reminders"]["sent"] == 16
    monkeypatch.setattr(flows.reminders._Hints, "write", write)
    assert _check("2024-05-27T09:00:00+03:00")["reminders"]["sent"] == 16
    assert _files(outbox, "office-") == {f"office-{c}": 1 for c in CODES}
    assert _files(outbox, "mission-") == {f"mission-{c}": 1 for c in CODES}


def test_a_missions_digest_names_the_mailbox_of_each_roadmap_it_lists(seeded, outbox, tmp_path):
    """A mission in two roadmaps gets one digest that lists each roadmap's coordinators' mailbox
    (``coordinator.email``, matched by roadmap); a mission in one roadmap gets its mailbox on the
    line that asks. 24 May 2024: the invitations' "7 days left" in both."""
    import yaml

    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    data.update(slug="gcm-arab-2025", title="Third Regional Review")
    data["coordinator"]["email"] = "gcm.arab@iom.int"
    data["member_states"] = [m for m in data["member_states"] if m["code"] == "JO"]
    path = tmp_path / "gcm-arab-2025.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert runner.invoke(app, ["sync", str(path)]).exit_code == 0

    assert _check("2024-05-24T09:00:00+03:00")["reminders"]["sent"] == 17
    (jordan,) = [p.read_text(encoding="utf-8").splitlines() for p in (outbox / "mission-jo").glob("*.txt")]
    ask = jordan.index("Done already? Please tell the coordinators, who record it on the roadmap:")
    assert jordan[ask + 1:ask + 3] == [
        "  gcm.arab@iom.int (Third Regional Review)",
        "  gcmrrarabstates@iom.int (Second Regional Review of the Global Compact for Migration in the Arab Region)",
    ]
    (emirates,) = [p.read_text(encoding="utf-8").splitlines() for p in (outbox / "mission-ae").glob("*.txt")]
    assert ("Done already? Please tell the coordinators, who record it on the roadmap: gcmrrarabstates@iom.int"
            in emirates)


def test_a_retired_roadmap_is_no_longer_checked_reminded_listed_or_marked(database_url, outbox, tmp_path):
    """Found by a coordinator's walkthrough: a roadmap could never be retired, and a file whose
    slug was changed was loaded beside the old roadmap, both checked (each mission reminded
    twice) and every ``mark`` ambiguous. ``roadmap retire`` keeps its rows and history; ``sync``
    of its file brings it back."""
    assert runner.invoke(app, ["sync", str(SEED_ROADMAP)]).exit_code == 0
    assert runner.invoke(app, ["mark", "invitations", "JO", "done", "--note", "NV 2024/051"]).exit_code == 0
    renamed = tmp_path / "gcm-arab-2024-v2.yaml"
    renamed.write_text(SEED_ROADMAP.read_text(encoding="utf-8").replace("slug: gcm-arab-2024\n", "slug: gcm-arab-2024-v2\n"),
                       encoding="utf-8")
    synced = runner.invoke(app, ["sync", str(renamed)])
    assert synced.exit_code == 0, synced.output
    assert error_lines(synced.stderr) == [
        "warning: gcm-arab-2024-v2: roadmap 'gcm-arab-2024' has the same title or file and is still checked: if this one "
        "replaces it, `roadmap retire gcm-arab-2024`"]
    both = _check()
    assert Counter(s["roadmap"] for s in both["statuses"]) == {"gcm-arab-2024": 96, "gcm-arab-2024-v2": 96}
    assert both["reminders"] == {"sent": 31, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}  # Jordan's invitation done in one

    retired = runner.invoke(app, ["retire", "gcm-arab-2024"])
    assert retired.exit_code == 0, retired.output
    assert retired.stdout.strip() == ("gcm-arab-2024: retired; its statuses and history are kept (`roadmap sync` its "
                                      "file to bring it back)")
    assert runner.invoke(app, ["retire", "gcm-arab-2024"]).stdout.startswith("gcm-arab-2024: already retired;")
    unknown = runner.invoke(app, ["retire", "gcm-arab"])
    assert unknown.exit_code == 2
    assert error_lines(unknown.stderr) == [
        "error: unknown roadmap 'gcm-arab': the database has gcm-arab-2024, gcm-arab-2024-v2"]

    one = _check(AS_OF.replace("09:00", "10:00"))
    assert {s["roadmap"] for s in one["statuses"]} == {"gcm-arab-2024-v2"}
    # Nor shown by `roadmap status` (found by a mutation review: no test ran it beside another roadmap).
    shown = runner.invoke(app, ["status", "--as-of", AS_OF, "--no-color"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.count(" as of 2024-06-05") == 1
    assert one["reminders"] == {"sent": 0, "already_sent": 16, "failed": 0, "escalated": 0, "in_flight": 0}
    marked = runner.invoke(app, ["mark", "invitations", "TN", "done"])  # no longer ambiguous
    assert marked.exit_code == 0, marked.output
    for args, error in (
        (["mark", "invitations", "TN", "done", "--roadmap", "gcm-arab-2024"],
         "roadmap 'gcm-arab-2024' is retired (`roadmap sync` its file to bring it back)"),
        (["calendar", "--roadmap", "gcm-arab-2024"],
         "roadmap 'gcm-arab-2024' is retired (`roadmap sync` its file to bring it back)"),
    ):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2, args
        assert error_lines(refused.stderr) == [f"error: {error}"], args
    shown = runner.invoke(app, ["status", "--as-of", AS_OF, "--no-color"], env={"COLUMNS": "200"})
    assert shown.stdout.count("Second Regional Review") == 1

    assert runner.invoke(app, ["retire", "gcm-arab-2024-v2"]).exit_code == 0
    nothing = runner.invoke(app, ["status"])
    assert nothing.exit_code == 2
    assert error_lines(nothing.stderr) == [
        f"error: every roadmap in the database ROADMAP_DATABASE_URL={database_url} is retired (gcm-arab-2024, "
        "gcm-arab-2024-v2): `roadmap sync` a roadmap file to check one"]

    back = runner.invoke(app, ["sync", str(SEED_ROADMAP)])
    assert back.stdout.strip() == "gcm-arab-2024: created nothing; updated 1 roadmap"
    again = _check(AS_OF.replace("09:00", "11:00"))
    jordan = next(s for s in again["statuses"] if s["milestone"] == "invitations" and s["member_state"] == "JO")
    assert (jordan["roadmap"], jordan["recorded_state"]) == ("gcm-arab-2024", "done")  # kept while retired
    assert again["reminders"] == {"sent": 0, "already_sent": 15, "failed": 0, "escalated": 0, "in_flight": 0}


def test_status_titles_each_roadmap_in_its_coordinators_zone(seeded):
    """Found by a coordinator's walkthrough: ``status`` titled the table in UTC
    (06:00:00+00:00), the report in Cairo time; both now say 09:00 Cairo."""
    shown = runner.invoke(app, ["status", "--as-of", "2024-05-27T08:00:00+02:00", "--no-color"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0].strip() == (
        "Second Regional Review of the Global Compact for Migration in the Arab Region as of 2024-05-27T09:00:00+03:00")


def test_the_terminal_says_how_many_items_another_run_holds():
    """Found by a fault review: a re-run after an outage printed "6 sent, 5 already sent, 0
    failed" while another run's claims still held 4 items."""
    from rich.console import Console

    from flows.terminal import print_check

    console = Console(record=True, width=200)
    print_check({"as_of": "2024-06-05T09:00:00+02:00", "statuses": [], "reminders": {
        "sent": 6, "already_sent": 5, "failed": 0, "escalated": 1, "in_flight": 4}}, console)
    assert console.export_text().splitlines()[-1] == (
        "Reminders: 6 sent, 5 already sent, 0 failed; 1 escalated; 4 held by another run (it sends them, or a later "
        "check does once its claim lapses).")


def test_the_check_counts_days_in_the_owners_zone_around_midnight(seeded):
    """Found by a mutation review: no test failed when the check took "today" in UTC. At 22:30
    UTC on 30 May 2024 it is already 31 May in Geneva (UTC+2): Algeria's invitations, owned by
    its permanent mission, are due today there, not tomorrow."""
    import datetime as dt

    from sqlmodel import select

    from models.db import session_scope
    from models.status import Classification, iter_status_views
    from models.tables import Roadmap

    with session_scope() as session:
        roadmap = session.exec(select(Roadmap)).one()
        as_of = dt.datetime(2024, 5, 30, 22, 30, tzinfo=dt.timezone.utc)
        views = {(v.milestone, v.member_state): v for v in iter_status_views(session, roadmap, as_of)}
    algeria = views[("invitations", "DZ")]
    assert (algeria.classification, algeria.days_left, algeria.working_days_left) == (Classification.due_today, 0, 0)
