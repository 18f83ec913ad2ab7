"""What coordinators see in the Prefect UI: the run graph, the artifacts and the events, read back
from a real Prefect test server."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

from flows.nightly import nightly_status_check
from models.db import session_scope
from models.status import record_status

AS_OF = "2024-06-05T09:00:00+02:00"
SLUG = "gcm-arab-2024"

pytestmark = pytest.mark.usefixtures("prefect_server")


def _latest_artifacts(client, keys: list[str]) -> dict:
    found = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    return {a.key: a for a in found}


def _events(client, name: str, expected: int, since, timeout_s: float = 30.0) -> list:
    """Events of this test (the Prefect server is shared by the session), polled until ``expected`` arrive."""
    deadline = time.monotonic() + timeout_s
    events = []
    while time.monotonic() < deadline:
        page = client.read_events(
            filter=EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=[name]),
                resource=EventResourceFilter(labels={"roadmap.slug": [SLUG]}),
            ),
            limit=50,
        )
        events = page.events
        if len(events) >= expected:
            break
        time.sleep(0.5)
    return events


def test_run_graph_artifacts_and_events(seeded, outbox):
    import pendulum

    since = pendulum.now("UTC")
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done", note="NV 2024/051")
    state = nightly_status_check(as_of=AS_OF, return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        names = sorted(t.name for t in task_runs)
        # One task run per milestone, named after it; then one to send, three to publish. Never one per row.
        milestone_runs = sorted(
            n for n in names if n.endswith(f" [{SLUG}]") and not n.startswith(("dashboard", "summary", "timeline and calendars"))
        )
        assert milestone_runs == sorted(
            f"{key} [{SLUG}]"
            for key in ("orientation-briefing", "save-the-date", "invitations", "nominations", "travel", "conference")
        )
        assert len(names) == 10
        assert sum(n.startswith("send-reminders") for n in names) == 1
        assert {f"dashboard [{SLUG}]", f"summary [{SLUG}]", f"timeline and calendars [{SLUG}]"} <= set(names)

        kinds = ("matrix", "progress", "summary", "timeline", "calendars")
        artifacts = _latest_artifacts(client, [f"{SLUG}-{kind}" for kind in kinds])
        assert set(artifacts) == {f"{SLUG}-{kind}" for kind in kinds}
        assert artifacts[f"{SLUG}-timeline"].data.count("data:image/png;base64,") == 1
        assert "invitations 6% done" in artifacts[f"{SLUG}-timeline"].data  # 1 of 16
        assert artifacts[f"{SLUG}-calendars"].data.endswith("/calendars/gcm-arab-2024/all.ics)")
        # 32 rows done by the seed (orientation, save-the-date) + Jordan's invitation, of 96.
        assert artifacts[f"{SLUG}-progress"].data == pytest.approx(34.4)
        import json

        matrix = artifacts[f"{SLUG}-matrix"].data
        matrix = json.loads(matrix) if isinstance(matrix, str) else matrix
        assert [row["member_state"].split()[0] for row in matrix] == sorted(
            "AE BH DJ DZ IQ JO KW LB LY MR QA SA SD SO TN YE".split()
        )
        jordan = next(row for row in matrix if row["member_state"] == "JO Jordan")
        assert jordan["invitations"] == "✅ done · 2024-05-31"
        assert jordan["travel"] == "⛔ blocked · 2024-06-30"
        algeria = next(row for row in matrix if row["member_state"] == "DZ Algeria")
        assert algeria["invitations"] == "🔴 overdue by 3 working days · 2024-05-31"
        summary = artifacts[f"{SLUG}-summary"].data
        assert "## Overdue (15)" in summary
        assert summary.index("## Overdue") < summary.index("## Due this week") < summary.index("## Blocked")
        assert "| invitations | DZ Algeria | 2024-05-31 23:59 Europe/Zurich | overdue by 5 days (3 working days) |" in summary
        assert "- Newly done (33)" in summary
        # Done first, then overdue (found by a mutation review: the order was not pinned).
        assert summary.index("- Newly done (33)") < summary.index("- Newly overdue (15)")
        assert "Eid al-Adha" in summary  # June windows contain Eid al-Adha for the offices

        overdue = _events(client, "roadmap.milestone.overdue", 15, since)
        assert sorted(e.resource["roadmap.member_state"] for e in overdue) == sorted(
            "AE BH DJ DZ IQ KW LB LY MR QA SA SD SO TN YE".split()
        )
        assert {e.resource["roadmap.milestone"] for e in overdue} == {"invitations"}
        # What automations filter on and read (found by a mutation review: neither was pinned).
        algeria = next(e for e in overdue if e.resource["roadmap.member_state"] == "DZ")
        assert algeria.resource.id == "roadmap.status.gcm-arab-2024.invitations.dz"
        assert algeria.payload == {"deadline": "2024-05-31T23:59:59+02:00", "days_left": -5, "working_days_left": -3,
                                   "owner": "mission"}
        roles = {r["prefect.resource.role"] for r in overdue[0].related}
        assert roles >= {"roadmap", "milestone", "member-state"}
        sent = _events(client, "roadmap.reminder.sent", 15, since)
        assert sorted(e.payload["recipient"] for e in sent) == sorted(
            f"mission-{c}" for c in "ae bh dj dz iq kw lb ly mr qa sa sd so tn ye".split()
        )

    # The next run at the same instant: nothing newly overdue, no new events for it.
    nightly_status_check(as_of=AS_OF)
    with get_client(sync_client=True) as client:
        summary = _latest_artifacts(client, [f"{SLUG}-summary"])[f"{SLUG}-summary"].data
        assert "Nothing newly done, waived or overdue." in summary
        time.sleep(2)
        assert len(_events(client, "roadmap.milestone.overdue", 16, since, timeout_s=2)) == 15

    # Rows waived since are listed too (found by a replay of the 2024 campaign: they were in no list).
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="SO", state="waived")
        record_status(session, milestone="invitations", member_state="KW", state="waived")
    nightly_status_check(as_of=AS_OF)
    with get_client(sync_client=True) as client:
        summary = _latest_artifacts(client, [f"{SLUG}-summary"])[f"{SLUG}-summary"].data
        assert "- Newly waived (2): invitations KW, invitations SO" in summary.splitlines()
        assert "Nothing newly" not in summary and "- Newly done" not in summary


def test_a_large_portfolio_is_checked_in_grouped_task_runs_with_the_same_artifacts(seeded, outbox, monkeypatch):
    """Above MILESTONE_TASKS_MAX milestones, one task run checks a group of roadmaps; the
    artifacts say exactly what the per-milestone run graph says."""
    import json

    import flows.nightly as nightly

    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done")
    monkeypatch.setattr(nightly, "MILESTONE_TASKS_MAX", 5)  # the seed has 6 milestones
    state = nightly_status_check(as_of=AS_OF, publish=False, return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        names = sorted(t.name for t in task_runs)
        assert len(names) == 3 and names[2].startswith("send-reminders")  # Prefect suffixes unnamed runs
        # The group's label: its roadmap and first deadline (the seed's orientation briefing).
        assert names[:2] == [f"dashboard [{SLUG}]", f"{SLUG}, first deadline 2024-03-17"]
        artifacts = _latest_artifacts(
            client, [f"{SLUG}-{kind}" for kind in ("matrix", "progress", "summary")] + ["nightly-check-reminders"])
        # Summaries went out with the matrices, before the reminders: failed channels are in the run's report.
        assert "see the `nightly-check-reminders` artifact" in artifacts[f"{SLUG}-summary"].data
        assert "15 items sent in 15 digests, 0 already sent, 0 failed" in artifacts["nightly-check-reminders"].data
        assert artifacts[f"{SLUG}-progress"].data == pytest.approx(34.4)
        assert artifacts[f"{SLUG}-matrix"].type == "table"  # sent as its JSON text (publishing.TableText)
        matrix = artifacts[f"{SLUG}-matrix"].data
        matrix = json.loads(matrix) if isinstance(matrix, str) else matrix
        assert len(matrix) == 16
        jordan = next(row for row in matrix if row["member_state"] == "JO Jordan")
        assert jordan["invitations"] == "✅ done · 2024-05-31"
        # A large portfolio's cells carry no countdown: "June 2024" ends on 30 June in Amman.
        assert jordan["nominations"] == "⚪ upcoming · 2024-06-30"
        assert next(row for row in matrix if row["member_state"] == "DZ Algeria")["travel"] == "⛔ blocked · 2024-06-30"
        assert "## Overdue (15)" in artifacts[f"{SLUG}-summary"].data


def test_dashboards_the_server_refuses_fail_the_run_after_the_reminders_went_out(seeded, outbox, monkeypatch):
    """A large portfolio's dashboards go out in a worker thread while the check goes on. When the
    Prefect server refuses them, the night's reminders still go out (16 digests on 5 June, all
    recorded sent), nothing is recorded as published, and then the run fails."""
    from sqlmodel import func, select

    import flows.nightly as nightly
    import flows.publishing as publishing
    from models.tables import PublishedArtifact, ReminderLog, ReminderState

    def refuse(artifacts):
        raise RuntimeError("the artifact API is down")

    monkeypatch.setattr(nightly, "MILESTONE_TASKS_MAX", 5)  # the seed has 6 milestones
    monkeypatch.setattr(publishing, "_create_all", refuse)
    state = nightly_status_check(as_of=AS_OF, publish=False, return_state=True)
    assert state.is_failed()
    assert sum(len(list(p.glob("*.txt"))) for p in outbox.iterdir()) == 16
    with session_scope() as session:
        states = dict(session.exec(select(ReminderLog.state, func.count()).group_by(ReminderLog.state)).all())
        assert states == {ReminderState.sent.value: 16}
        assert session.exec(select(func.count()).select_from(PublishedArtifact)).one() == 0


def test_list_roadmaps_gives_active_milestones_and_rows_of_every_roadmap(seeded, tmp_path):
    """Roadmaps by slug, with their active milestones in file order and active rows counted: a
    milestone removed from the file (inactive) and its 16 rows are left out."""
    import yaml

    from flows.nightly import RoadmapRef, list_roadmaps
    from models.sync import sync_roadmap_file
    from tests.conftest import SEED_ROADMAP

    data = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    data.update(slug="aa-review", title="An earlier review")
    del data["coordinator"]["email"]
    path = tmp_path / "aa-review.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    sync_roadmap_file(path)
    data["milestones"] = [m for m in data["milestones"] if m["key"] != "conference"]
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    sync_roadmap_file(path)

    seed_keys = ("orientation-briefing", "save-the-date", "invitations", "nominations", "travel", "conference")
    refs = list_roadmaps()
    briefing = dt.date(2024, 3, 17)  # the seed's orientation briefing, its first deadline
    assert [(r.slug, r.title, r.milestones, r.rows, r.first_due, r.coordinator_email) for r in refs] == [
        ("aa-review", "An earlier review", seed_keys[:5], 80, briefing, ""),
        (SLUG, "Second Regional Review of the Global Compact for Migration in the Arab Region", seed_keys, 96, briefing,
         "gcmrrarabstates@iom.int"),
    ]
    assert list_roadmaps([SLUG]) == [RoadmapRef(refs[1].id, SLUG, refs[1].title, seed_keys, 96, briefing,
                                                "gcmrrarabstates@iom.int")]
    assert list_roadmaps(["no-such-roadmap"]) == []


def test_plan_units_groups_whole_roadmaps_by_rows(monkeypatch):
    import flows.nightly as nightly
    from flows.nightly import RoadmapRef, plan_units

    refs = [RoadmapRef(i, f"r{i}", f"R{i}", ("a", "b", "c"), rows) for i, rows in enumerate([40, 50, 30, 90, 10])]
    assert [u.label for u in plan_units(refs[:2])] == ["a [r0]", "b [r0]", "c [r0]", "a [r1]", "b [r1]", "c [r1]"]
    monkeypatch.setattr(nightly, "MILESTONE_TASKS_MAX", 3)
    monkeypatch.setattr(nightly, "GROUP_ROWS", 100)
    units = plan_units(refs)
    assert [u.label for u in units] == ["2 roadmaps (r0, r1)", "r2", "2 roadmaps (r3, r4)"]
    assert [u.rows for u in units] == [90, 30, 100]
    assert units[0].work == (("r0", ("a", "b", "c")), ("r1", ("a", "b", "c")))


def test_plan_units_groups_roadmaps_that_share_deadlines(monkeypatch):
    """Groups follow the roadmaps' first deadlines (then slugs), so that roadmaps on one
    timetable share a task run; a roadmap without active milestones is in no group (the flow
    gives it its dashboard; it used to get a second one from its group)."""
    import flows.nightly as nightly
    from flows.nightly import RoadmapRef, plan_units

    monkeypatch.setattr(nightly, "MILESTONE_TASKS_MAX", 3)
    monkeypatch.setattr(nightly, "GROUP_ROWS", 100)
    june, july = dt.date(2024, 6, 1), dt.date(2024, 7, 4)
    refs = [
        RoadmapRef(1, "asia", "Asia", ("a",), 40, july),
        RoadmapRef(2, "arab", "Arab", ("a",), 50, june),
        RoadmapRef(3, "empty", "Empty", (), 0, None),
        RoadmapRef(4, "africa", "Africa", ("a",), 30, july),
        RoadmapRef(5, "europe", "Europe", ("a",), 40, june),
    ]
    units = plan_units(refs)
    assert [u.work for u in units] == [
        (("arab", ("a",)), ("europe", ("a",))),
        (("africa", ("a",)), ("asia", ("a",)))]
    assert [u.label for u in units] == [
        "2 roadmaps (arab, europe), first deadline 2024-06-01",
        "2 roadmaps (africa, asia), first deadline 2024-07-04"]
    assert nightly.roadmaps_label(["arab", "europe", "asia"]) == "3 roadmaps (arab, europe, …)"
    assert [u.rows for u in units] == [90, 70]


def test_content_digest_is_sha256_of_the_utf8_text_whatever_its_size():
    """Hashed in pieces of ``HASH_PIECE`` bytes (under the 2,048 from which hashlib lets go of
    the GIL), the digest is still SHA-256 of the whole text: of bytes as given, of ``str`` as
    UTF-8, of anything else as canonical JSON (sorted keys, non-ASCII kept)."""
    import hashlib

    from flows.dashboard import HASH_PIECE, content_digest

    assert HASH_PIECE < 2048
    for size in (0, 1, HASH_PIECE - 1, HASH_PIECE, HASH_PIECE + 1, 2048, 3 * HASH_PIECE + 5, 60_000):
        content = bytes(i % 251 for i in range(size))
        assert content_digest(content) == hashlib.sha256(content).hexdigest(), size
    text = "🔴 overdue · 2024-05-31 | JO الأردن |\n" * 300  # 4-byte and 2-byte UTF-8 across piece edges
    assert content_digest(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert content_digest({"b": "ب", "a": 1}) == hashlib.sha256('{"a": 1, "b": "ب"}'.encode("utf-8")).hexdigest()
    assert content_digest("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_content_digest_never_hands_hashlib_a_piece_that_releases_the_gil(monkeypatch):
    """Every piece given to ``update`` is shorter than 2,048 bytes (CPython's
    ``HASHLIB_GIL_MINSIZE``): 60,000 bytes go in 30 pieces of 2,047 bytes at most, in order."""
    import hashlib

    from flows.dashboard import content_digest

    real, pieces = hashlib.sha256, []

    class Recording:
        def __init__(self):
            self._hash = real()

        def update(self, data):
            pieces.append(bytes(data))
            self._hash.update(data)

        def hexdigest(self):
            return self._hash.hexdigest()

    monkeypatch.setattr(hashlib, "sha256", Recording)
    content = bytes(i % 251 for i in range(60_000))
    assert content_digest(content) == real(content).hexdigest()
    assert len(pieces) == 30 and max(len(p) for p in pieces) == 2047
    assert b"".join(pieces) == content


def test_status_and_reminder_events_stay_within_the_run_budget(seeded, outbox, monkeypatch):
    """Beyond the per-run budget, one summary event per kind carries the count instead of one event
    per row: 15 rows newly overdue with a budget of 4 give 4 events and a summary of 11."""
    import pendulum

    import flows.nightly as nightly

    monkeypatch.setattr(nightly, "STATUS_EVENTS_PER_RUN", 4)
    monkeypatch.setattr(nightly, "REMINDER_EVENTS_PER_RUN", 6)
    since = pendulum.now("UTC")
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done")
    state = nightly_status_check(as_of=AS_OF, publish=False, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        overdue = _events(client, "roadmap.milestone.overdue", 4, since)
        time.sleep(2)
        assert len(_events(client, "roadmap.milestone.overdue", 5, since, timeout_s=2)) == 4
        assert len(_events(client, "roadmap.reminder.sent", 6, since)) == 6

        def summary(name: str) -> list:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = client.read_events(filter=EventFilter(
                    occurred=EventOccurredFilter(since=since), event=EventNameFilter(name=[name]),
                    resource=EventResourceFilter(id=[f"roadmap.check-run.{run_id}"]),
                ), limit=50).events
                if found:
                    return found
                time.sleep(0.5)
            return []

        assert [e.payload["items_not_emitted_one_by_one"] for e in summary("roadmap.milestone.overdue")] == [11]
        assert [e.payload["items_not_emitted_one_by_one"] for e in summary("roadmap.reminder.sent")] == [9]
        # Newly done: orientation (16 rows: 4 events, 12 counted), then save-the-date (16) and
        # Jordan's invitation (1) counted once the budget is spent.
        assert [e.payload["items_not_emitted_one_by_one"] for e in summary("roadmap.milestone.done")] == [29]
    assert {e.resource["roadmap.milestone"] for e in overdue} == {"invitations"}


def test_a_large_portfolio_republishes_a_dashboard_only_when_it_changes(seeded, outbox, monkeypatch):
    """Grouped mode: a roadmap's matrix, progress and summary go out again only when their content
    changed (or when asked, or when the server lost them); the overview goes out every night."""
    from collections import Counter

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    import flows.nightly as nightly

    monkeypatch.setattr(nightly, "MILESTONE_TASKS_MAX", 5)
    keys = [f"{SLUG}-{kind}" for kind in ("matrix", "progress", "summary")]

    def published_by(as_of: str = AS_OF, **kwargs) -> dict:
        # The run's own artifacts: the server is the session's, and earlier tests' versions of
        # these keys may be more than one page of its answers (200).
        state = nightly_status_check(as_of=as_of, publish=False, return_state=True, **kwargs)
        assert state.is_completed()
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys), flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        published = Counter(a.key for a in found)
        return {key.rsplit("-", 1)[1]: published[key] for key in keys}

    assert published_by() == {"matrix": 1, "progress": 1, "summary": 1}
    # Same instant: only the summary's "Changed since the previous check" section moved.
    assert published_by() == {"matrix": 0, "progress": 0, "summary": 1}
    # A day later nothing changed class (no countdown in the content): nothing goes out.
    assert published_by("2024-06-06T09:00:00+02:00") == {"matrix": 0, "progress": 0, "summary": 0}
    with get_client(sync_client=True) as client:
        overview = _latest_artifacts(client, ["portfolio-overview"])["portfolio-overview"].data
    overview = json.loads(overview) if isinstance(overview, str) else overview
    # 16 member states x 6 milestones: save-the-date and briefing done (32), invitations overdue
    # (16), nominations and travel waiting for them (32), the conference upcoming.
    assert overview == [{
        "roadmap": SLUG, "title": overview[0]["title"], "status rows": "96", "% done": "33.3",
        "🔴 overdue": "16", "🟠 due today": "0", "🟡 due soon": "0", "⛔ blocked": "32",
        "dashboard as of": "2024-06-05",
    }]

    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done")
    assert published_by() == {"matrix": 1, "progress": 1, "summary": 1}
    assert published_by(republish=True) == {"matrix": 1, "progress": 1, "summary": 1}
    # A new or reset Prefect server: the dashboards the database says went out are not there.
    with get_client(sync_client=True) as client:
        for artifact in client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[keys[0]]))):
            client.delete_artifact(artifact.id)
    assert published_by() == {"matrix": 1, "progress": 1, "summary": 1}


def test_a_dashboard_waiting_to_be_published_holds_its_content_packed(database_url):
    """A large portfolio's dashboard whose content changed waits for the Prefect server packed:
    the matrix as the very JSON text a TableArtifact sends, the summary as its markdown, the row
    dicts and the strings let go. Once recorded as published, the same content is not kept."""
    import asyncio

    from prefect.artifacts import TableArtifact

    from flows.dashboard import artifact_key
    from flows.publishing import RoadmapDashboard, TableText, keep_changed, settle, unpack
    from models.published import remember_published
    from models.transactions import in_transaction

    matrix = [{"member_state": "JO Jordan", "invitations": "✅ done · 2024-05-31"},
              {"member_state": "DZ Algeria", "invitations": "🔴 overdue · 2024-05-31"}]

    def dashboard() -> RoadmapDashboard:
        return RoadmapDashboard(slug=SLUG, title="GCM review", rows=2, done=1, matrix=[dict(r) for r in matrix],
                                summary_head="# GCM review\n\n🔴 1 overdue\n", summary_tail="\n## Overdue (1)\n- DZ\n",
                                bars=[], statuses=[])

    d = dashboard()
    summary = d.summary_markdown()
    assert keep_changed([d]) == [d]
    assert set(d.digests) == {"matrix", "progress", "summary"} and set(d.packed) == {"matrix", "summary"}
    assert d.matrix is None and d.summary_head == d.summary_tail == ""
    assert unpack(d.packed["summary"]) == summary
    sent = asyncio.run(TableText(key=artifact_key(SLUG, "matrix"), table_json=unpack(d.packed["matrix"])).aformat())
    assert sent == asyncio.run(TableArtifact(key=artifact_key(SLUG, "matrix"), table=matrix).aformat())
    assert json.loads(sent) == matrix

    at = dt.datetime(2024, 6, 5, 7, tzinfo=dt.timezone.utc)
    in_transaction(lambda session: remember_published(
        session, {artifact_key(SLUG, kind): digest for kind, digest in d.digests.items()}, at))
    again = dashboard()
    assert keep_changed([again]) == []
    assert again.packed == {} and again.matrix is None and again.summary_head == "" and again.found_at == at

    # Settled as soon as it is rendered (the flow does so for each roadmap), the dashboard holds
    # UTF-8 and the same digests: unchanged, nothing is kept; a changed summary alone goes out.
    early = settle(dashboard())
    assert early.matrix is None and early.summary_head == early.summary_tail == ""
    assert early.settled == {"matrix": json.dumps(matrix).encode(), "summary": summary.encode()}
    assert early.digests == d.digests  # d's three kinds, all new when it was first kept
    assert keep_changed([early]) == [] and early.settled == {} and early.packed == {} and early.found_at == at
    changed = dashboard()
    changed.summary_tail = "\n## Overdue (0)\nNone.\n"
    changed_summary = changed.summary_markdown()
    assert keep_changed([settle(changed)]) == [changed] and set(changed.digests) == {"summary"}
    assert changed.settled == {} and set(changed.packed) == {"summary"} and unpack(changed.packed["summary"]) == changed_summary


def _summary_head(as_of: dt.datetime) -> str:
    """The seed roadmap's summary before its failures section, as of ``as_of`` (aware), from its
    rows classified and tallied as the nightly check does."""
    from sqlmodel import select

    from flows.dashboard import summary_parts
    from flows.tally import MilestoneTally
    from models.status import Classifier
    from models.tables import Roadmap

    with session_scope() as session:
        roadmap = session.exec(select(Roadmap).where(Roadmap.slug == SLUG)).one()
        tallies = {}
        for context, rows in Classifier(as_of).iter_classified(session, roadmap):
            tallies.setdefault(context.key, MilestoneTally(SLUG, context.key)).add_rows(context, rows)
    return summary_parts("GCM review", list(tallies.values()), as_of)[0]


def test_summary_lists_most_overdue_first_then_milestone_then_member_state(seeded):
    """The summary's lists, built from the classified rows: on 10 July 2024 the 15 invitations
    still out (40 days overdue in Geneva) come first, member states in code order, then Jordan's
    nominations (10 days overdue in Amman, its invitation done), then the conference (6 days);
    the blocked nominations and travel follow in roadmap order."""
    codes = "AE BH DJ DZ IQ JO KW LB LY MR QA SA SD SO TN YE".split()
    as_of = dt.datetime(2024, 7, 10, 7, tzinfo=dt.timezone.utc)
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done", roadmap=SLUG)
    head = _summary_head(as_of)

    def listed(heading: str) -> list[str]:
        section = head.split(f"## {heading}")[1].split("\n## ")[0]
        return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Milestone")]

    def milestone_and_member_state(line: str) -> tuple[str, str]:
        milestone, member_state = line.removeprefix("| ").split(" | ")[:2]
        return milestone, member_state.split()[0]

    overdue = listed("Overdue (32)")
    assert [milestone_and_member_state(line) for line in overdue] == (
        [("invitations", c) for c in codes if c != "JO"] + [("nominations", "JO")] + [("conference", c) for c in codes])
    # 1 June to 10 July in Geneva, where the missions work: 12 weekend days, no public holiday.
    assert overdue[0] == "| invitations | AE United Arab Emirates | 2024-05-31 23:59 Europe/Zurich | overdue by 40 days (28 working days) |"
    # 1 to 10 July in Amman: Friday 5 and Saturday 6 are the weekend, Sunday 7 Islamic New Year.
    assert overdue[15] == "| nominations | JO Jordan | 2024-06-30 23:59 Asia/Amman | overdue by 10 days (7 working days) |"
    blocked = listed("Blocked (31)")
    assert [milestone_and_member_state(line) for line in blocked] == (
        [("nominations", c) for c in codes if c != "JO"] + [("travel", c) for c in codes])
    assert blocked[0].endswith("| waiting for invitations |")
    assert blocked[15] == blocked[15].split(" | waiting")[0] + " | waiting for nominations |"


def test_the_night_plan_gives_back_every_item_the_tallies_planned(seeded):
    """The reminder plan keeps items column by column and builds each one again when read: on
    10 July 2024 (JO's invitation done) it gives back the 15 missions' invitations, Jordan's
    nominations to its country office and the conference's last window to the coordinators, in
    the tallies' order, each with the view classification gives its row but its note (Emirates'
    note verbale is not kept: no digest shows it); and the coordinators' 16 escalations."""
    from dataclasses import fields

    from sqlmodel import select

    from flows.tally import MilestoneTally, ReminderPlan, claim_keys
    from models.status import Classifier, StatusView
    from models.tables import Roadmap

    as_of = dt.datetime(2024, 7, 10, 7, tzinfo=dt.timezone.utc)
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done", roadmap=SLUG)
        record_status(session, milestone="invitations", member_state="AE", state="in_progress", roadmap=SLUG,
                      note="NV 2024/061")
    night, escalations = ReminderPlan(), ReminderPlan()
    with session_scope() as session:
        roadmap = session.exec(select(Roadmap).where(Roadmap.slug == SLUG)).one()
        for context, rows in Classifier(as_of).iter_classified(session, roadmap):
            tally = MilestoneTally(SLUG, context.key)
            tally.add_rows(context, rows)
            night.merge(tally.reminders)
            escalations.merge(tally.escalations)
            assert len(tally.reminders) == 0 and len(tally.escalations) == 0  # taken by the night's plans
        views = {v.status_id: v for v in Classifier(as_of).iter_roadmap(session, roadmap)}

    codes = "AE BH DJ DZ IQ JO KW LB LY MR QA SA SD SO TN YE".split()
    missions = [c for c in codes if c != "JO"]
    assert len(night) == 32 and len(escalations) == 16
    assert list(night.recipients) == [f"mission-{c.lower()}" for c in missions] + ["office-jo", "coordinators"]

    def planned(plan: ReminderPlan, recipient: str) -> list[tuple[str, str, str, str]]:
        return [(p.recipient, p.view.milestone, p.view.member_state, p.window) for p in plan.recipients[recipient]]

    assert planned(night, "mission-ae") == [("mission-ae", "invitations", "AE", "overdue-39")]
    assert planned(night, "office-jo") == [("office-jo", "nominations", "JO", "overdue-9")]
    assert planned(night, "coordinators") == [("coordinators", "conference", c, "before-1") for c in codes]
    assert planned(escalations, "coordinators") == (
        [("coordinators", "invitations", c, "escalation-overdue") for c in missions]
        + [("coordinators", "nominations", "JO", "escalation-overdue")])

    # Every item's view is its row's, field by field: nothing of the row but its note is lost in
    # the columns.
    every = [p for plan in (night, escalations) for items in plan.recipients.values() for p in items]
    assert len(every) == 48
    kept = [f.name for f in fields(StatusView) if f.name != "note"]
    for p in every:
        expected = views[p.status_id]
        assert {name: getattr(p.view, name) for name in kept} == {name: getattr(expected, name) for name in kept}
        assert p.view.note == "" and p.owner_recipient == expected.recipient
    emirates = night.recipients["mission-ae"][0]
    assert (views[emirates.status_id].note, emirates.view.classification.value) == ("NV 2024/061", "overdue")
    jordan = night.recipients["office-jo"][0].view
    assert (jordan.days_left, jordan.working_days_left, jordan.member_state_name) == (-10, -7, "Jordan")

    # Read by position (negative too) and by claim key, without building an item.
    coordinators = night.recipients["coordinators"]
    yemen = next(i for i, v in views.items() if (v.milestone, v.member_state) == ("conference", "YE"))
    assert coordinators[-1].status_id == coordinators[15].status_id == yemen
    with pytest.raises(IndexError):
        coordinators[16]
    assert list(claim_keys(coordinators)) == [(p.status_id, p.window) for p in coordinators]
    assert list(claim_keys(list(coordinators))) == list(claim_keys(coordinators))

    # A later plan's items come after the night's, for each recipient, each the same item.
    def identities(items) -> list[tuple[int, str, str, str, int]]:
        return [(p.status_id, p.recipient, p.window, p.view.milestone, p.view.days_left) for p in items]

    expected = identities(night.recipients["coordinators"]) + identities(escalations.recipients["coordinators"])
    night.merge(escalations)
    assert len(night) == 48 and len(escalations) == 0
    assert identities(night.recipients["coordinators"]) == expected
    assert [p.window for p in night.recipients["coordinators"]] == ["before-1"] * 16 + ["escalation-overdue"] * 16



def test_matrix_cells_name_a_status_recorded_in_progress(seeded):
    """The matrix artifact's cell of a row marked ``in_progress`` says so, with and without the
    working-day countdown (a large portfolio's cells); the others read as before. The conference
    is the coordinators' (Cairo): 17 working days from 5 June to 4 July 2024 without Fridays,
    Saturdays and Egypt's holidays of 15-18 and 30 June in the ``holidays`` package."""
    from sqlmodel import select

    from flows.dashboard import matrix_rows
    from flows.tally import MilestoneTally
    from models.status import Classifier
    from models.tables import Roadmap

    as_of = dt.datetime(2024, 6, 5, 7, tzinfo=dt.timezone.utc)
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="MR", state="in_progress", roadmap=SLUG)
        record_status(session, milestone="conference", member_state="MR", state="in_progress", roadmap=SLUG)
    with session_scope() as session:
        roadmap = session.exec(select(Roadmap).where(Roadmap.slug == SLUG)).one()
        tallies = []
        for context, rows in Classifier(as_of).iter_classified(session, roadmap):
            tallies.append(MilestoneTally(SLUG, context.key))
            tallies[-1].add_rows(context, rows)

    for countdown, overdue, upcoming in (
        (True, "🔴 overdue by 3 working days", "⚪ upcoming, 17 working days left"),
        (False, "🔴 overdue", "⚪ upcoming"),
    ):
        rows = {row["member_state"]: row for row in matrix_rows(tallies, countdown)}
        assert rows["MR Mauritania"]["invitations"] == f"{overdue} · in progress · 2024-05-31"
        assert rows["MR Mauritania"]["conference"] == f"{upcoming} · in progress · 2024-07-04"
        assert rows["DZ Algeria"]["invitations"] == f"{overdue} · 2024-05-31"
        assert rows["DZ Algeria"]["conference"] == f"{upcoming} · 2024-07-04"


def test_due_this_week_includes_the_seventh_day(seeded):
    """Found by a mutation review: no test failed when "Due this week" left out a deadline 7
    days away. On 27 June 2024 the 16 conferences (4 July, 7 days) are listed."""
    assert "## Due this week (16)" in _summary_head(dt.datetime(2024, 6, 27, 7, tzinfo=dt.timezone.utc))


def test_the_overview_ranks_the_most_overdue_roadmap_first_then_by_slug():
    """Found by a mutation review: no test failed with the portfolio overview's order reversed."""
    from collections import Counter

    from flows.publishing import RoadmapDashboard, overview_rows

    def dashboard(slug: str, overdue: int) -> RoadmapDashboard:
        return RoadmapDashboard(slug=slug, title=slug, rows=10, done=2, matrix=None, summary_head="", summary_tail="",
                                bars=[], statuses=[], counts=Counter(overdue=overdue, done=2))

    rows = overview_rows([dashboard("a-conf", 1), dashboard("c-conf", 5), dashboard("b-conf", 5)])
    assert [row["roadmap"] for row in rows] == ["b-conf", "c-conf", "a-conf"]
    assert rows[0]["% done"] == "20.0"
