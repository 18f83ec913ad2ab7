"""Alembic migrations on SQLite and PostgreSQL: upgrade keeps every row, models match migrations,
concurrent upgrades of one fresh database serialize, and ``create_all`` databases are adopted."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import queue

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel, select

from models.migrate import INITIAL_REVISION, current_revision, head_revision, upgrade
from tests.conftest import SEED_ROADMAP

UTC = dt.timezone.utc

#: Primary key of each table, to read rows in a stable order.
TABLE_KEYS = {
    "roadmap": "id",
    "member_state": "code",
    "milestone": "id",
    "status": "id",
    "status_change": "id",
    "reminder_log": "id",
    "agenda_session": "id",
}


def _plain_engine(url: str):
    """An engine with none of models.db's set-up: plain SQL on the database as it is."""
    return create_engine(url, poolclass=NullPool)


def _at(conn, iso: str):
    """A UTC instant bound the way UTCDateTime stores it: naive UTC text on SQLite, aware on PostgreSQL."""
    moment = dt.datetime.fromisoformat(iso).replace(tzinfo=UTC)
    if conn.dialect.name == "sqlite":
        return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return moment


def _json(conn, param: str) -> str:
    return f"CAST(:{param} AS JSON)" if conn.dialect.name == "postgresql" else f":{param}"


def _insert_rows_at_0001(url: str) -> None:
    """Fill a database at revision 0001 with plain SQL (the models are at head and cannot).

    Ids come from the database (as the application's inserts get them), read back with RETURNING.
    """
    engine = _plain_engine(url)
    with engine.begin() as conn:
        roadmap_id = conn.execute(
            text(
                "INSERT INTO roadmap (slug, title, title_ar, coordinator_timezone, coordinator_country,"
                " event_timezone, source_file, loaded_at)"
                " VALUES ('legacy-2023', 'Legacy roadmap', 'خارطة', 'Africa/Cairo', 'EG', 'Africa/Cairo',"
                " 'roadmaps/legacy.yaml', :loaded_at) RETURNING id"
            ),
            {"loaded_at": _at(conn, "2024-05-27T08:00:00")},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO member_state (code, name, name_ar, timezone, mission_name, mission_timezone,"
                " office_name, office_timezone, weekend_override, weekend_source)"
                f" VALUES (:code, :name, '', :tz, :mission, 'Europe/Zurich', :office, :tz, {_json(conn, 'weekend')}, :source)"
            ),
            [
                {"code": "JO", "name": "Jordan (old name)", "tz": "Asia/Amman", "mission": "Mission of Jordan",
                 "office": "IOM Jordan", "weekend": None, "source": ""},
                {"code": "LY", "name": "Libya (old name)", "tz": "Africa/Tripoli", "mission": "Mission of Libya",
                 "office": "IOM Libya", "weekend": "[4, 5]", "source": "decree"},
            ],
        )
        milestone_id = conn.execute(
            text(
                "INSERT INTO milestone (roadmap_id, key, title, title_ar, owner, deadline_rule, opens_rule,"
                " due_date, opens_date, depends_on, reminder_days, overdue_every_days, non_working_day, position, active)"
                " VALUES (:roadmap_id, 'invitations', 'Invitations sent', '', 'coordinator', 'end of May 2024', NULL,"
                f" :due, NULL, {_json(conn, 'depends')}, {_json(conn, 'days')}, 3, 'none', 0, :active) RETURNING id"
            ),
            {"roadmap_id": roadmap_id, "due": dt.date(2024, 5, 31), "depends": "[]", "days": "[14, 7, 0]", "active": True},
        ).scalar_one()
        insert_status = text(
            "INSERT INTO status (milestone_id, member_state_code, state, deadline, opens_at, owner_timezone,"
            " changed_at, changed_by, note)"
            " VALUES (:milestone_id, :code, :state, :deadline, NULL, 'Africa/Cairo', :changed_at, :by, :note)"
            " RETURNING id"
        )
        jordan_id = conn.execute(
            insert_status,
            {"milestone_id": milestone_id, "code": "JO", "state": "done", "deadline": _at(conn, "2024-05-31T20:59:59"),
             "changed_at": _at(conn, "2024-05-20T10:15:00"), "by": "cli:alice", "note": "NV 12/2024"},
        ).scalar_one()
        libya_id = conn.execute(
            insert_status,
            {"milestone_id": milestone_id, "code": "LY", "state": "pending", "deadline": _at(conn, "2024-05-31T21:59:59"),
             "changed_at": _at(conn, "2024-05-01T00:00:00"), "by": "roadmap file", "note": ""},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO status_change (status_id, old_state, new_state, changed_at, changed_by, note)"
                " VALUES (:status_id, 'pending', 'done', :at, 'cli:alice', 'NV 12/2024')"
            ),
            {"status_id": jordan_id, "at": _at(conn, "2024-05-20T10:15:00")},
        )
        conn.execute(
            text(
                'INSERT INTO reminder_log (status_id, recipient, "window", state, attempts, claimed_at,'
                " claimed_by, sent_at, error)"
                " VALUES (:status_id, :recipient, :window, :state, :attempts, :claimed_at, :by, :sent_at, :error)"
            ),
            [
                {"status_id": libya_id, "recipient": "mission-ly", "window": "before-14", "state": "sent",
                 "attempts": 1, "claimed_at": _at(conn, "2024-05-17T03:00:00"), "by": "run-1",
                 "sent_at": _at(conn, "2024-05-17T03:00:02"), "error": ""},
                {"status_id": libya_id, "recipient": "office-ly", "window": "before-14", "state": "failed",
                 "attempts": 2, "claimed_at": _at(conn, "2024-05-17T03:00:00"), "by": "run-1", "sent_at": None,
                 "error": "smtp timeout"},
            ],
        )
    engine.dispose()


def _snapshot(url: str) -> dict[str, list[dict]]:
    """Every row of every table, as plain SQL returns it, in primary key order."""
    engine = _plain_engine(url)
    with engine.connect() as conn:
        rows = {
            table: [dict(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY {key}")).mappings()]
            for table, key in TABLE_KEYS.items()
        }
    engine.dispose()
    return rows


def _differences(url: str) -> list:
    engine = _plain_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    engine.dispose()
    return diff


def test_upgrade_from_0001_keeps_every_row_then_sync_works(database_url):
    from models.db import get_engine
    from models.sync import sync_roadmap_file
    from models.tables import MemberState, Milestone, ReminderLog, Roadmap, Status

    upgrade(database_url, INITIAL_REVISION)
    assert current_revision(database_url) == INITIAL_REVISION
    status_columns = {c["name"] for c in inspect(_plain_engine(database_url)).get_columns("status")}
    assert "last_classification" not in status_columns and "last_checked_at" not in status_columns
    _insert_rows_at_0001(database_url)
    before = _snapshot(database_url)
    assert {table: len(rows) for table, rows in before.items()} == {
        "roadmap": 1, "member_state": 2, "milestone": 1, "status": 2, "status_change": 1, "reminder_log": 2,
        "agenda_session": 0,
    }

    upgrade(database_url)

    assert current_revision(database_url) == head_revision()
    after = _snapshot(database_url)
    for table, rows in before.items():
        assert len(after[table]) == len(rows), table
        for old, new in zip(rows, after[table]):
            assert {name: new[name] for name in old} == old, table
    for row in after["status"]:
        assert row["last_classification"] is None and row["last_checked_at"] is None
        assert row["last_reminder"] is None and row["last_escalation"] is None
        assert row["active"] in (True, 1)  # 0007: existing rows stay active (SQLite reads 1)
        assert set(row) == set(before["status"][0]) | {
            "last_classification", "last_checked_at", "last_reminder", "last_escalation", "active"}
    for row in after["member_state"]:  # 0010: Arabic names made until the file gives them
        assert (row["mission_name_ar"], row["office_name_ar"]) == ("", "")
    (roadmap,) = after["roadmap"]
    assert roadmap["active"] in (True, 1)  # 0008: an existing roadmap stays active
    assert roadmap["coordinator_email"] == ""  # 0009: no mailbox until the file gives one
    assert set(roadmap) == set(before["roadmap"][0]) | {"declared_slug", "active", "coordinator_email"}

    # The models read the migrated rows with their meaning intact (aware UTC instants, JSON lists).
    jordan_id, libya_id = (row["id"] for row in before["status"])
    legacy_roadmap_id = before["roadmap"][0]["id"]
    with Session(get_engine(database_url)) as session:
        jordan = session.get(Status, jordan_id)
        assert (jordan.member_state_code, jordan.state, jordan.note) == ("JO", "done", "NV 12/2024")
        assert jordan.deadline == dt.datetime(2024, 5, 31, 20, 59, 59, tzinfo=UTC)
        assert jordan.last_classification is None and jordan.last_checked_at is None
        assert session.get(MemberState, "LY").weekend_override == [4, 5]
        assert session.get(Milestone, before["milestone"][0]["id"]).reminder_days == [14, 7, 0]
        logs = session.exec(select(ReminderLog).where(ReminderLog.status_id == libya_id).order_by(ReminderLog.id)).all()
        assert [(r.recipient, r.state, r.attempts, r.error) for r in logs] == [
            ("mission-ly", "sent", 1, ""), ("office-ly", "failed", 2, "smtp timeout"),
        ]
        assert logs[0].sent_at == dt.datetime(2024, 5, 17, 3, 0, 2, tzinfo=UTC) and logs[1].sent_at is None
        jordan.last_classification = "done"
        jordan.last_checked_at = dt.datetime(2024, 6, 1, 3, 0, tzinfo=UTC)
        session.add(jordan)
        session.commit()

    report = sync_roadmap_file(SEED_ROADMAP, database_url)
    assert report.created["roadmap"] == 1 and report.created["status"] > 0
    assert report.updated["member_state"] == 2

    with Session(get_engine(database_url)) as session:
        slugs = sorted(r.slug for r in session.exec(select(Roadmap)))
        assert slugs == ["gcm-arab-2024", "legacy-2023"]
        assert session.get(MemberState, "JO").name == "Jordan"
        legacy = session.exec(
            select(Status).join(Milestone).where(Milestone.roadmap_id == legacy_roadmap_id).order_by(Status.id)
        ).all()
        assert [(s.id, s.state, s.member_state_code) for s in legacy] == [
            (jordan_id, "done", "JO"), (libya_id, "pending", "LY"),
        ]
        assert legacy[0].last_checked_at == dt.datetime(2024, 6, 1, 3, 0, tzinfo=UTC)
    assert _snapshot(database_url)["reminder_log"] == after["reminder_log"]


def test_models_and_migrations_agree(database_url):
    upgrade(database_url, INITIAL_REVISION)
    # The check is live: at 0001 it sees the columns 0002, 0003, 0004, 0007, 0008, 0009 and 0010 add, 0005's
    # table and the index 0006 drops.
    differences = _differences(database_url)
    added = sorted((op[2], op[3].name) for op in differences if op[0] == "add_column")
    assert added == [("member_state", "mission_name_ar"), ("member_state", "office_name_ar"), ("roadmap", "active"),
                     ("roadmap", "coordinator_email"), ("roadmap", "declared_slug"),
                     ("status", "active"),
                     ("status", "last_checked_at"), ("status", "last_classification"), ("status", "last_escalation"),
                     ("status", "last_reminder")]
    assert [op[1].name for op in differences if op[0] == "add_table"] == ["published_artifact"]
    assert [op[1].name for op in differences if op[0] == "remove_index"] == ["ix_reminder_log_status_id"]
    upgrade(database_url)
    assert _differences(database_url) == []


def test_database_made_by_create_all_is_stamped_and_upgraded(database_url):
    # A database made by create_all before the last_classification columns: revision 0001's
    # schema without alembic_version.
    upgrade(database_url, INITIAL_REVISION)
    _insert_rows_at_0001(database_url)
    engine = _plain_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    before = _snapshot(database_url)
    assert current_revision(database_url) is None

    upgrade(database_url)

    assert current_revision(database_url) == head_revision()
    after = _snapshot(database_url)
    assert {t: len(r) for t, r in after.items()} == {t: len(r) for t, r in before.items()}
    assert all(row["last_classification"] is None for row in after["status"])
    assert _differences(database_url) == []


def test_database_made_by_current_create_all_is_stamped_head(database_url):
    import models.tables  # noqa: F401

    engine = _plain_engine(database_url)
    SQLModel.metadata.create_all(engine)
    engine.dispose()
    assert current_revision(database_url) is None
    upgrade(database_url)
    assert current_revision(database_url) == head_revision()


def test_get_engine_on_an_empty_database_migrates_it_to_head(database_url):
    from models.db import get_engine

    get_engine(database_url)
    assert current_revision(database_url) == head_revision()
    assert _differences(database_url) == []


def _upgrade_in_child(url: str, barrier, results) -> None:
    """Child process body: wait for the others, then upgrade; report "ok" or the error."""
    try:
        barrier.wait(timeout=120)
        upgrade(url)
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001  (reported to the parent)
        results.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_upgrades_of_a_fresh_database_all_succeed(database_url):
    workers = 4
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    processes = [ctx.Process(target=_upgrade_in_child, args=(database_url, barrier, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    outcomes = []
    try:
        for _ in range(workers):
            outcomes.append(results.get(timeout=240))
    except queue.Empty:
        pass
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
                process.join()
    assert outcomes == ["ok"] * workers
    assert [process.exitcode for process in processes] == [0] * workers
    assert current_revision(database_url) == head_revision()
    assert _differences(database_url) == []


@pytest.mark.parametrize("revision", ["0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010"])
def test_an_unversioned_database_at_each_revision_is_stamped_and_upgraded(database_url, revision):
    """Found by a mutation review: swapping two of the schema markers that tell an unversioned
    database's revision (made by ``create_all`` of that release) failed no test; an upgrade
    then tried to create a table that was there ("published_artifact already exists")."""
    upgrade(database_url, revision)
    engine = _plain_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    assert current_revision(database_url) is None
    upgrade(database_url)
    assert current_revision(database_url) == head_revision() == "0010"
    assert _differences(database_url) == []
