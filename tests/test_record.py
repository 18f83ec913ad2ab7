"""Recording statuses: the record-status flow's typed parameters, `mark --at`, CSV imports."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema
from sqlmodel import Session, select
from typer.testing import CliRunner

from flows.cli import app
from flows.record import record_status
from models.db import get_engine
from models.tables import Milestone, Status, StatusChange
from tests.conftest import error_lines

runner = CliRunner()
CODES = sorted("ae bh dj dz iq jo kw lb ly mr qa sa sd so tn ye".upper().split())


def _status(url, milestone, code):
    with Session(get_engine(url)) as session:
        return session.exec(
            select(Status).join(Milestone).where(Milestone.key == milestone, Status.member_state_code == code)
        ).one()


def test_record_status_parameters_are_choices_in_the_ui():
    schema = parameter_schema(record_status.fn).model_dump()
    props = schema["properties"]
    assert props["milestone"]["enum"] == [
        "orientation-briefing", "save-the-date", "invitations", "nominations", "travel", "conference",
    ]
    assert props["member_state"]["enum"] == CODES
    assert schema["definitions"]["State"]["enum"] == ["pending", "in_progress", "done", "waived"]
    with pytest.raises(ParameterTypeError, match="milestone: Input should be 'orientation-briefing'"):
        record_status.validate_parameters({"milestone": "visas", "member_state": "JO", "state": "done"})
    with pytest.raises(ParameterTypeError, match="state: Input should be 'pending'"):
        record_status.validate_parameters({"milestone": "invitations", "member_state": "JO", "state": "finished"})


@pytest.mark.usefixtures("prefect_server")
def test_record_status_flow_changes_the_row(seeded):
    result = record_status(milestone="invitations", member_state="JO", state="done", note="NV 2024/051")
    assert result == {"milestone": "invitations", "member_state": "JO", "state": "done", "note": "NV 2024/051"}
    row = _status(seeded, "invitations", "JO")
    assert (row.state, row.note, row.changed_by) == ("done", "NV 2024/051", "prefect-ui")


@pytest.mark.usefixtures("prefect_server")
def test_record_status_flow_takes_when_it_happened_and_refuses_an_empty_author(seeded):
    """Found by a review of the flow: the UI could not say when a change happened (only the
    command line could), and an empty "changed by" was stored."""
    from models.status import StatusError

    record_status(milestone="invitations", member_state="JO", state="done", at="2024-05-28T10:00", changed_by=" focal ")
    row = _status(seeded, "invitations", "JO")
    assert (row.changed_at, row.changed_by) == (dt.datetime(2024, 5, 28, 8, 0, tzinfo=dt.timezone.utc), "focal")
    before = _changes(seeded)
    with pytest.raises(StatusError, match="^changed_by is empty: say who records the change$"):
        record_status(milestone="travel", member_state="JO", state="done", changed_by="  ")
    with pytest.raises(StatusError) as info:
        record_status(milestone="travel", member_state="JO", state="done", changed_by="a\x00b")
    assert str(info.value) == "changed_by 'a\\x00b' contains a NUL character"
    with pytest.raises(StatusError, match="^changed_by is 201 characters long: at most 200$"):
        record_status(milestone="travel", member_state="JO", state="done", changed_by="x" * 201)
    assert (_status(seeded, "travel", "JO").state, _changes(seeded)) == ("pending", before)
    schema = parameter_schema(record_status.fn).model_dump()["properties"]
    assert schema["at"]["description"].startswith("when it happened, ISO-8601 (2024-05-20T10:00); without an offset")


def test_a_change_dated_before_one_already_recorded_is_refused(seeded):
    """Found by a review: ``--at 2024-01-01`` made a ``done`` recorded minutes earlier ``pending``
    again. A date before the roadmap file was loaded is still taken: the file's own states do
    not count as recorded changes."""
    assert runner.invoke(app, ["mark", "invitations", "JO", "in_progress", "--at", "2024-05-20T10:00"]).exit_code == 0
    assert runner.invoke(app, ["mark", "invitations", "JO", "done", "--at", "2024-05-28T10:00", "--by", "ana"]).exit_code == 0
    before = _changes(seeded)
    bad = runner.invoke(app, ["mark", "invitations", "JO", "pending", "--at", "2024-05-21T10:00"])
    assert bad.exit_code == 2, bad.output
    assert error_lines(bad.stderr) == [
        "error: at '2024-05-21T10:00' (2024-05-21 08:00 UTC) is before the change already recorded (done at "
        "2024-05-28 08:00 UTC by "
        "cli:ana): it would replace it as the current state; record it with a later time, or without one (now)"]
    assert (_status(seeded, "invitations", "JO").state, _changes(seeded)) == ("done", before)
    # save-the-date is "done" from the roadmap file, loaded today: a date in 2024 is still taken.
    assert runner.invoke(app, ["mark", "save-the-date", "JO", "waived", "--at", "2024-04-16T10:00"]).exit_code == 0


def test_a_milestone_the_named_roadmap_lacks_is_named(seeded, tmp_path):
    """Found by a review: the member state was blamed ("unknown member state 'JO'") for a
    milestone that another roadmap has and the named one does not."""
    import yaml

    from tests.conftest import SEED_ROADMAP

    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    data.update(slug="second-2025", milestones=[m for m in data["milestones"] if m["key"] == "orientation-briefing"]
                + [dict(key="visas", title="Visas", owner="office", deadline="2024-06-20")])
    path = tmp_path / "second-2025.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert runner.invoke(app, ["sync", str(path)]).exit_code == 0
    bad = runner.invoke(app, ["mark", "visas", "JO", "done", "--roadmap", "gcm-arab-2024"])
    assert bad.exit_code == 2, bad.output
    assert error_lines(bad.stderr) == [
        "error: roadmap 'gcm-arab-2024' has no milestone 'visas': expected one of conference, invitations, "
        "nominations, orientation-briefing, save-the-date, travel"]


def test_mark_at_without_offset_is_read_in_the_owners_zone(seeded):
    # Invitations are mission-owned: Geneva time. 28 May 2024 10:00 in Geneva is 08:00 UTC.
    result = runner.invoke(app, ["mark", "invitations", "JO", "done", "--at", "2024-05-28T10:00"])
    assert result.exit_code == 0, result.output
    assert _status(seeded, "invitations", "JO").changed_at == dt.datetime(2024, 5, 28, 8, 0, tzinfo=dt.timezone.utc)
    # Nominations are office-owned: Amman time (UTC+3).
    assert runner.invoke(app, ["mark", "nominations", "JO", "in_progress", "--at", "2024-06-03T10:00"]).exit_code == 0
    assert _status(seeded, "nominations", "JO").changed_at == dt.datetime(2024, 6, 3, 7, 0, tzinfo=dt.timezone.utc)
    bad = runner.invoke(app, ["mark", "travel", "JO", "done", "--at", "3 June"])
    assert bad.exit_code == 2 and "not an ISO-8601 timestamp: '3 June'" in bad.stderr


def test_mark_at_a_future_time_is_refused_and_changes_nothing(seeded):
    """Found by a bad-input review: a change dated next year was recorded."""
    tomorrow = pendulum.now("UTC").add(days=1).replace(microsecond=0)
    before = _changes(seeded)
    bad = runner.invoke(app, ["mark", "travel", "JO", "done", "--at", tomorrow.isoformat()])
    assert bad.exit_code == 2, bad.output
    assert error_lines(bad.stderr) == [
        f"error: at {tomorrow.isoformat()!r} is in the future ({tomorrow.format('YYYY-MM-DD HH:mm')} UTC): "
        "record what has happened, when it happened"]
    assert (_status(seeded, "travel", "JO").state, _changes(seeded)) == ("pending", before)
    # A minute ahead is within the clocks' slack (models.status.FUTURE_SLACK).
    soon = pendulum.now("UTC").add(minutes=1).isoformat()
    assert runner.invoke(app, ["mark", "travel", "JO", "done", "--at", soon]).exit_code == 0


def _changes(url) -> int:
    with Session(get_engine(url)) as session:
        return len(session.exec(select(StatusChange)).all())


def test_csv_import_is_all_or_nothing_and_names_the_first_bad_line(seeded, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(
        "\ufeffmilestone,member_state,state,note\n"
        "invitations,JO,done,NV 2024/051\n"
        "invitations,tn,done,\"NV 2024/047, signed\"\n"
        "nominations,JO,in_progress,\n",
        encoding="utf-8",
    )
    before = _changes(seeded)
    result = runner.invoke(app, ["import-statuses", str(good)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"imported 3 statuses from {good}"
    assert _changes(seeded) == before + 3
    one = tmp_path / "one.csv"
    one.write_text("milestone,member_state,state\ninvitations,LB,done\n", encoding="utf-8")
    result = runner.invoke(app, ["import-statuses", str(one)])
    assert result.stdout.strip() == f"imported 1 status from {one}"  # was "1 statuses"
    before += 1
    assert _status(seeded, "invitations", "TN").note == "NV 2024/047, signed"

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "milestone,member_state,state\ninvitations,DZ,done\ninvitations,BH,done\ninvitations,XX,done\ninvitations,KW,done\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["import-statuses", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: line 4: unknown member state 'XX'" in result.stderr
    assert _changes(seeded) == before + 3  # nothing of bad.csv was recorded
    assert _status(seeded, "invitations", "DZ").state == "pending"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("milestone,state\ninvitations,done\n", "line 1: missing column(s) member_state"),
        ("milestone,member_state,state,colour\n", "line 1: unknown column(s) 'colour'"),
        ("milestone,member_state,state,\ninvitations,JO,done,\n", "line 1: unknown column(s) ''"),
        ("milestone,member_state,state,state\ninvitations,JO,done,pending\n", "line 1: column(s) given twice: state"),
        ("milestone,member_state,state\ninvitations,,done\n", "line 2: column 'member_state' is empty"),
        ("milestone,member_state,state\ninvitations,JO,done,extra\n", "line 2: more values than columns"),
        ("milestone,member_state,state\ninvitations,JO,finished\n", "line 2: unknown state 'finished'"),
        ("milestone,member_state,state\ninvitations,JO,in progress!\n", "line 2: unknown state 'in progress!'"),
        # Found by a coordinator's walkthrough: a semicolon-separated export was refused without why.
        ("milestone;member_state;state\ninvitations;JO;done\n",
         "line 1: missing column(s) milestone, member_state, state (header: ['milestone;member_state;state']) (the file is "
         'separated by semicolons: save it as "CSV UTF-8 (comma delimited)")'),
        # Found by a bad-input review: an unclosed quote made the rest of the file one value.
        ('milestone,member_state,state,note\ninvitations,JO,done,"NV 2024/051\ninvitations,TN,done,\n',
         "line 2: a quoted value of the record from this line on is never closed"),
        ('milestone,member_state,state,note\ninvitations,JO,done,"NV" 2024\n',
         'line 2: text after the closing quote of a value of the record from this line on (write a quote inside a '
         'quoted value as two: "")'),
        ('milestone,member_state,"state\n', "line 1: a quoted value of the record from this line on is never closed"),
        # Found by bad-input reviews: the line named was where a record ends, counting the empty
        # lines the reader skips.
        ("milestone,member_state,state\n\n\ninvitations,JO,finished\n", "line 4: unknown state 'finished'"),
        ('milestone,member_state,state,note\ninvitations,TN,done,"two\nlines"\n\r\ninvitations,JO,finished,\n',
         "line 5: unknown state 'finished'"),
        ('milestone,member_state,state,note\ninvitations,JO,finished,"two\n\nlines"\n', "line 2: unknown state 'finished'"),
        ('milestone,member_state,state,note\ninvitations,TN,done,\n\ninvitations,JO,done,"NV\n',
         "line 4: a quoted value of the record from this line on is never closed"),
    ],
)
def test_csv_errors_name_the_line(seeded, tmp_path, content, message):
    path = tmp_path / "s.csv"
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["import-statuses", str(path)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert _status(seeded, "invitations", "JO").state == "pending"


def test_a_folder_given_as_a_file_is_one_error_line(seeded, tmp_path):
    """Found by a bad-input review: a folder gave IsADirectoryError tracebacks."""
    result = runner.invoke(app, ["import-statuses", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path}: cannot read file: Is a directory"
    (tmp_path / "sub.yaml").mkdir()
    result = runner.invoke(app, ["sync", str(tmp_path)])
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        f"error: {tmp_path / 'sub.yaml'}: cannot read file: Is a directory"]


def test_states_are_taken_as_people_write_them(seeded, tmp_path):
    """Found by a coordinator's walkthrough: "Done", as spreadsheets capitalise it, was refused.
    A state is read in any case, with a space or hyphen for its underscore, by ``mark`` and by a
    CSV import; what is stored is the state's own value."""
    result = runner.invoke(app, ["mark", "invitations", "JO", "Done"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "invitations JO: done"
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("milestone,member_state,state\ninvitations,TN,In progress\ninvitations,LB, WAIVED \n"
                     "invitations,DZ,in-progress\n", encoding="utf-8")
    result = runner.invoke(app, ["import-statuses", str(sheet)])
    assert result.exit_code == 0, result.output
    assert [_status(seeded, "invitations", code).state for code in ("JO", "TN", "LB", "DZ")] == [
        "done", "in_progress", "waived", "in_progress"]


def test_headers_and_roadmap_slugs_are_taken_as_people_write_them(seeded, tmp_path):
    """Found by a review of the state words: a spreadsheet's "Milestone,Member State,State"
    header and a roadmap written "GCM-ARAB-2024" were refused. Headers are read in any case, a
    space for the underscore; a roadmap slug as the roadmap file's is (``normalise_slug``)."""
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("Milestone,Member State,STATE,Roadmap\ninvitations,JO,done,GCM-ARAB-2024\n", encoding="utf-8")
    result = runner.invoke(app, ["import-statuses", str(sheet)])
    assert result.exit_code == 0, result.output
    marked = runner.invoke(app, ["mark", "invitations", "TN", "done", "--roadmap", " Gcm Arab 2024 "])
    assert marked.exit_code == 0, marked.output
    assert [_status(seeded, "invitations", code).state for code in ("JO", "TN")] == ["done", "done"]
    unknown = runner.invoke(app, ["mark", "invitations", "LB", "done", "--roadmap", "GCM-ARAB-2025"])
    assert unknown.exit_code == 2 and "unknown roadmap 'gcm-arab-2025'" in unknown.stderr


def test_csv_at_column_is_when_it_happened_in_the_owners_zone(seeded, tmp_path):
    """Found by a mutation review: no test failed when the CSV's ``at`` column was ignored (the
    change recorded as now). JO's invitations are the mission's: 10:00 without an offset is
    Geneva's (UTC+2 in May 2024)."""
    dated = tmp_path / "dated.csv"
    dated.write_text("milestone,member_state,state,at\ninvitations,JO,done,2024-05-28T10:00\n", encoding="utf-8")
    result = runner.invoke(app, ["import-statuses", str(dated)])
    assert result.exit_code == 0, result.output
    assert _status(seeded, "invitations", "JO").changed_at == dt.datetime(2024, 5, 28, 8, 0, tzinfo=dt.timezone.utc)


def test_two_people_recording_one_row_at_once_are_written_one_after_the_other(postgres_url):
    """Found by a review of things happening at once: two ``roadmap mark`` of one row at once on
    PostgreSQL both read "pending", and the history said pending -> done, then pending ->
    in_progress. The second now waits for the first to commit and starts from its "done"."""
    import threading
    import time

    from sqlmodel import select

    from models.db import session_scope
    from models.status import record_status
    from models.sync import sync_roadmap_file
    from models.tables import Milestone, Status, StatusChange
    from tests.conftest import SEED_ROADMAP

    sync_roadmap_file(SEED_ROADMAP, postgres_url)
    first_recorded, errors = threading.Event(), []

    def alice() -> None:
        try:
            with session_scope(postgres_url) as session:
                record_status(session, milestone="invitations", member_state="JO", state="done", changed_by="cli:alice")
                first_recorded.set()
                time.sleep(1.0)  # still uncommitted while Bob records
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            first_recorded.set()

    thread = threading.Thread(target=alice)
    thread.start()
    first_recorded.wait(30)
    with session_scope(postgres_url) as session:
        record_status(session, milestone="invitations", member_state="JO", state="in_progress", changed_by="cli:bob")
    thread.join(30)
    assert errors == []
    with session_scope(postgres_url) as session:
        history = session.exec(select(StatusChange.old_state, StatusChange.new_state, StatusChange.changed_by)
                               .join(Status).join(Milestone).where(Milestone.key == "invitations",
                                                                   Status.member_state_code == "JO")
                               .order_by(StatusChange.id)).all()
    assert history == [("pending", "done", "cli:alice"), ("done", "in_progress", "cli:bob")]
