"""Shared fixtures: a fresh database per test, a local outbox, one Prefect test server.

Every test that takes ``database_url`` runs twice: on SQLite and on the PostgreSQL server at
127.0.0.1:5432 (database ``test``, trust auth; override with ``ROADMAP_TEST_POSTGRES_URL``), each
time on its own fresh database, dropped afterwards. ``ROADMAP_TEST_DB=sqlite`` (or
``postgresql``) keeps one. In CI (``CI`` set) an unreachable PostgreSQL is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
SEED_ROADMAP = ROOT / "roadmaps" / "gcm-arab-2024.yaml"
POSTGRES_URL = os.environ.get("ROADMAP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def backends() -> list[str]:
    """The databases the suite runs on: both, unless ``ROADMAP_TEST_DB`` names one."""
    chosen = os.environ.get("ROADMAP_TEST_DB")
    return [chosen] if chosen else ["sqlite", "postgresql"]


def _postgres_admin():
    from sqlalchemy import create_engine

    engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001
        engine.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI and is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} unreachable (outside CI): {exc}")
    return engine


def error_lines(stderr: str) -> list[str]:
    """The non-blank lines of a command's stderr: its progress bars leave blank lines there when
    it is not a terminal."""
    return [line for line in stderr.splitlines() if line.strip()]


def fresh_database_url(tmp_path: Path, kind: str) -> tuple[str, callable]:
    """Create an empty database of ``kind``; return its URL and a function that drops it."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'roadmap.db'}", lambda: None
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    admin = _postgres_admin()
    name = f"rt_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        from models.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=backends())
def database_url(request, tmp_path, monkeypatch) -> str:
    """A fresh, empty database for this test (SQLite, then PostgreSQL), exported as ROADMAP_DATABASE_URL."""
    url, drop = fresh_database_url(tmp_path, request.param)
    monkeypatch.setenv("ROADMAP_DATABASE_URL", url)
    yield url
    drop()


@pytest.fixture
def postgres_url(tmp_path, monkeypatch) -> str:
    """A fresh PostgreSQL database whatever the backend (for tests that must run on both)."""
    url, drop = fresh_database_url(tmp_path, "postgresql")
    yield url
    drop()


@pytest.fixture
def outbox(tmp_path, monkeypatch) -> Path:
    """A fresh outbox folder, exported as ROADMAP_OUTBOX_DIR; no Apprise config (the default outbox).
    Published reports and calendar feeds go to tmp_path too."""
    folder = tmp_path / "outbox"
    monkeypatch.setenv("ROADMAP_OUTBOX_DIR", str(folder))
    monkeypatch.setenv("ROADMAP_REPORT_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("ROADMAP_CALENDAR_DIR", str(tmp_path / "calendars"))
    monkeypatch.delenv("ROADMAP_APPRISE_CONFIG", raising=False)
    return folder


@pytest.fixture
def seeded(database_url, outbox) -> str:
    """A fresh database with the seed roadmap loaded; returns the database URL."""
    from models.sync import sync_roadmap_file

    sync_roadmap_file(SEED_ROADMAP)
    return database_url


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real Prefect test server for the whole session (a second one in one process has failed upstream)."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
