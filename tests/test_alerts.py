"""Automations that alert the coordinators: applied to a real Prefect server, read back, and fired."""

from __future__ import annotations

import time

import pytest
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from flows.alerts import BLOCK_NAME, CoordinatorsNotification
from flows.cli import app
from flows.nightly import nightly_status_check
from tests.sinks import HttpSink

pytestmark = pytest.mark.usefixtures("prefect_server")
NAMES = ["roadmap-tracker nightly check failed", "roadmap-tracker no nightly check in 25 hours"]


@pytest.fixture
def sink():
    server = HttpSink().start()
    yield server
    server.stop()


def test_automations_apply_and_fire_when_the_nightly_check_fails(sink, database_url, outbox, monkeypatch):
    monkeypatch.setenv("ROADMAP_COORDINATORS_APPRISE_URL", f"json://127.0.0.1:{sink.port}/alerts")
    result = CliRunner().invoke(app, ["automations", "apply"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"automation ready: {name}" for name in NAMES]
    # Applying twice replaces, never duplicates.
    assert CliRunner().invoke(app, ["automations", "apply"]).exit_code == 0

    block = CoordinatorsNotification.load(BLOCK_NAME)
    with get_client(sync_client=True) as client:
        failed, missing = (client.read_automations_by_name(name) for name in NAMES)
    assert len(failed) == 1 and len(missing) == 1
    assert failed[0].trigger.posture.value == "Reactive"
    assert sorted(failed[0].trigger.expect) == ["prefect.flow-run.Crashed", "prefect.flow-run.Failed", "prefect.flow-run.TimedOut"]
    assert missing[0].trigger.posture.value == "Proactive"
    assert missing[0].trigger.expect == {"prefect.flow-run.Completed"}
    assert missing[0].trigger.within.total_seconds() == 25 * 3600
    assert str(failed[0].actions[0].block_document_id) == str(block._block_document_id)
    assert str(sink.port) not in str(missing[0].model_dump())  # the URL lives in the secret block only

    # A nightly check that fails: the server's automation alerts the coordinators through Apprise.
    state = nightly_status_check(as_of="not a date", return_state=True)
    assert state.is_failed()
    deadline = time.monotonic() + 120
    while not sink.requests and time.monotonic() < deadline:
        time.sleep(1)
    assert len(sink.requests) == 1, "the automation did not alert the coordinators"
    assert sink.requests[0]["title"].startswith("roadmap-tracker: nightly check")
    assert "ended in state Failed" in sink.requests[0]["message"]


def test_an_invalid_coordinators_url_is_refused_without_echoing_it(monkeypatch):
    monkeypatch.setenv("ROADMAP_COORDINATORS_APPRISE_URL", "nosuch://user:TopSecret@host")
    result = CliRunner().invoke(app, ["automations", "apply"])
    assert result.exit_code == 2
    assert "not valid (scheme 'nosuch')" in result.stderr
    assert "TopSecret" not in result.output
