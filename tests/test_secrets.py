"""Credentials in Apprise URLs never leak: not in logs, artifacts, outbox files, the database,
exception messages or the JSON output. They may come from a Prefect Secret block."""

from __future__ import annotations

import json
import logging
import urllib.parse
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import text
from typer.testing import CliRunner

from flows.cli import app
from models.db import get_engine
from tests.sinks import HttpSink, SmtpSink, free_port

pytestmark = pytest.mark.usefixtures("prefect_server")
AS_OF = "2024-06-05T09:00:00+02:00"
CODES = "ae bh dj dz iq jo kw lb ly mr qa sa sd so tn ye".split()


def _database_text(url: str) -> str:
    engine = get_engine(url)
    dump = []
    with engine.connect() as conn:
        for table in ("roadmap", "member_state", "milestone", "status", "status_change", "reminder_log", "agenda_session"):
            dump += [repr(tuple(row)) for row in conn.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(dump)


def test_a_full_check_never_reveals_a_password(seeded, outbox, tmp_path, monkeypatch, caplog, capfd):
    secret = f"S3cr3t-{uuid.uuid4().hex}"
    user = "focal.point@example.org"
    smtp = SmtpSink(user, secret).start()
    sink = HttpSink().start()
    dead_port = free_port()  # nothing listens: that channel fails and its failure is reported
    try:
        quoted = urllib.parse.quote(secret, safe="")
        mail_tags = ", ".join(f"mission-{c}" for c in CODES[:8])
        json_tags = ", ".join(f"mission-{c}" for c in CODES[8:])
        config = tmp_path / "apprise.yaml"
        config.write_text(
            "urls:\n"
            f'  - "mailto://{urllib.parse.quote(user, safe="")}:{quoted}@127.0.0.1:{smtp.port}'
            '?smtp=127.0.0.1&mode=insecure&from=tracker@example.org&to=missions@example.org":\n'
            f"      tag: {mail_tags}\n"
            f'  - "json://hook:{quoted}@127.0.0.1:{sink.port}/":\n'
            f"      tag: {json_tags}\n"
            f'  - "json://hook:{quoted}@127.0.0.1:{dead_port}/":\n'
            "      tag: mission-ye\n",
            encoding="utf-8",
        )
        monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(config))
        monkeypatch.setattr("notifications.delivery.BACKOFF_S", 0.0)
        caplog.set_level(logging.DEBUG)
        result = CliRunner().invoke(app, ["check", "--as-of", AS_OF, "--json"])
        output = result.stdout + result.stderr
    finally:
        smtp.stop()
        sink.stop()
    assert result.exit_code == 0, output
    reminders = json.loads(result.stdout.strip().splitlines()[-1])["reminders"]
    assert reminders == {"sent": 15, "already_sent": 0, "failed": 1, "escalated": 0, "in_flight": 0}  # mission-ye also routes to the dead port
    assert len(smtp.messages) == 8 and smtp.logins[0] == (user, secret)  # the secret was really used

    with get_client(sync_client=True) as client:
        artifacts = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"gcm-arab-2024-{k}" for k in ("matrix", "summary", "progress")]))
        )
    places = {
        "log records": "\n".join(r.getMessage() for r in caplog.records),
        "stdout/stderr": output + "".join(capfd.readouterr()),
        "artifacts": "\n".join(json.dumps(a.data, ensure_ascii=False) if not isinstance(a.data, str) else a.data for a in artifacts),
        "outbox files": "\n".join(p.read_text(encoding="utf-8") for p in outbox.rglob("*") if p.is_file()),
        "database": _database_text(seeded),
    }
    assert "mission-ye" in places["artifacts"]  # the failure is reported...
    for where, content in places.items():
        assert secret not in content, f"secret found in {where}"
        assert quoted not in content, f"encoded secret found in {where}"


def test_apprise_config_from_a_prefect_secret_block(seeded, outbox, monkeypatch):
    from prefect.blocks.system import Secret

    sink = HttpSink().start()
    try:
        tags = ", ".join(f"mission-{c}" for c in CODES)
        Secret(value=f'urls:\n  - "json://127.0.0.1:{sink.port}/":\n      tag: {tags}\n').save("roadmap-apprise-test", overwrite=True)
        monkeypatch.setenv("ROADMAP_APPRISE_SECRET_BLOCK", "roadmap-apprise-test")
        monkeypatch.delenv("ROADMAP_APPRISE_CONFIG", raising=False)
        result = CliRunner().invoke(app, ["check", "--as-of", AS_OF, "--json"])
    finally:
        sink.stop()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["reminders"] == {"sent": 16, "already_sent": 0, "failed": 0, "escalated": 0, "in_flight": 0}
    assert len(sink.requests) == 16
    assert not outbox.exists()  # the default outbox was not used
