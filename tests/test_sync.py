"""Loading a roadmap: idempotent, keeps recorded statuses, moves deadlines; UTC round trips."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from sqlmodel import Session, SQLModel, func, select

from typer.testing import CliRunner

from flows.cli import app
from models.db import UTCDateTime, get_engine, session_scope
from models.roadmap_file import RoadmapFileError
from models.status import record_status
from models.sync import sync_roadmap_file
from models.tables import Milestone, Status, StatusChange
from tests.conftest import SEED_ROADMAP, error_lines


def _rows(url):
    with Session(get_engine(url)) as session:
        statuses = sorted(
            (s.id, s.milestone_id, s.member_state_code, s.state, s.deadline, s.opens_at, s.changed_at, s.note)
            for s in session.exec(select(Status))
        )
        milestones = sorted((m.id, m.key, m.due_date, m.active) for m in session.exec(select(Milestone)))
    return statuses, milestones


def test_loading_twice_changes_nothing(seeded):
    before = _rows(seeded)
    report = sync_roadmap_file(SEED_ROADMAP)
    assert not report.changed, (report.created, report.updated)
    assert _rows(seeded) == before
    assert len(before[0]) == 96


def test_the_coordinators_mailbox_follows_the_file(seeded, tmp_path):
    """``coordinator.email`` (the seed's last slide) is the roadmap's: a file that changes it or
    leaves it out updates the roadmap and nothing else."""
    from models.tables import Roadmap

    def mailbox() -> str:
        with Session(get_engine(seeded)) as session:
            return session.exec(select(Roadmap.coordinator_email)).one()

    assert mailbox() == "gcmrrarabstates@iom.int"
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    data["coordinator"]["email"] = "gcm.arab@iom.int"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    before = _rows(seeded)
    report = sync_roadmap_file(changed)
    assert (report.updated, report.created, mailbox()) == ({"roadmap": 1}, {}, "gcm.arab@iom.int")
    del data["coordinator"]["email"]
    changed.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert sync_roadmap_file(changed).updated == {"roadmap": 1}
    assert mailbox() == ""
    assert _rows(seeded) == before


def test_a_status_the_file_gives_later_is_recorded_where_no_one_recorded_another(seeded, tmp_path):
    """Found by a review of roadmap changes: a file that said ``status: done`` for a milestone
    already loaded changed nothing, without a word. The file's status and note now go to the
    rows whose state the file set; a row a coordinator recorded keeps it, and the sync says so."""
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="in_progress", changed_by="cli:alice")
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    invitations = next(m for m in data["milestones"] if m["key"] == "invitations")
    invitations.update(status="done", note="Signed invitations sent on 30 May (coordinators' e-mail)")
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    report = sync_roadmap_file(changed)

    assert (report.updated, report.created) == ({"roadmap": 1, "status": 15}, {})  # roadmap: the file's name
    assert report.warnings == [
        "milestone 'invitations': the file's status (done) and note recorded for 15 member states that no one had "
        "recorded otherwise",
        "milestone 'invitations': the file says done; the state recorded for 1 member state is kept "
        "(`roadmap mark` changes it)",
    ]

    def invitation_rows() -> dict:
        with Session(get_engine(seeded)) as session:
            rows = session.exec(select(Status).join(Milestone).where(Milestone.key == "invitations")).all()
            return {r.member_state_code: (r.state, r.note, r.changed_by) for r in rows}

    def history() -> list:
        with Session(get_engine(seeded)) as session:
            return sorted((c.old_state, c.new_state, c.changed_by) for c in session.exec(
                select(StatusChange).join(Status).join(Milestone).where(Milestone.key == "invitations")))

    rows = invitation_rows()
    assert rows.pop("JO") == ("in_progress", "", "cli:alice")
    assert set(rows.values()) == {("done", "Signed invitations sent on 30 May (coordinators' e-mail)", "roadmap file")}
    assert len(rows) == 15
    assert history() == [("pending", "done", "roadmap file")] * 15 + [("pending", "in_progress", "cli:alice")]

    # Taken out of the file again, the status goes back where the file had set it, with its history.
    invitations.pop("status"), invitations.pop("note")
    changed.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    report = sync_roadmap_file(changed)
    assert report.updated == {"status": 15}
    assert report.warnings == ["milestone 'invitations': the file's status (pending) and note recorded for 15 member "
                               "states that no one had recorded otherwise"]
    rows = invitation_rows()
    assert rows.pop("JO") == ("in_progress", "", "cli:alice")
    assert set(rows.values()) == {("pending", "", "roadmap file")}
    assert history().count(("done", "pending", "roadmap file")) == 15
    assert not sync_roadmap_file(changed).changed


def test_a_state_recorded_while_the_sync_runs_is_kept(seeded, tmp_path, monkeypatch):
    """Found by a review of this change: a ``roadmap mark`` committed between the sync's read of
    a row and its write of the file's status was overwritten (PostgreSQL). Stood for here by the
    person's UPDATE on the sync's own connection just before the file's status is written to
    Jordan's invitation: its state and note stay, and the sync counts it as kept."""
    from sqlalchemy import update

    import models.sync

    real = models.sync._restate

    def recorded_first(session, row, ms_spec):
        if row.member_state_code == "JO":
            session.connection().execute(update(Status).where(Status.id == row.id).values(
                state="done", note="NV 2024/117", changed_by="cli:alice"))
        return real(session, row, ms_spec)

    monkeypatch.setattr(models.sync, "_restate", recorded_first)
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    next(m for m in data["milestones"] if m["key"] == "invitations").update(status="in_progress", note="drafting")
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    report = sync_roadmap_file(changed)
    assert report.warnings == [
        "milestone 'invitations': the file's status (in_progress) and note recorded for 15 member states that no one "
        "had recorded otherwise",
        "milestone 'invitations': the file says in_progress; the state recorded for 1 member state is kept "
        "(`roadmap mark` changes it)",
    ]
    with Session(get_engine(seeded)) as session:
        rows = {r.member_state_code: (r.state, r.note, r.changed_by) for r in session.exec(
            select(Status).join(Milestone).where(Milestone.key == "invitations"))}
        history = session.exec(select(func.count()).select_from(StatusChange).where(
            StatusChange.new_state == "in_progress")).one()
    assert rows.pop("JO") == ("done", "NV 2024/117", "cli:alice")
    assert set(rows.values()) == {("in_progress", "drafting", "roadmap file")}
    assert history == 15


def test_a_partys_arabic_name_comes_from_the_file_or_is_made_from_its_member_states(seeded, tmp_path):
    """The Arabic greeting of a digest: ``mission.name_ar`` or ``office.name_ar`` as the file
    gives it; without one, made from the member state's Arabic name (ل + ال written لل), and
    without that, the English name."""
    from models.parties import addressee_names
    from models.tables import MemberState

    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    by_code = {m["code"]: m for m in data["member_states"]}
    by_code["DZ"]["mission"].pop("name_ar")
    by_code["DJ"]["mission"].pop("name_ar")
    by_code["JO"]["office"]["name_ar"] = "مكتب المنظمة الدولية للهجرة في عمّان"
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    report = sync_roadmap_file(changed)
    assert report.updated["member_state"] == 3
    with Session(get_engine(seeded)) as session:
        names = addressee_names(session)
        assert names["mission-ae"] == ("Permanent Mission of the United Arab Emirates to the United Nations Office at "
                                       "Geneva", "البعثة الدائمة للإمارات في جنيف")
        assert names["mission-dz"][1] == "البعثة الدائمة للجزائر"
        assert names["mission-dj"][1] == "البعثة الدائمة لجيبوتي"
        assert names["office-jo"] == ("IOM Jordan country office", "مكتب المنظمة الدولية للهجرة في عمّان")
        assert names["office-dz"][1] == "مكتب المنظمة الدولية للهجرة في الجزائر"
        session.get(MemberState, "DZ").name_ar = ""
        assert addressee_names(session)["mission-dz"] == ("Permanent Mission of Algeria to the United Nations Office "
                                                          "at Geneva",) * 2


def test_moving_a_date_updates_deadlines_and_keeps_statuses(seeded, tmp_path):
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done", note="NV 2024/051")
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    next(m for m in data["milestones"] if m["key"] == "invitations")["deadline"] = "mid-June 2024"
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    report = sync_roadmap_file(moved)

    assert report.updated == {"roadmap": 1, "milestone": 1, "status": 16}
    assert report.created == {}
    with Session(get_engine(seeded)) as session:
        rows = session.exec(
            select(Status).join(Milestone).where(Milestone.key == "invitations").order_by(Status.member_state_code)
        ).all()
        jo = next(r for r in rows if r.member_state_code == "JO")
        assert (jo.state, jo.note) == ("done", "NV 2024/051")
        # Missions keep Geneva time: 15 June 23:59:59 CEST is 21:59:59 UTC.
        assert {r.deadline for r in rows} == {dt.datetime(2024, 6, 15, 21, 59, 59, tzinfo=dt.timezone.utc)}
        assert len(session.exec(select(StatusChange)).all()) == 32 + 1  # seed's done rows + the mark


def test_removed_milestone_is_kept_inactive(seeded, tmp_path):
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    data["milestones"] = [m for m in data["milestones"] if m["key"] != "conference"]
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert sync_roadmap_file(path).warnings == [  # found by a review of roadmap changes: a renamed key was unsaid
        "milestone 'conference' is no longer in the file: its statuses and history are kept, inactive, until the "
        "file lists that key again (a renamed key starts afresh)"]
    with Session(get_engine(seeded)) as session:
        conference = session.exec(select(Milestone).where(Milestone.key == "conference")).one()
        assert conference.active is False
        assert len(session.exec(select(Status).where(Status.milestone_id == conference.id)).all()) == 16


def test_datetime_round_trip_keeps_instant_and_awareness(database_url):
    from sqlalchemy import Column, Integer, MetaData, Table, insert

    engine = get_engine(database_url)
    table = Table("probe", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime()))
    table.create(engine)
    riyadh = dt.datetime(2024, 5, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=1, at=riyadh))
    with engine.connect() as conn:
        back = conn.execute(select(table.c.at)).scalar_one()
    assert back.tzinfo is not None
    assert back == riyadh
    assert back.utcoffset() == dt.timedelta(0)
    assert back.isoformat() == "2024-05-31T20:59:59+00:00"


def test_naive_datetime_is_refused(database_url):
    from sqlalchemy.exc import StatementError

    with pytest.raises(StatementError, match="naive datetime"):
        with session_scope() as session:
            session.add(StatusChange(status_id=1, old_state="pending", new_state="done", changed_at=dt.datetime(2024, 1, 1)))
            session.flush()


def test_metadata_has_no_stray_tables():
    assert sorted(SQLModel.metadata.tables) == [
        "agenda_session", "member_state", "milestone", "published_artifact", "reminder_log", "roadmap", "status",
        "status_change",
    ]


def test_two_slugs_that_normalise_alike_are_rejected(seeded, tmp_path):
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    data["slug"] = "GCM Arab 2024"
    twin = tmp_path / "twin.yaml"
    twin.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    before = _rows(seeded)
    with pytest.raises(RoadmapFileError) as info:
        sync_roadmap_file(twin)
    message = str(info.value)
    assert message.startswith(f"{twin}: slug: normalises to 'gcm-arab-2024', the slug of the roadmap written 'gcm-arab-2024'")
    assert "'GCM Arab 2024'" in message
    assert _rows(seeded) == before
    # The same through `roadmap sync`, beside a good new roadmap: one line, nothing written.
    other = dict(data, slug="other-review")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(app, ["sync", str(tmp_path / "other.yaml"), str(twin)])
    assert result.exit_code == 2, result.output
    assert error_lines(result.stderr) == [f"error: {message}"]
    assert _rows(seeded) == before


def test_deadline_on_a_non_working_day_moves_in_the_owners_calendar(database_url, tmp_path):
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    nominations = next(m for m in data["milestones"] if m["key"] == "nominations")
    nominations.update(deadline="2024-06-14", non_working_day="previous_working_day")  # a Friday
    travel = next(m for m in data["milestones"] if m["key"] == "travel")
    travel.update(deadline="2024-06-15", non_working_day="next_working_day")  # Saturday, Day of Arafah
    path = tmp_path / "rolled.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    sync_roadmap_file(path)
    with Session(get_engine(database_url)) as session:
        rows = session.exec(select(Status, Milestone).join(Milestone)).all()
        local = {
            (m.key, s.member_state_code): s.deadline.astimezone(__import__("zoneinfo").ZoneInfo(s.owner_timezone)).date()
            for s, m in rows
        }
    # Friday is the weekend in Jordan and Saudi Arabia, a working day in Tunisia.
    assert local[("nominations", "JO")] == dt.date(2024, 6, 13)
    assert local[("nominations", "SA")] == dt.date(2024, 6, 13)
    assert local[("nominations", "TN")] == dt.date(2024, 6, 14)
    # After Saturday 15 June: Jordan's Eid al-Adha holidays run to 18 June; Tunisia's too (Sun-Tue).
    assert local[("travel", "JO")] == dt.date(2024, 6, 19)
    assert local[("travel", "TN")] == dt.date(2024, 6, 19)
    assert local[("travel", "LB")] == dt.date(2024, 6, 18)  # Lebanon: Eid al-Adha 16-17 June only


def test_a_folder_sync_reads_yml_files_beside_yaml_files(database_url, tmp_path):
    """Found by bad-input reviews: a folder's ``*.yml`` files, then its ``*.YAML`` ones, were
    ignored without a word. Hidden files (``._a.yaml``, which macOS leaves beside copies) are
    not roadmaps."""
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    folder = tmp_path / "roadmaps"
    folder.mkdir()
    for name, slug in (("b.yaml", "review-b"), ("a.yml", "review-a"), ("C.YAML", "review-c"), ("d.txt", "not-a-roadmap"),
                       ("._a.yaml", "hidden")):
        (folder / name).write_text(yaml.safe_dump(dict(data, slug=slug), allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(app, ["sync", str(folder)])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["review-c", "review-a", "review-b"]
    with session_scope() as session:
        assert session.exec(select(func.count()).select_from(Status)).one() == 3 * 96


#: Every command that reads roadmaps, with arguments that would do it (found by bad-input reviews:
#: mark and import-statuses said "expected one of " and nothing, calendar and report did nothing).
READING_COMMANDS = (["status"], ["check", "--as-of", "2024-05-27T09:00:00+03:00"], ["mark", "invitations", "JO", "done"],
                    ["import-statuses", "statuses.csv"], ["calendar"], ["report", "--out", "reports"])


def _every_reading_command_fails(problem: str) -> None:
    """Run each of :data:`READING_COMMANDS`: each exits 2 with one line, ``problem`` and the hint."""
    for command in READING_COMMANDS:
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert error_lines(result.stderr) == [
            f"error: {problem}: load one first with `roadmap sync roadmaps/` (or set ROADMAP_DATABASE_URL to the "
            "database that has them)"], command


def test_an_empty_database_is_one_error_line_with_a_hint(database_url):
    with session_scope():  # made, with its tables, and empty
        pass
    _every_reading_command_fails(f"no roadmap in the database ROADMAP_DATABASE_URL={database_url}")


def test_a_mistyped_sqlite_file_is_one_error_line_and_no_new_file(tmp_path, monkeypatch):
    """Found by a bad-input review: a mistyped database file name made an empty database there."""
    monkeypatch.chdir(tmp_path)
    for url, shown in ((f"sqlite:///{tmp_path}/roadmpa.db", f"sqlite:///{tmp_path}/roadmpa.db"),
                       ("sqlite:///roadmpa.db", f"sqlite:///roadmpa.db (in the working folder {tmp_path})")):
        monkeypatch.setenv("ROADMAP_DATABASE_URL", url)
        _every_reading_command_fails(f"no database file at ROADMAP_DATABASE_URL={shown}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # A SQLite URI names its file otherwise, and is read (found by a bad-input review: it was refused).
    monkeypatch.setenv("ROADMAP_DATABASE_URL", f"sqlite:///{tmp_path}/roadmap.db")
    assert CliRunner().invoke(app, ["sync", str(SEED_ROADMAP)]).exit_code == 0
    monkeypatch.setenv("ROADMAP_DATABASE_URL", f"sqlite:///file:{tmp_path}/roadmap.db?mode=ro&uri=true")
    result = CliRunner().invoke(app, ["calendar", "--member-state", "JO"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("BEGIN:VEVENT") == 6 + 11


def test_a_member_state_changed_by_one_roadmap_warns_of_the_others_that_list_it(seeded, tmp_path):
    """Found by a bad-input review: a member state's data is one row for every roadmap, and a
    second roadmap that gave Jordan another office zone changed it for the first without a word."""
    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    other = dict(data, slug="gcm-arab-2026", title="Third Regional Review")  # another title: not a renamed file
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(other, allow_unicode=True), encoding="utf-8")
    same = CliRunner().invoke(app, ["sync", str(tmp_path / "same.yaml")])
    assert same.exit_code == 0 and error_lines(same.stderr) == [], same.output
    jordan = next(m for m in other["member_states"] if m["code"] == "JO")
    jordan["office"]["timezone"] = "Asia/Riyadh"
    jordan["name_ar"] = "المملكة الأردنية الهاشمية"
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(other, allow_unicode=True), encoding="utf-8")
    changed = CliRunner().invoke(app, ["sync", str(tmp_path / "changed.yaml")])
    assert changed.exit_code == 0, changed.output
    # JO's two office-owned rows of this roadmap take the new zone's end of day.
    assert changed.stdout.strip() == "gcm-arab-2026: created nothing; updated 1 roadmap, 1 member_state, 2 status"
    assert error_lines(changed.stderr) == [
        "warning: gcm-arab-2026: member state JO: name_ar, office.timezone changed; it is one record for every "
        "roadmap that lists it, also gcm-arab-2024, whose files may say otherwise: make them say the same (the file "
        "synced last wins)"]


@pytest.mark.parametrize(("code", "change", "field", "earlier", "value"), [
    ("JO", lambda jordan: jordan["office"].update(timezone="Asia/Riyadh"), "office.timezone", "'Asia/Amman'",
     "'Asia/Riyadh'"),
    # Weekend days as the files write them, not as weekday numbers (found by a bad-input review).
    ("LY", lambda libya: libya["weekend"].update(days=["Thu", "Fri"]), "weekend.days", "['Fri', 'Sat']",
     "['Thu', 'Fri']"),
    ("LY", lambda libya: libya.pop("weekend"), "weekend", "['Fri', 'Sat']", "None"),
], ids=["office-zone", "weekend-days", "no-weekend"])
def test_files_synced_together_that_describe_a_member_state_otherwise_are_refused(
        seeded, tmp_path, code, change, field, earlier, value):
    """Found by a bad-input review: two files of one sync that gave Jordan two office zones were
    both loaded, the last one winning, each warning of the other."""
    import copy

    from tests.test_roadmap_file import _snapshot

    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    other = copy.deepcopy(dict(data, slug="gcm-arab-2026"))
    change(next(m for m in other["member_states"] if m["code"] == code))
    folder = tmp_path / "roadmaps"
    folder.mkdir()
    (folder / "a.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    (folder / "b.yaml").write_text(yaml.safe_dump(other, allow_unicode=True), encoding="utf-8")
    index = [m["code"] for m in other["member_states"]].index(code)
    before = _snapshot(seeded)
    result = CliRunner().invoke(app, ["sync", str(folder)])
    assert result.exit_code == 2, result.output
    assert error_lines(result.stderr) == [
        f"error: {folder / 'b.yaml'}: member_states[{index}].{field}: member state {code} is described otherwise "
        f"in {folder / 'a.yaml'} ({earlier}); it is one record for every roadmap: make the files say the same "
        f"(value: {value})"]
    assert _snapshot(seeded) == before


def test_the_sync_report_counts_agenda_sessions_as_the_file_changed(database_url, tmp_path):
    """Found by bad-input reviews: a first agenda, one changed title and a removed agenda each
    read "updated 1 agenda_session"."""
    import copy

    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    path = tmp_path / "r.yaml"

    def sync(change) -> str:
        edited = copy.deepcopy(data)
        change(edited)
        path.write_text(yaml.safe_dump(edited, allow_unicode=True), encoding="utf-8")
        result = CliRunner().invoke(app, ["sync", str(path)])
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    assert sync(lambda d: None) == (
        "gcm-arab-2024: created 1 roadmap, 16 member_state, 6 milestone, 96 status, 11 agenda_session; updated nothing")
    assert sync(lambda d: d["agenda"][3].update(title="Panel 2, renamed")) == (
        "gcm-arab-2024: created nothing; updated 1 agenda_session")
    assert sync(lambda d: d["agenda"].__setitem__(-1, dict(d["agenda"][-1], start="17:05", end="17:10"))) == (
        "gcm-arab-2024: created 1 agenda_session; updated 1 agenda_session; removed 1 agenda_session")  # title back
    assert sync(lambda d: d.pop("agenda")) == "gcm-arab-2024: created nothing; updated nothing; removed 11 agenda_session"


def test_a_retired_roadmap_comes_back_when_its_file_is_named_not_when_its_folder_is_synced(database_url, tmp_path):
    """Found by a review of ``roadmap retire``: ``roadmap sync roadmaps/`` brought a held
    conference back without a word, its reminders with it."""
    from models.tables import Roadmap

    folder = tmp_path / "roadmaps"
    folder.mkdir()
    seed = folder / "gcm-arab-2024.yaml"
    seed.write_text(SEED_ROADMAP.read_text(encoding="utf-8"), encoding="utf-8")

    def run(*args):
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout.strip(), error_lines(result.stderr)

    def active() -> bool:
        with Session(get_engine(database_url)) as session:
            return session.exec(select(Roadmap.active).where(Roadmap.slug == "gcm-arab-2024")).one()

    run("sync", str(folder))
    run("retire", "gcm-arab-2024")
    assert run("sync", str(folder)) == ("gcm-arab-2024: created nothing; updated nothing", [
        f"warning: gcm-arab-2024: is retired and stays retired (`roadmap sync {seed}`, the file named, checks it "
        "again)"])
    assert active() is False
    renamed = folder / "v2.yaml"
    renamed.write_text(seed.read_text(encoding="utf-8").replace("slug: gcm-arab-2024\n", "slug: gcm-arab-2024-v2\n"),
                       encoding="utf-8")
    run("sync", str(renamed))  # the new slug, while the old one is retired: no twin to warn of
    assert run("sync", str(seed)) == ("gcm-arab-2024: created nothing; updated 1 roadmap", [
        "warning: gcm-arab-2024: was retired: it is checked again (`roadmap retire gcm-arab-2024` retires it again)",
        "warning: gcm-arab-2024: roadmap 'gcm-arab-2024-v2' has the same title or file and is still checked: if this "
        "one replaces it, `roadmap retire gcm-arab-2024-v2`"])
    assert active() is True


def test_retire_takes_a_slug_as_written_and_refuses_a_missing_database_file(seeded, tmp_path, monkeypatch):
    """Found by a review of ``roadmap retire``: "GCM-ARAB-2024" was an unknown roadmap, and a
    mistyped SQLite file name made an empty database there."""
    done = CliRunner().invoke(app, ["retire", "GCM-ARAB-2024"])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("gcm-arab-2024: retired;")
    missing = tmp_path / "roadmpa.db"
    monkeypatch.setenv("ROADMAP_DATABASE_URL", f"sqlite:///{missing}")
    refused = CliRunner().invoke(app, ["retire", "gcm-arab-2024"])
    assert refused.exit_code == 2
    assert error_lines(refused.stderr) == [
        f"error: no database file at ROADMAP_DATABASE_URL=sqlite:///{missing}: load one first with `roadmap sync "
        "roadmaps/` (or set ROADMAP_DATABASE_URL to the database that has them)"]
    assert not missing.exists()


def test_a_sync_refused_by_a_concurrent_syncs_rows_loads_again_then_fails_in_one_line(database_url, monkeypatch):
    """Found by a review of things happening at once: three first syncs at once on PostgreSQL,
    two ended in a 300-line ``UniqueViolation`` traceback. The unique key refusing a row another
    sync committed first (stood for here by the first call raising it) rolls everything back;
    the sync loads again, and says so in one line if refused twice."""
    from sqlalchemy.exc import IntegrityError

    import models.sync

    real, calls = models.sync.upsert_roadmap, []

    def refused_first(session, spec, **kwargs):
        calls.append(spec.slug)
        if len(calls) == 1:
            real(session, spec, **kwargs)
            raise IntegrityError("INSERT INTO roadmap ...", {}, Exception('duplicate key value violates unique '
                                                                          'constraint "ix_roadmap_slug"'))
        return real(session, spec, **kwargs)

    monkeypatch.setattr(models.sync, "upsert_roadmap", refused_first)
    result = CliRunner().invoke(app, ["sync", str(SEED_ROADMAP)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ("gcm-arab-2024: created 1 roadmap, 16 member_state, 6 milestone, 96 status, "
                             "11 agenda_session; updated nothing\n")
    assert calls == ["gcm-arab-2024"] * 2
    with Session(get_engine(database_url)) as session:
        assert session.exec(select(func.count()).select_from(Status)).one() == 96

    def always_refused(session, spec, **kwargs):
        raise IntegrityError("INSERT INTO roadmap ...", {}, Exception('duplicate key value violates unique constraint'))

    monkeypatch.setattr(models.sync, "upsert_roadmap", always_refused)
    result = CliRunner().invoke(app, ["sync", str(SEED_ROADMAP)])
    assert result.exit_code == 2
    assert error_lines(result.stderr) == ["error: a unique key refused the sync twice; nothing was written (another "
                                          "sync writing the same rows at the same time? run it again): duplicate key "
                                          "value violates unique constraint"]
