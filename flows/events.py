"""Prefect events of roadmap-tracker, for coordinators' own automations in the UI.

Events: ``roadmap.milestone.overdue`` and ``roadmap.milestone.done`` (emitted when a status row
becomes overdue or done, not every night it stays so), ``roadmap.reminder.sent`` and
``roadmap.reminder.failed`` (one per reminder item, up to a budget per run; beyond it one summary
event carries the count). Status events are bounded too: at most 200 per milestone and 1000 per kind
and run, then one summary event with the count. The resource is the status row
(``roadmap.status.<roadmap>.<milestone>.<cc>``) with labels ``roadmap.slug``,
``roadmap.milestone`` and ``roadmap.member_state``; the roadmap, the milestone and the member
state are also related resources with roles ``roadmap``, ``milestone``, ``member-state``.
No event carries a URL or a credential.
"""

from __future__ import annotations

from prefect.events import emit_event

from models.status import StatusView


def _resources(view: StatusView) -> tuple[dict, list[dict]]:
    cc = view.member_state.lower()
    resource = {
        "prefect.resource.id": f"roadmap.status.{view.roadmap}.{view.milestone}.{cc}",
        "prefect.resource.name": f"{view.milestone} · {view.member_state_name}",
        "roadmap.slug": view.roadmap,
        "roadmap.milestone": view.milestone,
        "roadmap.member_state": view.member_state,
    }
    related = [
        {"prefect.resource.id": f"roadmap.roadmap.{view.roadmap}", "prefect.resource.role": "roadmap",
         "prefect.resource.name": view.roadmap_title},
        {"prefect.resource.id": f"roadmap.milestone.{view.roadmap}.{view.milestone}", "prefect.resource.role": "milestone",
         "prefect.resource.name": view.milestone_title},
        {"prefect.resource.id": f"roadmap.member-state.{cc}", "prefect.resource.role": "member-state",
         "prefect.resource.name": view.member_state_name},
    ]
    return resource, related


def emit_status_event(kind: str, view: StatusView) -> None:
    """Emit ``roadmap.milestone.<kind>`` ("overdue" or "done") for one status row."""
    resource, related = _resources(view)
    emit_event(
        event=f"roadmap.milestone.{kind}",
        resource=resource,
        related=related,
        payload={"deadline": view.deadline_local.isoformat(), "days_left": view.days_left,
                 "working_days_left": view.working_days_left, "owner": view.owner},
    )


def emit_reminder_event(kind: str, view: StatusView, recipient: str, window: str, reason: str = "") -> None:
    """Emit ``roadmap.reminder.<kind>`` ("sent" or "failed") for one reminder item."""
    resource, related = _resources(view)
    payload = {"recipient": recipient, "window": window, "state": view.classification.value}
    if reason:
        payload["reason"] = reason
    emit_event(event=f"roadmap.reminder.{kind}", resource=resource, related=related, payload=payload)


def emit_summary_event(event: str, run_id: str, count: int) -> None:
    """Emit one ``event`` standing for ``count`` items beyond the per-run budget (large portfolios):
    the resource is the check run, the payload holds the count."""
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"roadmap.check-run.{run_id}", "prefect.resource.name": "nightly check"},
        payload={"items_not_emitted_one_by_one": count},
    )
