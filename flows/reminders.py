"""Sending the night's reminders and escalations: claim in the log, deliver, record.

Plain Python (no Prefect here except the events callback the flow passes in), so it can be
tested on its own. Order: claim the due items of a few recipients (:data:`CLAIM_RECIPIENTS`)
in one transaction (or several of :data:`CLAIM_PART` items) and COMMIT; then per recipient
render one digest, deliver, mark its claims sent or failed and commit; once enough are held,
write the delivered items' hints on the status rows (:data:`HINTS_HELD`). See
:mod:`models.reminders` for the guarantees and the one window of doubt (a run killed between
delivery and the commit).
"""

from __future__ import annotations

import datetime as dt
import logging
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Iterable

import apprise

from flows.collector import collector_paused, release_free_memory
from flows.tally import PlannedReminder, ReminderPlan, claim_keys
from models.db import session_scope
from models.transactions import in_transaction
from models.parties import COORDINATORS_TAG, addressee_names, coordinators_at_work
from models.reminders import (
    ESCALATION_OVERDUE, claim_lease, claim_many, mark_delivered, mark_failed, release_claims, remember_delivered,
    renew_claims, repeatedly_failing,
)
from models.status import StatusView
from notifications.delivery import deliver
from notifications.digest import Digest, DigestItem, render_digest, render_digest_html
from notifications.plurals import arabic_count, english_count

log = logging.getLogger(__name__)

#: Runs a reminder may fail before the coordinators get an escalation (issue 4).
FAILED_RUNS_BEFORE_ESCALATION = 3
#: Every escalation window starts so (``escalation-overdue``, ``escalation-delivery-<recipient>``).
ESCALATION_PREFIX = "escalation-"
#: Why an item is escalated, in English and in Arabic, as the digest shows it.
Reason = tuple[str, str]
NO_REASON: Reason = ("", "")


@dataclass
class ReminderReport:
    """Counts of reminder items (not messages): ``sent``, ``already_sent``, ``failed`` (of the
    check, escalations included); ``messages`` delivered; failures as "recipient: reason" lines
    (never a URL; a failed copy channel too); ``escalated`` items; ``config_error``: why no
    channel could be loaded."""

    sent: int = 0
    already_sent: int = 0
    failed: int = 0
    messages: int = 0
    escalated: int = 0
    #: Items another run held (claimed within the lease): it sends them, or a later check does
    #: once its claim lapses (found by a fault review: they were in no count).
    in_flight: int = 0
    failures: list[str] = field(default_factory=list)
    #: Why no channel could be loaded (then every item failed), or "".
    config_error: str = ""

    def as_dict(self) -> dict:
        """The ``reminders`` object of ``roadmap check --json``: ``{"sent", "already_sent",
        "failed", "escalated", "in_flight"}`` item counts (found by a fault review: a re-run after
        an outage looked complete while another run's claims still held 4 digests)."""
        return {"sent": self.sent, "already_sent": self.already_sent, "failed": self.failed,
                "escalated": self.escalated, "in_flight": self.in_flight}

    def add_escalations(self, other: "ReminderReport") -> None:
        """Count the report of the night's escalations (:func:`send_planned` of them) in this
        one: its items sent as ``escalated``, its digests, failed and held items and failures
        as they are (found by a fault review: a failed escalation was in no count); its
        ``already_sent`` escalations are not reminders of the night and are left out."""
        self.escalated += other.sent
        self.messages += other.messages
        self.failed += other.failed
        self.in_flight += other.in_flight
        self.failures += other.failures


def _item(planned: PlannedReminder, reason: Reason, mailboxes: Mapping[str, str]) -> DigestItem:
    """The digest line of ``planned``; ``mailboxes``: {roadmap slug: its coordinators' mailbox}."""
    v = planned.view
    if not reason[0] and planned.window == ESCALATION_OVERDUE:
        reason = overdue_reason(v)
    return DigestItem(
        roadmap_title=v.roadmap_title,
        milestone_title=v.milestone_title,
        milestone_title_ar=v.milestone_title_ar,
        member_state=v.member_state,
        member_state_name=v.member_state_name,
        member_state_name_ar=v.member_state_name_ar,
        classification=v.classification.value,
        deadline=v.deadline,
        timezone=v.owner_timezone,
        days_left=v.days_left,
        working_days_left=v.working_days_left,
        window=planned.window,
        reason=reason[0],
        reason_ar=reason[1],
        coordinator_email=mailboxes.get(v.roadmap, ""),
    )


EventHook = Callable[[str, PlannedReminder, str], None]


def send_planned(
    plan: Mapping[str, Sequence[PlannedReminder]],
    *,
    hub: apprise.Apprise,
    as_of: dt.datetime,
    run_id: str,
    database_url: str | None = None,
    reasons: dict[tuple[int, str], Reason] | None = None,
    on_result: EventHook | None = None,
    now: Callable[[], dt.datetime] | None = None,
    consume: bool = False,
    mailboxes: Mapping[str, str] | None = None,
) -> ReminderReport:
    """Claim, deliver and record every planned item; one digest per recipient.

    Args:
        plan: items per recipient tag (e.g. :attr:`flows.tally.ReminderPlan.recipients`); each
            recipient's items are read by position, once claimed.
        hub: the Apprise channels.
        as_of: the check's instant (shown in the digest). Each digest is addressed by the
            recipient's name (:func:`models.parties.addressee_names`; a tag it does not know, by
            the tag).
        run_id: this run's id, written on its claims.
        reasons: optional (English, Arabic) text per (status id, window) shown in the digest
            (escalations).
        on_result: called with ("sent" | "failed", item, reason) after each digest.
        now: returns the aware wall-clock instant (default: UTC now).
        consume: remove each recipient from ``plan`` (then a dict) once done with it (its
            digest delivered or failed, or none of its items claimed), so that the next
            recipients' claims reuse its items' memory: a first night at 1M status rows plans
            189,000 reminders, then claims 125,000 escalations.
        mailboxes: {roadmap slug: its coordinators' public mailbox} (``roadmap.coordinator_email``):
            a mission's or an office's digest asks it to write there when an item is done already.

    A failed channel is recorded (and retried on the next run), never raised.
    """
    now = now or (lambda: dt.datetime.now(dt.timezone.utc))
    reasons = reasons or {}
    mailboxes = mailboxes or {}
    report = ReminderReport()
    recipients = sorted(plan)
    addressees = in_transaction(addressee_names, database_url) if recipients else {}
    hints = _Hints(database_url)
    half_lease = claim_lease() / 2
    for number, start in enumerate(range(0, len(recipients), CLAIM_RECIPIENTS), start=1):
        batch = recipients[start : start + CLAIM_RECIPIENTS]
        claimed = {recipient: _Claimed(plan[recipient]) for recipient in batch}
        for part in _claim_parts(batch, plan):
            claims = in_transaction(
                lambda session, keys=list(part): claim_many(session, keys, run_id=run_id, now=now()), database_url)
            for key, position in part.items():
                outcome = claims[key]
                if outcome.outcome == "claimed":
                    claimed[key[1]].add(outcome.log_id, position)
                elif outcome.outcome == "already_sent":
                    report.already_sent += 1
                else:
                    report.in_flight += 1
            del claims
        renewed_at = now()
        try:
            for recipient in batch:
                if claimed[recipient].log_ids and now() - renewed_at > half_lease:
                    # Slow channels: the batch's claims would outlive the lease before its last
                    # digests go out, and another run could take them over and send them too.
                    _renew(claimed, run_id=run_id, database_url=database_url, now=now())
                    renewed_at = now()
                if claimed[recipient].log_ids:
                    _deliver_digest(recipient, claimed.pop(recipient), hub=hub, as_of=as_of, run_id=run_id,
                                    database_url=database_url, reasons=reasons, on_result=on_result, now=now,
                                    report=report, hints=hints, addressee=addressees.get(recipient),
                                    mailboxes=mailboxes)
                if consume:
                    claimed.pop(recipient, None)
                    del plan[recipient]
        except BaseException:
            # Interrupted (Ctrl-C, a crash): the batch's digests not begun are let go at once,
            # for the next run, instead of waiting out the lease (found by a fault review). The
            # one being delivered keeps its claim: it may have gone out.
            ids = [log_id for c in claimed.values() for log_id in c.log_ids]
            if ids:
                in_transaction(lambda session: release_claims(session, ids, run_id=run_id), database_url)
            raise
        if consume and number % RELEASE_EVERY_BATCHES == 0:
            release_free_memory()  # the batches' items, digests and channel threads' buffers
    hints.write()
    return report


#: Recipients whose items are claimed before their digests go out. Small enough that the last
#: digest of a batch leaves well within the claim lease even when every channel times out
#: (3 attempts each).
CLAIM_RECIPIENTS = 10
#: Batches of recipients between two returns of glibc's free pages to the system
#: (:func:`flows.collector.release_free_memory`) while a plan is let go (``consume``).
RELEASE_EVERY_BATCHES = 5
#: Items claimed in one transaction, at most. A night at 1M status rows claims about 125 items
#: a recipient, 1,250 a batch, so a batch is one transaction; the coordinators' 125,000
#: escalations of a first night are 25, and the claim outcomes held at once are a part's
#: (about 310 bytes an item, traced: its key and position, 150, and its outcome, 160).
CLAIM_PART = 5_000


def _claim_parts(batch: list[str], plan: Mapping[str, Sequence[PlannedReminder]]):
    """The batch's items in parts of at most :data:`CLAIM_PART`: {(status id, recipient, window):
    the item's position in its recipient's items}, one item per key (the claim's key). A key
    repeated in a later part is claimed there by this run already and comes back
    ``in_flight``: it is not sent twice."""
    part: dict[tuple[int, str, str], int] = {}
    for recipient in batch:
        for position, (status_id, window) in enumerate(claim_keys(plan[recipient])):
            part.setdefault((status_id, recipient, window), position)
            if len(part) == CLAIM_PART:
                yield part
                part = {}
    if part:
        yield part


def _renew(claimed: dict[str, "_Claimed"], *, run_id: str, database_url: str | None, now: dt.datetime) -> None:
    """Renew the claims of the recipients in ``claimed`` not yet delivered (one transaction) and
    let go, from each, the items another run took over (:func:`models.reminders.renew_claims`):
    that run sends them."""
    ids = [log_id for c in claimed.values() for log_id in c.log_ids]
    held = in_transaction(lambda session: renew_claims(session, ids, run_id=run_id, now=now), database_url)
    if len(held) < len(ids):
        log.warning("%d reminder claims were taken over by another run (this one was slower than the lease): "
                    "that run sends them", len(ids) - len(held))
        for c in claimed.values():
            c.keep(held)


class _Claimed:
    """One recipient's items this run claimed, in claim order: their log ids and their positions
    in the recipient's ``items``, each in an ``array`` of 8-byte integers (not Python ints). The
    items are built again when used (:meth:`planned`): a first night's escalation digest claims
    125,000 items at 1M status rows."""

    def __init__(self, items: Sequence[PlannedReminder]):
        self.log_ids, self.positions, self._items = array("q"), array("q"), items

    def add(self, log_id: int, position: int) -> None:
        self.log_ids.append(log_id)
        self.positions.append(position)

    def keep(self, held: set[int]) -> None:
        """Forget the items whose log id is not in ``held`` (claims this run no longer holds)."""
        pairs = [(i, p) for i, p in zip(self.log_ids, self.positions) if i in held]
        self.log_ids, self.positions = array("q", (i for i, _ in pairs)), array("q", (p for _, p in pairs))

    def planned(self) -> Iterator[PlannedReminder]:
        """The claimed items, in claim order."""
        return map(self._items.__getitem__, self.positions)


class _Hints:
    """The status rows' hints (``Status.last_reminder`` / ``last_escalation``) of delivered
    digests, written in one transaction once :data:`HINTS_HELD` are held, and at the end. Only
    hints: a run that dies before writing them leaves items the next night plans again and the
    log refuses. One transaction per digest was 500 more commits a night at 1M status rows, each
    rewriting pages scattered across the status table."""

    def __init__(self, database_url: str | None):
        self.database_url, self.reminders, self.escalations = database_url, [], []

    def add(self, delivered: Iterable[PlannedReminder]) -> None:
        """Hold the hints of ``delivered`` items (their claims marked sent and committed): a
        reminder delivered to the row's own party, and the overdue escalation. An escalation to
        the coordinators of a row they own is not the row's reminder window."""
        for p in delivered:
            if p.window == ESCALATION_OVERDUE:
                self.escalations.append((p.status_id, p.window, p.planned_hints[1]))
            elif p.recipient == p.owner_recipient and not p.window.startswith(ESCALATION_PREFIX):
                self.reminders.append((p.status_id, p.window, p.planned_hints[0]))
            if len(self.reminders) + len(self.escalations) >= HINTS_HELD:
                self.write()

    def write(self) -> None:
        """Write the hints held (one transaction), then forget them."""
        if self.reminders or self.escalations:
            in_transaction(lambda session: remember_delivered(session, self.reminders, self.escalations),
                           self.database_url)
        self.reminders, self.escalations = [], []


#: Hints written in one transaction. SQLite alone, 62,000 status rows' hints in a 1M-row table:
#: 1.7 s in 50 transactions, 1.16 s in 5, 0.85 s in one; 12,500 hints are about 1 MB.
HINTS_HELD = 12_500


def _deliver_digest(recipient: str, claimed: _Claimed, *, hub, as_of, run_id, database_url, reasons, on_result, now,
                    report, hints, addressee, mailboxes) -> None:
    party = recipient != COORDINATORS_TAG  # a mission or an office: told to report what is done
    mailboxes = mailboxes if party else {}
    with collector_paused():  # a view and an item per line, no reference cycles (flows.collector)
        digest = Digest(_item(p, reasons.get((p.status_id, p.window), NO_REASON), mailboxes) for p in claimed.planned())
        subject, body = render_digest(recipient, digest, as_of, addressee, ask_to_report=party)
    delivery = deliver(hub, tag=recipient, title=subject, body=body,
                       body_html=lambda: render_digest_html(recipient, digest, as_of, addressee, ask_to_report=party))
    ids = claimed.log_ids
    if delivery.ok:
        marked = in_transaction(lambda session: mark_delivered(session, ids, run_id=run_id, now=now()), database_url)
        hints.add(claimed.planned())
        # A delivery that outlasted the lease: another run took over the claims it could not
        # mark, and sends them again (found by a review of things happening at once: they were
        # counted sent by both runs).
        report.sent += marked
        report.in_flight += len(ids) - marked
        if marked < len(ids):
            log.warning("the digest to %s was delivered after its claim lease: another run took over %s of it "
                        "and sends it again", recipient, english_count(len(ids) - marked, "item"))
        report.messages += 1
        if delivery.copy_reason:  # an "always" channel: the recipient has it, the copy is missing
            report.failures.append(f"{recipient} (copy channels): {delivery.copy_reason}")
            log.warning("the copy of the digest to %s failed: %s", recipient, delivery.copy_reason)
    else:
        in_transaction(lambda session: mark_failed(session, ids, run_id=run_id, reason=delivery.reason), database_url)
        report.failed += len(ids)
        report.failures.append(f"{recipient}: {delivery.reason}")
        log.warning("reminder digest to %s failed: %s", recipient, delivery.reason)
    if on_result:
        for planned in claimed.planned():
            on_result("sent" if delivery.ok else "failed", planned, "" if delivery.ok else delivery.reason)


def overdue_reason(view: StatusView) -> Reason:
    """Why an overdue item is escalated, in English and Arabic, e.g. ("overdue by 6 working days
    (10 days)", "مدة التأخير 6 أيام عمل (10 أيام)"; the Arabic names the length of the delay,
    whose number and noun then stand in the nominative, as :func:`notifications.plurals.arabic_count`
    writes them). Built when its digest is rendered, not with the
    plan: the first night of 1M status rows escalates 125,000 items, and their texts held with
    the plan (keyed by item) were 23 MB of the night's peak, 10.6 MB built with the digest's
    items (``benchmarks/nightly_check.py --prior-nights 0 --tracemalloc``)."""
    working, days = -view.working_days_left, -view.days_left
    return (f"overdue by {english_count(working, 'working day')} ({english_count(days, 'day')})",
            f"مدة التأخير {arabic_count(working, 'working day')} ({arabic_count(days, 'day')})")


def escalations(
    failed: Mapping[int, tuple], overdue: ReminderPlan, as_of: dt.datetime, database_url: str | None = None
) -> tuple[ReminderPlan, dict[tuple[int, str], str]]:
    """Items to escalate to the coordinators tonight, and the reason of each delivery escalation
    ({(status id, window): text}; an overdue item's reason is :func:`overdue_reason`, worked out
    when its digest is rendered).

    Two rules (issue 4): a reminder that failed on :data:`FAILED_RUNS_BEFORE_ESCALATION` runs
    since its last delivery (window ``escalation-delivery-<recipient>``), and an item more than 5
    working days overdue (window ``escalation-overdue``, planned by the tally). Each is sent once,
    on a working day of the item's coordinators at ``as_of`` (aware;
    :func:`models.parties.coordinators_at_work`): on another day a failing item waits for the
    run that fails it again on one.

    A row reaches the first rule only on a night its reminder fails (a delivery resets its
    count), so only tonight's failed items are looked up: the reminders delivered tonight need
    not be held until the escalations (:func:`send_planned` with ``consume``).

    Args:
        failed: {status id: (milestone context, classified row)} of the items whose digest
            failed tonight (:attr:`flows.tally.PlannedReminder.source`).
        overdue: tonight's overdue escalations; the delivery escalations are added to it, after
            them, and it is returned.
    """
    reasons: dict[tuple[int, str], Reason] = {}
    if not failed:
        return overdue, reasons
    with session_scope(database_url) as session:
        failing = repeatedly_failing(session, failed, min_failures=FAILED_RUNS_BEFORE_ESCALATION)
    for (status_id, recipient), (runs, error) in sorted(failing.items()):
        context = failed[status_id][0]
        if not coordinators_at_work(context.coordinator_country, context.coordinator_timezone, as_of):
            continue
        window = f"{ESCALATION_PREFIX}delivery-{recipient}"
        reasons[(status_id, window)] = (f"reminders to {recipient} failed on {english_count(runs, 'run')}: {error}",
                                        f"فشلت التذكيرات إلى {recipient} {arabic_count(runs, 'run')}: {error}")
        overdue.add(*failed[status_id], COORDINATORS_TAG, window)
    return overdue, reasons
