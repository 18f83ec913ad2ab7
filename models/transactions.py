"""Short write transactions that survive a busy SQLite database.

SQLite lets one writer in at a time. The busy timeout (``models.db``) makes a writer wait for
the lock, but a transaction that read first and then writes can still fail at once with
"database is locked" when another process committed in between (WAL snapshot rules). Such a
unit of work is simply run again: :func:`in_transaction` retries it with backoff. On
PostgreSQL, a serialization failure or deadlock is retried the same way.
"""

from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from models.db import session_scope

T = TypeVar("T")

#: Attempts before giving up, and the first backoff (doubled each time, with jitter), in seconds.
ATTEMPTS = 10
FIRST_BACKOFF_S = 0.05

_RETRYABLE = ("database is locked", "database is busy", "deadlock detected", "could not serialize access")


def is_retryable(exc: BaseException) -> bool:
    """True for lock contention errors that a retry of the whole transaction fixes."""
    return isinstance(exc, (OperationalError, DBAPIError)) and any(text in str(exc) for text in _RETRYABLE)


def in_transaction(work: Callable[[Session], T], database_url: str | None = None, attempts: int = ATTEMPTS) -> T:
    """Run ``work(session)`` in one transaction and commit; on lock contention roll back and run it again.

    ``work`` must be safe to run again (it only touches the database). Returns what ``work``
    returns.

    Raises:
        OperationalError / DBAPIError: still contended after ``attempts`` tries, or not a contention error.
    """
    for attempt in range(1, attempts + 1):
        try:
            with session_scope(database_url) as session:
                return work(session)
        except (OperationalError, DBAPIError) as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            time.sleep(FIRST_BACKOFF_S * (2 ** (attempt - 1)) * (0.5 + random.random()))
    raise AssertionError("unreachable")
