"""Delivering one message through Apprise with bounded retries; never raises.

Retries are ours (3 attempts, backoff 0.5 s then 1 s, within the run): a failing channel must
cost the nightly check seconds, not minutes. What stays failed is retried on the next night by
the caller (the reminder log keeps it).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Callable

import apprise
from apprise import NotifyFormat
from apprise.common import MATCH_ALL_TAG, MATCH_ALWAYS_TAG

ATTEMPTS = 3
BACKOFF_S = 0.5
NO_CHANNEL = "no channel configured for this recipient tag"


@dataclass(frozen=True)
class Delivery:
    """Outcome of one delivery: ``ok``, the attempts made, and a reason free of URLs and secrets;
    ``copy_reason`` says why a copy channel (tagged ``always``) did not take the message, which
    does not make the delivery fail."""

    ok: bool
    attempts: int
    reason: str = ""
    copy_reason: str = ""


def _reason(result) -> str:
    if getattr(result, "status", None) == apprise.AppriseResultStatus.NOMATCH:
        return NO_CHANNEL
    names = []
    for service in getattr(result, "results", None) or []:
        status = getattr(service, "status", "")
        status = getattr(status, "name", status)
        if str(status).upper() != "SUCCESS":
            names.append(f"{getattr(service, 'name', 'channel')}: {str(status).lower()}")
    return "; ".join(names) or "delivery failed"


_INDEX: "weakref.WeakKeyDictionary[apprise.Apprise, tuple[int, dict[str, list], list]]" = weakref.WeakKeyDictionary()


def _services(hub: apprise.Apprise, tag: str) -> list:
    """The channels of ``hub`` that a message to the plain tag ``tag`` reaches: those carrying the
    tag, and those tagged ``always`` (Apprise's rule for one tag without commas).

    ``Apprise.find(tag)`` tests every channel: a digest per recipient would cost recipients x
    channels tests a night. The index is built in one pass per hub (rebuilt if channels are added).
    """
    if "," in tag or tag == MATCH_ALL_TAG:
        return list(hub.find(tag))
    entry = _INDEX.get(hub)
    if entry is None or entry[0] != len(hub):
        by_tag: dict[str, list] = {}
        always = []
        for service in hub.find(MATCH_ALL_TAG):
            if MATCH_ALWAYS_TAG in service.tags:
                always.append(service)
            for service_tag in service.tags:
                by_tag.setdefault(service_tag, []).append(service)
        entry = _INDEX[hub] = (len(hub), by_tag, always)
    _, by_tag, always = entry
    found = by_tag.get(tag, [])
    return found + [service for service in always if service not in found]


def _groups(hub: apprise.Apprise, tag: str, body: str,
            body_html: str | Callable[[], str] | None) -> list[tuple[apprise.Apprise, str, NotifyFormat, bool]]:
    """One group per channel tagged ``tag``, each an :class:`apprise.Apprise` holding that channel
    alone, with the body it gets and whether it is a copy (tagged ``always``, not ``tag``):
    channels that render HTML (e-mail) get ``body_html``, the others the plain text (so Apprise
    never has to convert one into the other). A callable ``body_html`` is rendered once, and only
    when some channel wants HTML.

    One channel a group, because a retry resends a whole group: with two channels in one group,
    the one that took the message got it again at every retry of the other.
    """
    groups = []
    html_text = None
    for service in _services(hub, tag):
        copy = tag not in service.tags
        # Channels whose own default rendering is HTML (e-mail, or any URL with ?format=html).
        wants_html = body_html is not None and service.resolve_format(None) == NotifyFormat.HTML
        alone = apprise.Apprise()
        alone.add(service)
        if wants_html:
            if html_text is None:
                html_text = body_html() if callable(body_html) else body_html
            groups.append((alone, html_text, NotifyFormat.HTML, copy))
        else:
            groups.append((alone, body, NotifyFormat.TEXT, copy))
    return groups


def deliver(
    hub: apprise.Apprise,
    *,
    tag: str,
    title: str,
    body: str,
    body_html: str | Callable[[], str] | None = None,
    attempts: int = ATTEMPTS,
    backoff_s: float | None = None,
) -> Delivery:
    """Send ``title``/``body`` to every channel tagged ``tag`` (``body_html`` to e-mail channels, if
    given: the text, or a function that renders it, called only when such a channel exists).

    A channel that took the message is not sent it again by a retry: only the channels that
    failed are retried. The delivery is ok only when every channel carrying ``tag`` took it;
    otherwise the caller (the reminder log) sends the item again on a later night, to every
    channel of the tag, the ones that took it included (never lost rather than never twice, when
    one channel of several fails). Channels tagged ``always`` get a copy alongside, tried once
    (a copy is not worth a recipient's retries: their backoff would slow every digest); one that
    fails is named in ``copy_reason`` and does not fail the delivery (found by a fault review: a
    failing archive made every recipient's reminder fail and be sent again every night). A tag
    with no channel of its own is delivered by the ``always`` channels, as Apprise reaches them:
    they are its channels then (a config of one catch-all channel).

    Returns a :class:`Delivery`; an exception inside Apprise or a plugin becomes a failed
    delivery whose reason names only the exception type (its text may hold a URL).
    """
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    pending = _groups(hub, tag, body, body_html)
    if not pending:
        return Delivery(False, 1, NO_CHANNEL)
    if all(copy for *_, copy in pending):  # only "always" channels reach this tag: they are its own
        pending = [(group, text, fmt, False) for group, text, fmt, _ in pending]
    reasons: list[str] = []
    copy_reasons: list[str] = []
    for attempt in range(1, attempts + 1):
        still_failing, reasons = [], []
        for group, text, fmt, copy in pending:
            try:
                result = group.notify(body=text, title=title, body_format=fmt)
                reason = "" if result else _reason(result)
            except Exception as exc:  # noqa: BLE001 - a channel must never crash the check
                reason = f"{type(exc).__name__} while delivering"
            if not reason:
                continue
            if copy:
                copy_reasons.append(reason)  # tried once
            else:
                reasons.append(reason)
                still_failing.append((group, text, fmt, copy))
        if not still_failing:
            return Delivery(True, attempt, "", "; ".join(copy_reasons))
        pending = still_failing
        if attempt < attempts:
            time.sleep(backoff_s * attempt)
    return Delivery(False, attempts, "; ".join(reasons), "; ".join(copy_reasons))
