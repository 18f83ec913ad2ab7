"""The ``outbox://`` Apprise schema: each notification becomes a file on disk.

``outbox://<folder>`` writes every message as a UTF-8 text file under
``$ROADMAP_OUTBOX_DIR/<folder>/`` (default ``./outbox``). It is the default channel, so the
nightly check runs on a fresh machine with no mail server. Registered with Apprise's
custom-notification decorator (``apprise.decorators.notify``), as Apprise documents for custom
schemas. Files are written atomically (temporary file, then rename): a reader never sees half a
message.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from pathlib import Path

from apprise.decorators import notify

DEFAULT_OUTBOX_DIR = "outbox"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def outbox_dir() -> Path:
    """Return the outbox folder (``ROADMAP_OUTBOX_DIR``, default ``./outbox``)."""
    return Path(os.environ.get("ROADMAP_OUTBOX_DIR") or DEFAULT_OUTBOX_DIR)


def write_message(folder: str, title: str, body: str, notify_type: str = "info") -> Path:
    """Write one message to ``<outbox>/<folder>/`` and return its path.

    The file holds ``Subject:`` and ``Type:`` header lines, a blank line, then the body.
    The name starts with the UTC write time so ``ls`` lists messages in order.
    """
    target = outbox_dir() / (_SAFE.sub("-", folder).strip("-.") or "all")
    target.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    final = target / f"{stamp}-{uuid.uuid4().hex[:8]}.txt"
    partial = final.with_suffix(".part")
    partial.write_text(f"Subject: {title}\nType: {notify_type}\n\n{body}\n", encoding="utf-8")
    os.replace(partial, final)
    return final


@notify(on="outbox", name="roadmap-tracker outbox")
def _outbox_notify(body: str, title: str, notify_type: str, meta: dict, *args, **kwargs) -> bool:
    folder = meta.get("host") or ""
    write_message(folder, title, body, notify_type)
    return True
