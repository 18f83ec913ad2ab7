"""Schema migrations: bring a database to the head Alembic revision, safely under concurrency.

The Alembic environment lives in ``models/migrations`` (``env.py``, ``versions/``) and is
configured here, in code; :func:`models.db.get_engine` calls :func:`upgrade` once per URL, so
every process that opens the database brings it to head first.

Concurrency: several processes (nightly checks, the CLI, workers) may open the same fresh
database at once. Each upgrade runs in one transaction on one connection, under a lock that
only one process holds at a time; the others wait, then find the revision already at head and
do nothing.

* PostgreSQL: ``pg_advisory_xact_lock`` (the transaction-scoped ``pg_advisory_lock``) on
  :data:`PG_ADVISORY_LOCK_KEY`, taken first in the upgrade transaction and released by its
  commit or rollback, so a crashed upgrade never leaves the lock held. The DDL is
  transactional: a failed upgrade leaves the database as it was.
* SQLite: the transaction starts with ``BEGIN IMMEDIATE``, which takes the database's write
  lock before anything is read; other processes wait for it up to
  :data:`models.db.SQLITE_BUSY_TIMEOUT_S` seconds (SQLite's busy timeout). The driver's own
  transaction handling is turned off for this connection so the DDL runs inside that
  transaction too (a failed upgrade rolls back, as on PostgreSQL).

A database that has the tables but no Alembic revision (made by ``create_all`` before
migrations existed) is stamped with the revision its schema matches, then upgraded: ``0002``
when ``status`` has ``last_classification``, ``0003`` when ``roadmap`` also has ``declared_slug``,
else ``0001`` (see :data:`SCHEMA_MARKERS`).

Command line: ``alembic -c models/migrations/alembic.ini <command>`` (for ``revision
--autogenerate``, ``history``, ``downgrade``); it does not take the lock.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from models.db import SQLITE_BUSY_TIMEOUT_S, database_url

#: Folder of the Alembic environment (``env.py``, ``script.py.mako``, ``versions/``).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Key (a signed 64-bit integer) of the PostgreSQL advisory lock held during an upgrade.
#: Advisory locks are per database, so upgrades of different databases do not wait on each other.
PG_ADVISORY_LOCK_KEY = 0x524D_5452_4B4D_4947  # "RMTRKMIG"

#: Revision of the first schema (the tables as of commit 16eb8e5).
INITIAL_REVISION = "0001"

#: (revision, table, column): the newest revision whose column a ``create_all`` database has
#: tells its schema, newest first. A revision that adds a column or a table adds a marker here;
#: one that only drops an index (0006) cannot be told apart and must be a no-op where the index
#: is absent (``IF EXISTS``): such a database is stamped at the marker's revision and upgraded.
SCHEMA_MARKERS = (
    ("0010", "member_state", "mission_name_ar"),
    ("0009", "roadmap", "coordinator_email"),
    ("0008", "roadmap", "active"),
    ("0007", "status", "active"),
    ("0005", "published_artifact", "digest"),
    ("0004", "status", "last_reminder"),
    ("0003", "roadmap", "declared_slug"),
    ("0002", "status", "last_classification"),
)

#: Tables of the initial schema; all of them exist in a database made by ``create_all``.
INITIAL_TABLES = frozenset(
    {"roadmap", "member_state", "milestone", "status", "status_change", "reminder_log", "agenda_session"}
)


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """Return an Alembic :class:`~alembic.config.Config` for ``url`` (default: the configured URL).

    With ``connection``, ``env.py`` runs on that connection (joining its transaction if one is
    open) instead of opening its own.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal "%" (e.g. in an encoded password) must be doubled.
    config.set_main_option("sqlalchemy.url", (url or database_url()).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the head revision id of the migrations (``str``, e.g. ``"0002"``)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def _migration_engine(url: str) -> Engine:
    """A pool-less engine for migrations; on SQLite its transactions begin with BEGIN IMMEDIATE."""
    if not url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool)
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _driver_autocommit(dbapi_connection, _record) -> None:
        # pysqlite would BEGIN on its own before DML only (and run DDL outside any transaction);
        # with isolation_level None it issues nothing, and the "begin" hook below takes over.
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class UnknownRevisionError(RuntimeError):
    """The database is at a schema revision these migrations do not know: a newer release of
    roadmap-tracker upgraded it (found by a review of the upgrade path: a 330-line traceback of
    Alembic's "Can't locate revision"). The message says what to do.

    Attributes:
        revision: the database's revision id; ``head``: the newest this code knows.
    """

    def __init__(self, revision: str, head: str):
        self.revision, self.head = revision, head
        super().__init__(
            f"the database is at schema revision {revision}, which this release of roadmap-tracker does not know "
            f"(it knows up to {head}): a newer release upgraded it; run that release, or a copy of the database "
            "from before the upgrade")


def _refuse_unknown_revision(connection: Connection, config: Config) -> None:
    """Raise :class:`UnknownRevisionError` when the database's revision is none of ours."""
    current = MigrationContext.configure(connection).get_current_revision()
    script = ScriptDirectory.from_config(config)
    if current is not None and current not in {r.revision for r in script.walk_revisions()}:
        raise UnknownRevisionError(current, script.get_current_head())


def _stamp_unversioned(connection: Connection, config: Config) -> None:
    """Stamp a database made by ``create_all`` (tables present, no revision) with its revision.

    Raises:
        RuntimeError: some tables of the schema exist but not all, and there is no revision:
            the schema cannot be identified, and upgrading would fail on the existing tables.
    """
    if MigrationContext.configure(connection).get_current_revision() is not None:
        return
    inspector = inspect(connection)
    present = INITIAL_TABLES & set(inspector.get_table_names())
    if not present:
        return
    if present != INITIAL_TABLES:
        missing = ", ".join(sorted(INITIAL_TABLES - present))
        raise RuntimeError(
            f"database has roadmap-tracker tables but no Alembic revision and lacks {missing}; "
            "cannot tell which revision it is at"
        )
    revision = INITIAL_REVISION
    tables = set(inspector.get_table_names())
    for marker_revision, table, column in SCHEMA_MARKERS:
        if table in tables and column in {c["name"] for c in inspector.get_columns(table)}:
            revision = marker_revision
            break
    command.stamp(config, revision)


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` (default :func:`models.db.database_url`) to ``revision``.

    ``revision`` is an Alembic revision id (``"0001"``) or ``"head"`` (the default). An empty
    database gets the whole schema; a database at an older revision is upgraded; a database
    made by ``create_all`` without a revision is stamped first (see the module docstring); a
    database already at ``revision`` or beyond is left alone. Safe to call from several
    processes at once on the same database: they run one after the other (see the module
    docstring for the locks). Everything happens in one transaction.

    Raises:
        RuntimeError: the database has part of the tables and no revision (not identifiable).
        UnknownRevisionError: the database is at a revision these migrations do not know
            (upgraded by a newer release of roadmap-tracker).
        alembic.util.CommandError: ``revision`` is unknown.
        sqlalchemy.exc.OperationalError: the database is unreachable, or on SQLite another
            process held the write lock longer than ``SQLITE_BUSY_TIMEOUT_S`` seconds.
    """
    url = url or database_url()
    engine = _migration_engine(url)
    try:
        with engine.connect() as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_ADVISORY_LOCK_KEY})
            config = alembic_config(url, connection)
            _stamp_unversioned(connection, config)
            _refuse_unknown_revision(connection, config)
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def current_revision(url: str | None = None) -> str | None:
    """Return the Alembic revision id the database at ``url`` is at (``str``), or None.

    None means no revision is recorded: an empty database, or one made by ``create_all``
    before migrations existed. ``url`` defaults to :func:`models.db.database_url`.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable.
    """
    url = url or database_url()
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S} if url.startswith("sqlite") else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
