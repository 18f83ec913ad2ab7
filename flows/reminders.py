"""Sending the night's reminders: plan from classified rows, claim in the log, deliver, record.

Plain Python (no Prefect here), called by the nightly flow's reminder task, so it can be tested
on its own. Order per recipient: claim every due item and COMMIT, render one digest, deliver,
then mark the claims sent or failed and commit. See :mod:`models.reminders` for the guarantees.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field

import apprise

from models.db import session_scope
from models.reminders import claim, current_window, mark_delivered, mark_failed
from models.status import Classification, StatusView
from notifications.delivery import deliver
from notifications.digest import DigestItem, render_digest

log = logging.getLogger(__name__)

#: Classifications that can get a reminder.
ACTIONABLE = {Classification.upcoming, Classification.due_soon, Classification.due_today, Classification.overdue}


@dataclass(frozen=True)
class PlannedReminder:
    """One item due for one recipient tonight."""

    view: StatusView
    window: str


@dataclass
class ReminderReport:
    """Counts of reminder items (not messages): ``sent``, ``already_sent``, ``failed``, plus
    ``messages`` delivered, and failures as "recipient: reason" lines (no URLs)."""

    sent: int = 0
    already_sent: int = 0
    failed: int = 0
    messages: int = 0
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"sent": self.sent, "already_sent": self.already_sent, "failed": self.failed}


def plan_reminders(views: list[StatusView]) -> dict[str, list[PlannedReminder]]:
    """Group tonight's due reminders by recipient tag (the owner's, read in the owner's calendar)."""
    plan: dict[str, list[PlannedReminder]] = defaultdict(list)
    for view in views:
        if view.classification not in ACTIONABLE:
            continue
        window = current_window(
            due_day=view.due_day,
            today=view.today,
            reminder_days=view.reminder_days,
            overdue_every_days=view.overdue_every_days,
            calendar=view.calendar,
        )
        if window is not None:
            plan[view.recipient].append(PlannedReminder(view, window))
    return dict(plan)


def _item(planned: PlannedReminder) -> DigestItem:
    v = planned.view
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
    )


def send_planned(
    plan: dict[str, list[PlannedReminder]],
    *,
    hub: apprise.Apprise,
    as_of: dt.datetime,
    run_id: str,
    database_url: str | None = None,
    now=None,
) -> ReminderReport:
    """Claim, deliver and record every planned reminder; one digest per recipient.

    ``now`` returns the aware wall-clock instant (default: UTC now); a failed channel is
    recorded and never raised.
    """
    now = now or (lambda: dt.datetime.now(dt.timezone.utc))
    report = ReminderReport()
    for recipient in sorted(plan):
        claimed: list[tuple[int, PlannedReminder]] = []
        with session_scope(database_url) as session:
            for planned in plan[recipient]:
                outcome = claim(
                    session,
                    status_id=planned.view.status_id,
                    recipient=recipient,
                    window=planned.window,
                    run_id=run_id,
                    now=now(),
                )
                if outcome.outcome == "claimed":
                    claimed.append((outcome.log_id, planned))
                elif outcome.outcome == "already_sent":
                    report.already_sent += 1
        if not claimed:
            continue
        subject, body = render_digest(recipient, [_item(p) for _, p in claimed], as_of)
        delivery = deliver(hub, tag=recipient, title=subject, body=body)
        ids = [log_id for log_id, _ in claimed]
        with session_scope(database_url) as session:
            if delivery.ok:
                mark_delivered(session, ids, run_id=run_id, now=now())
            else:
                mark_failed(session, ids, run_id=run_id, reason=delivery.reason)
        if delivery.ok:
            report.sent += len(ids)
            report.messages += 1
        else:
            report.failed += len(ids)
            report.failures.append(f"{recipient}: {delivery.reason}")
            log.warning("reminder digest to %s failed: %s", recipient, delivery.reason)
    return report
