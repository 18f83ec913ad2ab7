"""What the nightly check last published to the Prefect dashboard, per artifact key.

A large portfolio's check publishes a roadmap's dashboard artifacts only when their content
changed since the last time they went out (issue "Scale": each artifact costs the Prefect
server about 10 ms, and 3 per roadmap every night was most of a 1,500-roadmap check). The
content is kept as a SHA-256 digest in ``published_artifact``; a digest is written only after
its artifact was created, in the check's own database, so a check that died mid-way publishes
again rather than leaving the dashboard behind.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Mapping

from sqlalchemy import delete
from sqlmodel import Session, select

from models.db import upsert_insert
from models.tables import PublishedArtifact

#: Keys per ``IN (...)`` list or INSERT statement (far below either database's parameter limit).
_KEYS_PER_STATEMENT = 1000


def published_digests(session: Session, keys: Iterable[str]) -> dict[str, tuple[str, dt.datetime]]:
    """{artifact key: (digest, aware UTC as-of instant of the check that published it)} for those
    of ``keys`` published before; keys never published are absent."""
    keys = list(keys)
    found: dict[str, tuple[str, dt.datetime]] = {}
    for start in range(0, len(keys), _KEYS_PER_STATEMENT):
        chunk = keys[start : start + _KEYS_PER_STATEMENT]
        for row in session.exec(select(PublishedArtifact).where(PublishedArtifact.key.in_(chunk))):
            found[row.key] = (row.digest, row.published_at)
    return found


def remember_published(session: Session, digests: Mapping[str, str], at: dt.datetime) -> None:
    """Record that each artifact key of ``digests`` ({key: SHA-256 hex}) was published by the
    check as of ``at`` (aware), replacing what was recorded before."""
    items = sorted(digests.items())
    for start in range(0, len(items), _KEYS_PER_STATEMENT):
        statement = upsert_insert(session, PublishedArtifact)
        statement = statement.on_conflict_do_update(
            index_elements=["key"], set_={"digest": statement.excluded.digest, "published_at": statement.excluded.published_at})
        session.connection().execute(
            statement, [{"key": key, "digest": digest, "published_at": at} for key, digest in items[start : start + _KEYS_PER_STATEMENT]])


def latest_published_key(session: Session) -> str | None:
    """The key most recently recorded as published, or None when nothing was."""
    return session.exec(
        select(PublishedArtifact.key).order_by(PublishedArtifact.published_at.desc(), PublishedArtifact.key).limit(1)
    ).first()


def forget_published(session: Session) -> int:
    """Forget every recorded publication (the next check publishes everything); returns how many."""
    return session.connection().execute(delete(PublishedArtifact)).rowcount
