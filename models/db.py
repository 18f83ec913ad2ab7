"""Database engine, session and the UTC datetime column type.

One settings source: ``ROADMAP_DATABASE_URL`` (a SQLAlchemy URL). The default is a SQLite
file ``roadmap.db`` in the current directory, so the tool runs with no server to install.
PostgreSQL (``postgresql+psycopg://...``) is the choice for scale.
"""

from __future__ import annotations

import datetime as dt
import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from sqlalchemy import DateTime, event
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

DEFAULT_DATABASE_URL = "sqlite:///roadmap.db"


class SettingError(ValueError):
    """An environment variable of roadmap-tracker with a value it cannot use; the message names
    the variable and the value (the command line prints it as one ``error:`` line)."""


#: Seconds a SQLite connection waits for a lock held by another process before it fails.
SQLITE_BUSY_TIMEOUT_S = 30
#: Seconds a PostgreSQL statement waits for a lock before it fails (``lock_timeout``), as long as
#: SQLite's busy timeout: found by a fault review, a table locked by another session hung the
#: nightly check with no end, holding its deployment's concurrency slot.
POSTGRES_LOCK_TIMEOUT_S = SQLITE_BUSY_TIMEOUT_S


def database_url() -> str:
    """Return the configured database URL (``ROADMAP_DATABASE_URL``, default ``sqlite:///roadmap.db``)."""
    return os.environ.get("ROADMAP_DATABASE_URL") or DEFAULT_DATABASE_URL


class UTCDateTime(TypeDecorator):
    """A datetime column that stores a UTC instant and always returns an aware UTC datetime.

    Bind: takes an aware ``datetime.datetime`` (any zone, pendulum included) and stores it as
    UTC; a naive datetime raises ``ValueError`` because its instant is unknown.
    Result: a ``datetime.datetime`` with ``tzinfo=datetime.timezone.utc`` on SQLite (which
    keeps no offset) and PostgreSQL (``timestamptz``) alike. Pattern from Indico's ``UTCDateTime``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: store aware datetimes only")
        utc = value.astimezone(dt.timezone.utc)  # exact, unlike a float timestamp far from 1970
        if dialect.name == "sqlite":
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the dashboard read while the nightly check writes; the busy timeout makes
    # concurrent checks wait for each other instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode, NORMAL syncs at checkpoints instead of at every commit: a commit survives a
    # crash of the process (the reminder log's guarantee), only a power cut may undo the last
    # ones; the SQLite documentation's advice for WAL (https://www.sqlite.org/pragma.html#pragma_synchronous).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _postgres_settings(dbapi_connection, _record) -> None:
    # Only where nothing else set it (the URL's ``options``, ALTER ROLE or DATABASE, the server's
    # file: found by a review, the user's own lock_timeout was overridden). Committed, so that
    # it holds for the connection's life, not the first transaction's. A session setting: behind
    # a pooler in transaction mode (PgBouncer) it is not kept (docs/scaling.md).
    with dbapi_connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('lock_timeout', %s, false) FROM pg_settings WHERE name = 'lock_timeout' "
            "AND source = 'default'", (f"{POSTGRES_LOCK_TIMEOUT_S}s",))
    dbapi_connection.commit()


def get_engine(url: str | None = None) -> Engine:
    """Return the (cached) engine for ``url``, or for the configured database when None.

    Its pool tests a connection before lending it (``pool_pre_ping``: found by a fault review,
    a PostgreSQL connection ended while idle during delivery failed the digest's mark and left
    it to be sent twice). A statement waits at most :data:`POSTGRES_LOCK_TIMEOUT_S` (unless the
    URL's ``options``, the role or the database set ``lock_timeout``) or
    :data:`SQLITE_BUSY_TIMEOUT_S` seconds for a lock, then fails (``OperationalError``).

    The first call for a URL brings the schema to the head Alembic revision
    (:func:`models.migrate.upgrade`: tables created in an empty database, older databases
    upgraded, concurrent callers serialized by a lock); it raises what that function raises.
    """
    return _engine(url or database_url())


@lru_cache(maxsize=16)
def _engine(url: str) -> Engine:
    kwargs: dict = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgres_settings)
    from models import tables  # noqa: F401  (registers the tables on the metadata)
    from models.migrate import upgrade

    upgrade(url)
    _engines_made.append(engine)
    return engine


def dispose_engines() -> None:
    """Close every cached engine's connections and forget them (before dropping a database)."""
    for engine in list(_engines_made):
        engine.dispose()
    _engines_made.clear()
    _engine.cache_clear()


_engines_made: list[Engine] = []


def upsert_insert(session: Session, table):
    """An ``INSERT`` for ``table`` (a SQLModel class) that takes ``ON CONFLICT`` clauses
    (``on_conflict_do_nothing`` / ``on_conflict_do_update``), for the session's database.

    Raises:
        NotImplementedError: a dialect other than SQLite and PostgreSQL.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"INSERT ... ON CONFLICT is not supported here for dialect {dialect!r}")


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on any exception."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
