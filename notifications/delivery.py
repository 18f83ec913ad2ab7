"""Delivering one message through Apprise with bounded retries; never raises.

Retries are ours (3 attempts, backoff 0.5 s then 1 s, within the run): a failing channel must
cost the nightly check seconds, not minutes. What stays failed is retried on the next night by
the caller (the reminder log keeps it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import apprise

ATTEMPTS = 3
BACKOFF_S = 0.5


@dataclass(frozen=True)
class Delivery:
    """Outcome of one delivery: ``ok``, the attempts made, and a reason free of URLs and secrets."""

    ok: bool
    attempts: int
    reason: str = ""


def _reason(result) -> str:
    if getattr(result, "status", None) == apprise.AppriseResultStatus.NOMATCH:
        return "no channel configured for this recipient tag"
    names = []
    for service in getattr(result, "results", None) or []:
        status = getattr(service, "status", "")
        status = getattr(status, "name", status)
        if str(status).upper() != "SUCCESS":
            names.append(f"{getattr(service, 'name', 'channel')}: {str(status).lower()}")
    return "; ".join(names) or "delivery failed"


def deliver(
    hub: apprise.Apprise,
    *,
    tag: str,
    title: str,
    body: str,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
) -> Delivery:
    """Send ``title``/``body`` to every channel tagged ``tag``.

    Returns a :class:`Delivery`; an exception inside Apprise or a plugin becomes a failed
    delivery whose reason names only the exception type (its text may hold a URL).
    """
    reason = "delivery failed"
    for attempt in range(1, attempts + 1):
        try:
            result = hub.notify(body=body, title=title, tag=tag)
        except Exception as exc:  # noqa: BLE001 - a channel must never crash the check
            reason = f"{type(exc).__name__} while delivering"
        else:
            if result:
                return Delivery(True, attempt)
            reason = _reason(result)
            if "no channel configured" in reason:
                return Delivery(False, attempt, reason)
        if attempt < attempts:
            time.sleep(backoff_s * attempt)
    return Delivery(False, attempts, reason)
