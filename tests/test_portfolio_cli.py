"""Several roadmaps at once: `roadmap sync FOLDER` (all or nothing) and progress reporting."""

from __future__ import annotations

import pytest
import yaml
from sqlmodel import Session, func, select
from typer.testing import CliRunner

from flows.cli import app
from flows.progress import listening
from models.db import get_engine
from models.tables import Roadmap, Status
from tests.conftest import SEED_ROADMAP

runner = CliRunner()


def _portfolio(folder, count: int, states: int = 4):
    folder.mkdir()
    seed = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    for n in range(1, count + 1):
        data = dict(seed, slug=f"review-{n:02d}", member_states=seed["member_states"][:states])
        (folder / f"review-{n:02d}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return folder


def _counts(url):
    with Session(get_engine(url)) as session:
        return session.exec(select(func.count(Roadmap.id))).one(), session.exec(select(func.count(Status.id))).one()


def test_sync_a_folder_loads_every_roadmap(database_url, tmp_path):
    folder = _portfolio(tmp_path / "roadmaps", 3)
    result = runner.invoke(app, ["sync", str(folder)])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["review-01", "review-02", "review-03"]
    assert _counts(database_url) == (3, 3 * 6 * 4)


def test_one_bad_file_in_a_folder_loads_nothing(database_url, tmp_path):
    folder = _portfolio(tmp_path / "roadmaps", 3)
    bad = yaml.safe_load((folder / "review-02.yaml").read_text(encoding="utf-8"))
    bad["member_states"][0]["timezone"] = "Europe/Geneva"
    (folder / "review-02.yaml").write_text(yaml.safe_dump(bad, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["sync", str(folder)])
    assert result.exit_code == 2
    assert f"{folder / 'review-02.yaml'}: member_states[0].timezone" in result.stderr
    assert _counts(database_url) == (0, 0)


def test_duplicate_slugs_across_files_are_refused(database_url, tmp_path):
    folder = _portfolio(tmp_path / "roadmaps", 2)
    twin = yaml.safe_load((folder / "review-01.yaml").read_text(encoding="utf-8"))
    twin["slug"] = "Review 02"  # normalises to review-02
    (folder / "review-01.yaml").write_text(yaml.safe_dump(twin, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["sync", str(folder)])
    assert result.exit_code == 2
    assert "several files have the slug 'review-02'" in result.stderr


@pytest.mark.usefixtures("prefect_server")
def test_the_check_reports_progress_as_it_goes(database_url, outbox, tmp_path):
    from flows.nightly import nightly_status_check

    assert runner.invoke(app, ["sync", str(_portfolio(tmp_path / "roadmaps", 2))]).exit_code == 0
    seen: list[tuple[int, int]] = []
    with listening(lambda done, total: seen.append((done, total))):
        nightly_status_check(as_of="2024-06-05T09:00:00+02:00", include_statuses=False, publish=False)
    assert seen == [(4 * n, 48) for n in range(1, 13)]  # 2 roadmaps x 6 milestones x 4 member states


def test_a_child_run_that_did_not_complete_fails_the_portfolio_check(seeded, prefect_server, monkeypatch):
    """Found by a mutation review: no test failed when only a FAILED child counted as not done,
    so a crashed (or cancelled) child run let the portfolio check complete."""
    import asyncio
    import uuid

    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Crashed

    import flows.portfolio as portfolio

    asked = []

    async def crashed_child(name, parameters, **options):
        asked.append((name, parameters["roadmaps"], parameters["as_of"]))
        return FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), state=Crashed(message="worker lost"))

    async def no_limit(deployment):
        return None

    monkeypatch.setattr(portfolio, "run_deployment", crashed_child)
    monkeypatch.setattr(portfolio, "child_concurrency_limit", no_limit)
    state = asyncio.run(portfolio.nightly_portfolio_check(as_of="2024-06-05T09:00:00+02:00", return_state=True))
    # One child per group, all given the same instant (in UTC).
    assert asked == [("nightly-status-check/portfolio-group", ["gcm-arab-2024"], "2024-06-05T07:00:00+00:00")]
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=r"^1 of 1 child runs did not complete: "):
        state.result()


@pytest.mark.parametrize("command", ["check", "status", "demo"])
def test_every_colour_option_says_what_it_does(command):
    """Found by a review of the docs: ``status --help`` and ``demo --help`` listed
    ``--color/--no-color`` with no words."""
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    (line,) = [line for line in result.stdout.splitlines() if "--no-color" in line]
    assert "Colour in the table (--no-color for plain text)." in line
