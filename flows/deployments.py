"""Deployments of roadmap-tracker: one definition used by ``roadmap serve`` and checked against prefect.yaml.

The nightly check runs at 05:00 in Cairo (the coordinators' zone): before the working day in
every member state, and clear of the hours whose clocks change (Cairo's at midnight: 2024-04-26
00:00 became 01:00 and 2024-10-31 24:00 became 23:00 in the IANA database; Europe's between 01:00
and 03:00). A deployment concurrency limit of 1 keeps two nightly runs from overlapping.
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

NIGHTLY_DEPLOYMENT = "nightly-status-check"
NIGHTLY_CRON = "0 5 * * *"
NIGHTLY_TIMEZONE = "Africa/Cairo"
NIGHTLY_SCHEDULE_SLUG = "nightly-0500-cairo"
RECORD_DEPLOYMENT = "record-status"
PORTFOLIO_DEPLOYMENT = "nightly-portfolio-check"
#: The child deployment of the portfolio fan-out: the nightly flow, unscheduled and unlimited.
PORTFOLIO_GROUP_DEPLOYMENT = "portfolio-group"


def nightly_schedule() -> Cron:
    """The nightly schedule: cron ``0 5 * * *`` in Africa/Cairo, with a stable slug."""
    return Cron(NIGHTLY_CRON, timezone=NIGHTLY_TIMEZONE, slug=NIGHTLY_SCHEDULE_SLUG)


def deployments() -> list:
    """Return the four runner deployments for ``prefect.serve``: the scheduled nightly check,
    record-status (run from the UI), the portfolio check and its per-group child (started by
    hand or by the portfolio check; see docs/scaling.md)."""
    from flows.nightly import nightly_status_check
    from flows.record import record_status
    from flows.portfolio import nightly_portfolio_check

    return [
        nightly_status_check.to_deployment(
            name=NIGHTLY_DEPLOYMENT, schedules=[nightly_schedule()], concurrency_limit=1,
            description="Checks every milestone for every member state; artifacts; reminders.",
        ),
        record_status.to_deployment(
            name=RECORD_DEPLOYMENT, description="Record a status from the Prefect UI.",
        ),
        nightly_portfolio_check.to_deployment(
            name=PORTFOLIO_DEPLOYMENT, concurrency_limit=1,
            description="Fans the nightly check out over the portfolio, one child run per group of roadmaps.",
        ),
        nightly_status_check.to_deployment(
            name=PORTFOLIO_GROUP_DEPLOYMENT, description="Checks one group of roadmaps for nightly-portfolio-check.",
        ),
    ]


def serve_all() -> None:  # pragma: no cover - blocks until interrupted
    """Serve the four deployments until interrupted (needs PREFECT_API_URL of a running server)."""
    serve(*deployments())
