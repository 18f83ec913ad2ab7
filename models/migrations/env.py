"""Alembic environment: runs the revisions of ``versions/`` against one database.

The database comes from the caller. :func:`models.migrate.upgrade` passes an open connection
in ``config.attributes["connection"]`` (already inside a locked transaction, which this
environment joins). Without one (the ``alembic`` command line with ``alembic.ini`` of this
folder), the URL is the ``sqlalchemy.url`` option when set, else
:func:`models.db.database_url` (``ROADMAP_DATABASE_URL``).

``target_metadata`` is ``SQLModel.metadata`` with :mod:`models.tables` imported, so
``alembic revision --autogenerate`` compares against the models. On SQLite the operations
render in batch mode (``render_as_batch``): SQLite's ALTER TABLE cannot change most things,
so a batch copies the table.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables on the metadata)
from models.db import SQLITE_BUSY_TIMEOUT_S, database_url

config = context.config
target_metadata = SQLModel.metadata

if config.config_file_name is not None and config.file_config.has_section("loggers"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or database_url()


def _run_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = _url()
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S} if url.startswith("sqlite") else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            _run_on(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
