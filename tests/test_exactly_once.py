"""Reminders are never sent twice and never lost: concurrent runs, a run killed mid-send,
failing channels and escalations, on SQLite and PostgreSQL, against a real HTTP sink."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import SEED_ROADMAP
from tests.sinks import HttpSink

CODES = "ae bh dj dz iq jo kw lb ly mr qa sa sd so tn ye".split()
ALL_TAGS = [f"mission-{c}" for c in CODES] + [f"office-{c}" for c in CODES] + ["coordinators"]
AS_OF = "2024-06-05T09:00:00+02:00"

pytestmark = pytest.mark.usefixtures("prefect_server")


def apprise_config(path: Path, routes: dict[str, int]) -> Path:
    """Write an Apprise config sending each tag in ``routes`` to json://127.0.0.1:<port>/."""
    by_port: dict[int, list[str]] = {}
    for tag, port in routes.items():
        by_port.setdefault(port, []).append(tag)
    lines = ["urls:"]
    for port, tags in by_port.items():
        lines += [f'  - "json://127.0.0.1:{port}/?rto=5":', f"      tag: {', '.join(tags)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def recipient_of(request: dict) -> str:
    """The recipient tag a digest names on its last line."""
    return request["message"].rsplit("Recipient tag | وسم المستلم: ", 1)[1].strip()


def _roadmap_command() -> list[str]:
    return [sys.executable, "-c", "from flows.cli import app; app()"]


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(SEED_ROADMAP.parent.parent), **extra)
    return env


@pytest.fixture
def sink():
    server = HttpSink().start()
    yield server
    server.stop()


def test_four_concurrent_checks_deliver_every_reminder_exactly_once(seeded, outbox, sink, tmp_path):
    config = apprise_config(tmp_path / "apprise.yaml", {tag: sink.port for tag in ALL_TAGS})
    env = _child_env({"ROADMAP_APPRISE_CONFIG": str(config)})
    runs = [
        subprocess.Popen(_roadmap_command() + ["check", "--as-of", AS_OF, "--json"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1])["reminders"])
    assert sum(r["sent"] for r in results) == 16
    assert sum(r["failed"] for r in results) == 0
    assert Counter(recipient_of(r) for r in sink.requests) == Counter({f"mission-{c}": 1 for c in CODES})


def test_a_run_killed_mid_send_loses_nothing_and_repeats_at_most_one(seeded, outbox, sink, tmp_path):
    sink.delay_s = 1.0  # each digest takes a second: the run is killed while sending
    config = apprise_config(tmp_path / "apprise.yaml", {tag: sink.port for tag in ALL_TAGS})
    env = _child_env({"ROADMAP_APPRISE_CONFIG": str(config), "ROADMAP_CLAIM_LEASE_S": "3"})
    victim = subprocess.Popen(_roadmap_command() + ["check", "--as-of", AS_OF, "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(sink.requests) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sink.requests) >= 4, "the check never started sending"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    delivered_before = len(sink.requests)
    assert delivered_before < 16

    sink.delay_s = 0.0
    time.sleep(3.5)  # the in-flight claim's lease runs out
    after = subprocess.run(_roadmap_command() + ["check", "--as-of", AS_OF, "--json"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert after.returncode == 0, after.stderr[-3000:]
    per_recipient = Counter(recipient_of(r) for r in sink.requests)
    assert set(per_recipient) == {f"mission-{c}" for c in CODES}  # nothing lost
    repeated = [tag for tag, n in per_recipient.items() if n > 1]
    assert len(repeated) <= 1 and all(per_recipient[t] == 2 for t in repeated)  # at most the one in flight
    assert json.loads(after.stdout.strip().splitlines()[-1])["reminders"]["failed"] == 0


def test_three_failed_nights_escalate_to_the_coordinators_once(seeded, outbox, tmp_path, monkeypatch):
    from flows.nightly import nightly_status_check

    broken, coordinators = HttpSink(status=500).start(), HttpSink().start()
    try:
        routes = {f"mission-{c}": broken.port for c in CODES} | {"coordinators": coordinators.port}
        monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(apprise_config(tmp_path / "apprise.yaml", routes)))
        monkeypatch.setattr("notifications.delivery.BACKOFF_S", 0.0)

        nights = ["2024-06-04T09:00:00+02:00", "2024-06-05T09:00:00+02:00", "2024-06-06T09:00:00+02:00"]
        results = [nightly_status_check(as_of=night, include_statuses=False)["reminders"] for night in nights]
        # The third failed night escalates the 16 items to the coordinators.
        assert results == [{"sent": 0, "already_sent": 0, "failed": 16, "escalated": 0, "in_flight": 0}] * 2 + [
            {"sent": 0, "already_sent": 0, "failed": 16, "escalated": 16, "in_flight": 0}]
        assert len(broken.requests) == 3 * 16 * 3  # three nights, 16 digests, three attempts each
        assert len(coordinators.requests) == 1
        escalation = coordinators.requests[0]
        assert escalation["title"] == "Escalation to the coordinators: 16 items | تصعيد إلى المنسقين: 16 بندًا"
        assert escalation["message"].count("escalated: reminders to mission-") == 16
        assert "mission-jo failed on 3 runs: JSON: failure" in escalation["message"]
        assert "تصعيد: فشلت التذكيرات إلى mission-jo 3 مرات: JSON: failure" in escalation["message"]

        # Same night again: the escalation is not repeated; the reminders are retried.
        again = nightly_status_check(as_of=nights[-1], include_statuses=False)["reminders"]
        assert again == {"sent": 0, "already_sent": 0, "failed": 16, "escalated": 0, "in_flight": 0}
        assert len(coordinators.requests) == 1

        # Monday 10 June: six working days overdue in Geneva, the overdue escalation goes out once.
        broken.status = 200
        monday = nightly_status_check(as_of="2024-06-10T09:00:00+02:00", include_statuses=False)["reminders"]
        assert monday == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 16, "in_flight": 0}
        assert len(coordinators.requests) == 2
        assert coordinators.requests[1]["message"].count("escalated: overdue by 6 working days (10 days)") == 16
    finally:
        broken.stop()
        coordinators.stop()


def test_an_escalation_of_failed_reminders_waits_for_the_coordinators_working_day(seeded, outbox, tmp_path,
                                                                                   monkeypatch):
    """Found by a replay of the 2024 campaign: escalations went out on the coordinators' weekend.
    The third failed night is Friday 7 June, the weekend in Cairo: the escalation waits for a
    run that fails on one of their working days. No mission is reminded on Geneva's weekend, so
    that is Monday 10 June (the fourth failed run), which also escalates the invitations, 6
    working days overdue."""
    from flows.nightly import nightly_status_check

    broken, coordinators = HttpSink(status=500).start(), HttpSink().start()
    try:
        routes = {f"mission-{c}": broken.port for c in CODES} | {"coordinators": coordinators.port}
        monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(apprise_config(tmp_path / "apprise.yaml", routes)))
        monkeypatch.setattr("notifications.delivery.BACKOFF_S", 0.0)
        nights = [f"2024-06-{day:02d}T09:00:00+02:00" for day in (5, 6, 7, 8, 9, 10)]
        reminders = [nightly_status_check(as_of=night, include_statuses=False)["reminders"] for night in nights]
        assert [(r["failed"], r["escalated"]) for r in reminders] == [(16, 0)] * 3 + [(0, 0)] * 2 + [(16, 32)]
        (escalation,) = coordinators.requests
        assert escalation["message"].count(" failed on 4 runs: JSON: failure") == 16
        assert escalation["message"].count("escalated: overdue by 6 working days (10 days)") == 16
    finally:
        broken.stop()
        coordinators.stop()


def test_claims_and_marks_in_batches_keep_every_rule(seeded, monkeypatch):
    """claim_many and mark_delivered work in statements of a few rows (a digest may hold more items
    than PostgreSQL takes parameters): new, sent, held and abandoned claims each get their outcome."""
    import datetime as dt

    from sqlmodel import select

    import models.reminders as reminders
    from models.db import session_scope
    from models.tables import ReminderLog, Status

    monkeypatch.setattr(reminders, "CLAIM_CHUNK", 2)
    monkeypatch.setattr(reminders, "_IDS_PER_STATEMENT", 2)
    now = dt.datetime(2024, 6, 5, 7, 0, tzinfo=dt.timezone.utc)
    with session_scope() as session:
        ids = sorted(session.exec(select(Status.id)).all())[:7]
        keys = [(status_id, "mission-jo", "due") for status_id in ids]
        first = reminders.claim_many(session, keys[:5], run_id="run-1", now=now)
        assert [c.outcome for c in first.values()] == ["claimed"] * 5
        sent = [first[k].log_id for k in keys[:3]]
        assert reminders.mark_delivered(session, sent, run_id="run-1", now=now) == 3
    with session_scope() as session:
        # keys 0-2 sent, 3-4 held by run-1 (a minute ago: within the lease), 5-6 new.
        second = reminders.claim_many(session, keys, run_id="run-2", now=now + dt.timedelta(minutes=1))
        assert [second[k].outcome for k in keys] == ["already_sent"] * 3 + ["in_flight"] * 2 + ["claimed"] * 2
    with session_scope() as session:
        # After the lease, run-1's abandoned claims are taken over; sent ones stay sent.
        later = now + reminders.claim_lease() + dt.timedelta(seconds=30)  # run-2 claimed at now + 1 min
        third = reminders.claim_many(session, keys, run_id="run-3", now=later)
        assert [third[k].outcome for k in keys] == ["already_sent"] * 3 + ["claimed"] * 2 + ["in_flight"] * 2
        taken = [third[k].log_id for k in keys[3:5]]
        assert reminders.mark_delivered(session, taken, run_id="run-3", now=later) == 2
        states = dict(session.exec(select(ReminderLog.status_id, ReminderLog.state)).all())
    assert [states[i] for i in ids] == ["sent"] * 5 + ["claimed"] * 2


def test_hints_are_written_in_one_statement_per_column_the_last_window_of_a_row_winning(seeded):
    """remember_delivered sets ``last_reminder`` / ``last_escalation`` on exactly the rows given;
    a row given twice keeps the later window; the other rows keep theirs (None)."""
    from sqlalchemy import event
    from sqlmodel import select

    import models.reminders as reminders
    from models.db import session_scope
    from models.tables import Status

    with session_scope() as session:
        ids = sorted(session.exec(select(Status.id)).all())
        statements = []

        def seen(connection, cursor, statement, *rest):
            statements.append(statement)

        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", seen)
        try:
            reminders.remember_delivered(
                session, [(ids[0], "before-7", None), (ids[1], "due", None), (ids[0], "before-3", None)],
                [(ids[2], "escalation-overdue", None)])
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    with session_scope() as session:
        hints = {row[0]: row[1:] for row in session.exec(select(Status.id, Status.last_reminder, Status.last_escalation))}
    assert [hints[i] for i in ids[:4]] == [("before-3", None), ("due", None), (None, "escalation-overdue"), (None, None)]
    assert sum(1 for h in hints.values() if h != (None, None)) == 3
    assert len([s for s in statements if s.lstrip().upper().startswith("UPDATE STATUS")]) == 2


def test_a_hint_changed_since_the_item_was_planned_is_kept(seeded):
    """Found by a review of things happening at once: a sync that cleared a row's hints during a
    check (an owner changed) had them written over by the check's hints of the old owner. The
    hint is written only where it is still what the check read: None and "before-14" here;
    what the sync wrote stays, also when the check read what an earlier sync wrote (found by a
    review of this change: one fixed value for every sync matched)."""
    from sqlmodel import select

    import models.reminders as reminders
    from models.db import session_scope
    from models.tables import Status

    def hints() -> dict:
        with session_scope() as session:
            return {row[0]: row[1:] for row in session.exec(select(Status.id, Status.last_reminder, Status.last_escalation))}

    with session_scope() as session:
        ids = sorted(session.exec(select(Status.id)).all())[:4]
        reminders.remember_delivered(session, [(ids[1], "before-14", None)], [])
        reminders.forget_hints(session, [ids[3]])  # a first sync
    first_sync = hints()[ids[3]][0]
    with session_scope() as session:
        reminders.forget_hints(session, [ids[2], ids[3]])  # the sync, after the check planned the rows
        reminders.remember_delivered(
            session, [(ids[0], "before-7", None), (ids[1], "before-7", "before-14"), (ids[2], "before-7", None),
                      (ids[3], "before-7", first_sync)],
            [(ids[2], "escalation-overdue", None)])
    now = hints()
    assert [now[i] for i in ids[:2]] == [("before-7", None), ("before-7", None)]
    cleared = now[ids[2]][0]
    assert now[ids[2]] == now[ids[3]] == (cleared, cleared)
    assert cleared.startswith(reminders.CLEARED_HINT) and cleared != first_sync and len(cleared) <= 32


def test_digests_of_any_length_are_marked_by_one_statement_text(seeded):
    """Marks of 3 and of 5 claims, sent and failed, change exactly those claims (and none of
    another run's); on PostgreSQL the four run one statement text per state (the ids as one
    array: psycopg prepares it once), on SQLite one per state and length (an ``IN`` list)."""
    import datetime as dt

    from sqlalchemy import event
    from sqlmodel import select

    import models.reminders as reminders
    from models.db import session_scope
    from models.tables import ReminderLog, Status

    now = dt.datetime(2024, 6, 5, 7, 0, tzinfo=dt.timezone.utc)
    statements = []

    def seen(connection, cursor, statement, *rest):
        if statement.lstrip().upper().startswith("UPDATE REMINDER_LOG"):
            statements.append(statement)

    with session_scope() as session:
        ids = sorted(session.exec(select(Status.id)).all())[:16]
        claims = reminders.claim_many(session, [(i, "mission-jo", "due") for i in ids], run_id="run-1", now=now)
        log_ids = [claims[(i, "mission-jo", "due")].log_id for i in ids]
        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", seen)
        try:
            assert reminders.mark_delivered(session, log_ids[:3], run_id="run-1", now=now) == 3
            assert reminders.mark_delivered(session, log_ids[3:8], run_id="run-1", now=now) == 5
            assert reminders.mark_failed(session, log_ids[8:11], run_id="run-1", reason="timeout") == 3
            assert reminders.mark_failed(session, log_ids[11:16], run_id="run-2", reason="not its claims") == 0
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        states = dict(session.exec(select(ReminderLog.id, ReminderLog.state)).all())
    assert [states[i] for i in log_ids] == ["sent"] * 8 + ["failed"] * 3 + ["claimed"] * 5
    postgresql = engine.dialect.name == "postgresql"
    assert len(set(statements)) == (2 if postgresql else 4)


def test_a_digest_that_fails_to_render_leaves_the_one_delivered_before_it_marked_sent(seeded, outbox, monkeypatch):
    """When rendering the third digest of the first claim batch (10 recipients) raises, the run
    fails, but the two digests delivered before it are marked sent: the next run (claims
    abandoned at once: lease 0) sends the 14 others and neither of the two again."""
    from sqlmodel import func, select

    import flows.reminders as reminders
    from flows.nightly import nightly_status_check
    from models.db import session_scope
    from models.tables import ReminderLog

    def outbox_files() -> Counter:
        return Counter({folder.name: len(list(folder.glob("*.txt"))) for folder in outbox.iterdir()})

    rendered = []
    real_render = reminders.render_digest

    def render_or_fail(recipient, items, as_of, addressee, **options):
        rendered.append(recipient)
        if len(rendered) == 3:
            raise RuntimeError("a template bug")
        return real_render(recipient, items, as_of, addressee, **options)

    monkeypatch.setattr(reminders, "render_digest", render_or_fail)
    assert nightly_status_check(as_of=AS_OF, publish=False, return_state=True).is_failed()
    with session_scope() as session:
        states = dict(session.exec(select(ReminderLog.state, func.count()).group_by(ReminderLog.state)).all())
    assert states == {"sent": 2, "claimed": 8}  # the third and the rest of the batch: claimed, not sent
    first_two = outbox_files()
    assert sum(first_two.values()) == 2 and set(first_two) == set(rendered[:2])

    monkeypatch.setattr(reminders, "render_digest", real_render)
    monkeypatch.setenv("ROADMAP_CLAIM_LEASE_S", "0")
    assert nightly_status_check(as_of=AS_OF, publish=False, return_state=True).is_completed()
    assert sum(outbox_files().values()) == 16 and set(outbox_files().values()) == {1}
    with session_scope() as session:
        assert session.exec(select(func.count()).select_from(ReminderLog).where(ReminderLog.state == "sent")).one() == 16


def test_hints_are_written_once_a_few_are_held_for_every_item_delivered(seeded, outbox, monkeypatch):
    """With one recipient per claim batch and hints written once 4 are held, the 16 digests of
    5 June (one item each) write their hints in 4 statements (after digests 4, 8, 12 and 16,
    nothing left for the end), and every item sent carries its window as its row's hint: the
    next night plans none of them again."""
    from sqlalchemy import event
    from sqlmodel import select

    import flows.reminders as reminders
    from flows.nightly import nightly_status_check
    from models.db import get_engine, session_scope
    from models.tables import ReminderLog, Status

    monkeypatch.setattr(reminders, "CLAIM_RECIPIENTS", 1)
    monkeypatch.setattr(reminders, "HINTS_HELD", 4)
    statements = []

    def seen(connection, cursor, statement, *rest):
        if statement.lstrip().upper().startswith("UPDATE STATUS SET LAST_REMINDER"):
            statements.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        result = nightly_status_check(as_of=AS_OF, publish=False)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert result["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert len(statements) == 4
    with session_scope() as session:
        sent = set(session.exec(select(ReminderLog.status_id, ReminderLog.window).where(ReminderLog.state == "sent")).all())
        hinted = set(session.exec(select(Status.id, Status.last_reminder).where(Status.last_reminder.is_not(None))).all())
    assert len(sent) == 16 and hinted == sent
    assert nightly_status_check(as_of=AS_OF, publish=False)["reminders"] == {"sent": 0, "already_sent": 16, "failed": 0, "escalated": 0, "in_flight": 0}


def test_each_recipient_is_let_go_from_the_night_plan_once_its_digest_is_out(seeded, outbox, monkeypatch):
    """The flow sends with ``consume``: when the k-th of the 16 digests of 5 June is rendered
    (one recipient per claim batch), the plan holds that recipient and the ones after it, in
    order, and nothing once the run is over; all 16 are delivered, each once."""
    import flows.nightly as nightly
    import flows.reminders as reminders

    monkeypatch.setattr(reminders, "CLAIM_RECIPIENTS", 1)
    plans, held = [], []
    real_send, real_render = reminders.send_planned, reminders.render_digest

    def send_and_keep(plan, **kwargs):
        plans.append(plan)
        return real_send(plan, **kwargs)

    def render_and_look(recipient, items, as_of, addressee, **options):
        held.append((recipient, list(plans[0])))
        return real_render(recipient, items, as_of, addressee, **options)

    monkeypatch.setattr(nightly, "send_planned", send_and_keep)
    monkeypatch.setattr(reminders, "render_digest", render_and_look)
    result = nightly.nightly_status_check(as_of=AS_OF, publish=False)
    assert result["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    missions = [f"mission-{c}" for c in CODES]
    assert held == [(mission, missions[k:]) for k, mission in enumerate(missions)]
    assert len(plans) == 1 and plans[0] == {}  # no escalation on 5 June: one plan, emptied
    assert sorted(folder.name for folder in outbox.iterdir()) == missions


def test_a_run_slower_than_the_lease_renews_its_claims_and_leaves_those_taken_over(seeded, outbox, monkeypatch):
    """Found by a fault review: a batch's digests went out long after their claims (channels
    timing out one after another), a second run took the claims over after the lease and both
    sent them. A run now renews the claims it still holds once half the lease has passed, and
    lets go of those another run took over: here run B takes Djibouti's mission's claim while
    the first digest of run A's batch (the Emirates') takes longer than the 2 s lease."""
    import datetime as dt

    from sqlmodel import select

    import flows.reminders as reminders
    from flows.nightly import nightly_status_check
    from models.db import session_scope
    from models.reminders import claim_many, mark_delivered
    from models.tables import ReminderLog

    monkeypatch.setenv("ROADMAP_CLAIM_LEASE_S", "2")
    real_deliver, taken = reminders.deliver, []

    def slow_first(hub, *, tag, **message):
        if tag == "mission-ae":
            time.sleep(2.2)  # past the lease: run A's batch is still to be delivered
            with session_scope() as session:
                keys = [(r.status_id, r.recipient, r.window) for r in session.exec(
                    select(ReminderLog).where(ReminderLog.recipient == "mission-dj"))]
                outcome = claim_many(session, keys, run_id="run-b", now=dt.datetime.now(dt.timezone.utc))
                taken.extend(c.log_id for c in outcome.values() if c.outcome == "claimed")
            with session_scope() as session:  # run B delivers it
                assert mark_delivered(session, taken, run_id="run-b", now=dt.datetime.now(dt.timezone.utc)) == 1
        return real_deliver(hub, tag=tag, **message)

    monkeypatch.setattr(reminders, "deliver", slow_first)
    result = nightly_status_check(as_of=AS_OF, publish=False)
    assert len(taken) == 1
    assert result["reminders"] == {"sent": 15, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}  # Djibouti's is run B's
    assert not (outbox / "mission-dj").exists()
    assert sorted(p.name for p in outbox.iterdir()) == sorted(f"mission-{c}" for c in CODES if c != "dj")
    with session_scope() as session:
        rows = session.exec(select(ReminderLog.recipient, ReminderLog.state, ReminderLog.claimed_by)).all()
    assert Counter((state, by == "run-b") for _, state, by in rows) == {("sent", False): 15, ("sent", True): 1}
    assert ("mission-dj", "sent", "run-b") in rows


def test_a_digest_whose_delivery_outlasts_the_lease_is_counted_by_the_run_that_took_it_over(seeded, outbox,
                                                                                              monkeypatch):
    """Found by a review of things happening at once: a digest delivered for longer than the
    lease was taken over by a second run, which sent it again, and both runs counted it sent
    (17 items for 16 rows). Run A now counts it held by another run, and says so."""
    import datetime as dt

    from sqlmodel import select

    import flows.reminders as reminders
    from flows.nightly import nightly_status_check
    from models.db import session_scope
    from models.reminders import claim_many
    from models.tables import ReminderLog

    monkeypatch.setenv("ROADMAP_CLAIM_LEASE_S", "2")
    real_deliver, taken = reminders.deliver, []

    def slow_first(hub, *, tag, **message):
        if tag == "mission-ae":
            time.sleep(2.2)  # past the lease, while delivering: run B takes this very claim over
            with session_scope() as session:
                keys = [(r.status_id, r.recipient, r.window) for r in session.exec(
                    select(ReminderLog).where(ReminderLog.recipient == "mission-ae"))]
                outcome = claim_many(session, keys, run_id="run-b", now=dt.datetime.now(dt.timezone.utc))
                taken.extend(c.log_id for c in outcome.values() if c.outcome == "claimed")
        return real_deliver(hub, tag=tag, **message)

    monkeypatch.setattr(reminders, "deliver", slow_first)
    warnings = logging.Handler(logging.WARNING)  # on the module's logger: Prefect's setup may stop propagation
    warnings.emit = lambda record: said.append(record.getMessage())
    said: list[str] = []
    reminders.log.addHandler(warnings)
    try:
        result = nightly_status_check(as_of=AS_OF, publish=False)
    finally:
        reminders.log.removeHandler(warnings)
    assert len(taken) == 1
    assert result["reminders"] == {"sent": 15, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 1}
    assert said == ["the digest to mission-ae was delivered after its claim lease: another run took over 1 item of it "
                    "and sends it again"]
    with session_scope() as session:
        assert session.exec(select(ReminderLog.state, ReminderLog.claimed_by).where(
            ReminderLog.recipient == "mission-ae")).one() == ("claimed", "run-b")


def test_an_interrupted_run_lets_go_of_the_claims_it_had_not_begun(seeded, outbox, monkeypatch):
    """Found by a fault review: a run stopped by Ctrl-C left the claims of digests it never tried
    to wait out the 10-minute lease, and the next run counted them nowhere. Interrupted while
    delivering Djibouti's mission's digest (the third of its first batch of ten), the run lets
    go of the seven not begun; the next run, straight after, sends those and the six of the
    second batch, and reports Djibouti's as held by another run."""
    from sqlmodel import select

    import flows.reminders as reminders
    from flows.nightly import nightly_status_check
    from models.db import session_scope
    from models.reminders import LAPSED
    from models.tables import ReminderLog

    class Interrupted(BaseException):
        """Stands for KeyboardInterrupt (which pytest itself would take)."""

    real_deliver = reminders.deliver

    def interrupted_at_djibouti(hub, *, tag, **message):
        if tag == "mission-dj":
            raise Interrupted()
        return real_deliver(hub, tag=tag, **message)

    monkeypatch.setattr(reminders, "deliver", interrupted_at_djibouti)
    with pytest.raises(Interrupted):
        nightly_status_check(as_of=AS_OF, publish=False)
    with session_scope() as session:
        rows = {r.recipient: (r.state, r.claimed_at == LAPSED) for r in session.exec(select(ReminderLog))}
    assert rows == {"mission-ae": ("sent", False), "mission-bh": ("sent", False), "mission-dj": ("claimed", False),
                    **{f"mission-{c}": ("claimed", True) for c in "dz iq jo kw lb ly mr".split()}}

    monkeypatch.setattr(reminders, "deliver", real_deliver)
    kept = []  # the night's reports: its reminders', then its escalations' if any
    real_send = reminders.send_planned

    def send_and_keep(plan, **kwargs):
        kept.append(real_send(plan, **kwargs))
        return kept[-1]

    import flows.nightly

    monkeypatch.setattr(flows.nightly, "send_planned", send_and_keep)
    result = nightly_status_check(as_of=AS_OF, publish=False)
    assert result["reminders"] == {"sent": 13, "already_sent": 2, "failed": 0, "escalated": 0, "in_flight": 1}
    report = kept[0]
    for escalations in kept[1:]:
        report.add_escalations(escalations)
    assert report.in_flight == 1  # Djibouti's: its claim lapses after the lease
    import datetime as dt

    from flows.dashboard import reminders_markdown

    shown = reminders_markdown(dt.datetime(2024, 6, 5, 7, tzinfo=dt.timezone.utc), report.sent, report.already_sent,
                               report.failed, report.escalated, report.messages, report.failures, report.in_flight)
    assert shown.splitlines()[2] == ("13 items sent in 13 digests, 2 already sent, 0 failed; 0 escalated. 1 held by "
                                     "another run (it sends them, or a later check does once its claim lapses).")
    assert Counter(p.parent.name for p in outbox.rglob("*.txt")) == {f"mission-{c}": 1 for c in CODES if c != "dj"}


def _connect(url: str, autocommit: bool = False):
    """A psycopg connection of its own to the PostgreSQL database of ``url`` (a SQLAlchemy URL)."""
    import psycopg
    from sqlalchemy.engine import make_url

    target = make_url(url)
    return psycopg.connect(host=target.host, port=target.port, user=target.username, dbname=target.database,
                           autocommit=autocommit)


def _other_backends(url: str, sql: str) -> None:
    """Run ``sql`` on a connection of its own to the database of ``url`` (PostgreSQL), in
    autocommit; ``{db}`` is the database's name."""
    from sqlalchemy.engine import make_url

    with _connect(url, autocommit=True) as conn:
        conn.execute(sql.format(db=make_url(url).database))


def test_connections_ended_while_digests_go_out_cost_no_digest_and_no_second_copy(postgres_url, outbox, monkeypatch):
    """Found by a fault review: PostgreSQL ended the check's idle connections (a restart, an
    administrator, a proxy's idle timeout) while the fifth digest went out; the mark that came
    next used a dead pooled connection, the run failed and that digest was sent again after the
    lease. The pool now tests a connection before lending it."""
    monkeypatch.setenv("ROADMAP_DATABASE_URL", postgres_url)
    from models.sync import sync_roadmap_file

    sync_roadmap_file(SEED_ROADMAP)
    import flows.reminders as reminders
    from flows.nightly import nightly_status_check

    real_deliver, delivered = reminders.deliver, []

    def deliver_and_end_connections(*args, **kwargs):
        delivered.append(1)
        if len(delivered) == 5:
            _other_backends(postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                          "WHERE datname = '{db}' AND pid <> pg_backend_pid()")
        return real_deliver(*args, **kwargs)

    monkeypatch.setattr(reminders, "deliver", deliver_and_end_connections)
    result = nightly_status_check(as_of=AS_OF, publish=False)
    assert result["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert Counter(p.parent.name for p in outbox.rglob("*.txt")) == {f"mission-{c}": 1 for c in CODES}
    assert nightly_status_check(as_of=AS_OF, publish=False)["reminders"] == {"sent": 0, "already_sent": 16, "failed": 0, "escalated": 0, "in_flight": 0}


def test_a_table_locked_by_another_session_fails_the_check_after_the_lock_timeout(postgres_url, outbox, monkeypatch):
    """Found by a fault review: with the reminder log locked by another session the check waited
    with no end (a scheduled night would hold its deployment's slot for ever). It now fails
    after the lock timeout, sends nothing, and the next night sends all 16."""
    import threading

    import models.db

    monkeypatch.setattr(models.db, "POSTGRES_LOCK_TIMEOUT_S", 1)
    monkeypatch.setenv("ROADMAP_DATABASE_URL", postgres_url)
    from models.sync import sync_roadmap_file

    sync_roadmap_file(SEED_ROADMAP)
    from flows.nightly import nightly_status_check

    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with _connect(postgres_url) as conn:
            conn.execute("LOCK TABLE reminder_log IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(60)
            conn.rollback()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        state = nightly_status_check(as_of=AS_OF, publish=False, return_state=True)
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert state.is_failed() and "lock timeout" in str(state.result(raise_on_failure=False))
    assert waited < 30  # lock waits of 1 s each, not the holder's 60 s
    assert not outbox.exists() or list(outbox.rglob("*.txt")) == []
    assert nightly_status_check(as_of=AS_OF, publish=False)["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}


def test_a_lock_timeout_the_user_set_is_kept(postgres_url, monkeypatch):
    """Found by a review: the 30 s lock timeout set on each connection overrode the one the
    URL's ``options`` (or the role, or the database) gave."""
    from sqlalchemy import text

    from models.db import dispose_engines, get_engine

    with get_engine(postgres_url).connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "30s"
    given = postgres_url + "?options=-c%20lock_timeout%3D5s"
    with get_engine(given).connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "5s"
    _other_backends(postgres_url, "ALTER DATABASE \"{db}\" SET lock_timeout = '2s'")
    dispose_engines()
    with get_engine(postgres_url).connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "2s"
