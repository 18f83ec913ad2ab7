"""The nightly status check, and recording a status: the Prefect flows of roadmap-tracker."""

from __future__ import annotations

import datetime as dt
import uuid

import pendulum
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.runtime import flow_run
from sqlmodel import select

from flows.dashboard import artifact_key, matrix_rows, progress_percent, summary_markdown
from flows.reminders import ReminderReport, plan_reminders, send_planned
from models.db import session_scope
from models.deadlines import parse_instant
from models.status import StatusView, iter_status_views
from models.status import record_status as record_status_row
from models.tables import Roadmap
from notifications.channels import ChannelConfigError, load_channels


def resolve_as_of(as_of: str | dt.datetime | None) -> dt.datetime:
    """Return the check's instant: ``as_of`` (ISO-8601 with offset, or aware) or now, as aware UTC.

    Raises:
        ValueError: text that is not ISO-8601 with an offset; a naive datetime.
    """
    if as_of is None:
        return dt.datetime.now(dt.timezone.utc)
    if isinstance(as_of, dt.datetime):
        if as_of.tzinfo is None:
            raise ValueError(f"as_of {as_of!r} is naive: give a UTC offset")
        return as_of.astimezone(dt.timezone.utc)
    return parse_instant(as_of).in_tz("UTC")


@task(name="check-roadmap")
def check_roadmap(slug: str, as_of: dt.datetime) -> list[StatusView]:
    """Classify every status row of one roadmap at ``as_of`` (one streamed query)."""
    with session_scope() as session:
        roadmap = session.exec(select(Roadmap).where(Roadmap.slug == slug)).one()
        return list(iter_status_views(session, roadmap, as_of))


@task(name="publish-artifacts")
def publish_artifacts(slug: str, title: str, views: list[StatusView], as_of: dt.datetime, failures: list[str]) -> None:
    """Publish the roadmap's matrix, progress and summary artifacts (stable keys, versioned by Prefect)."""
    create_table_artifact(
        key=artifact_key(slug, "matrix"),
        table=matrix_rows(views),
        description=f"{title}: where every member state stands on each milestone, as of {as_of.isoformat()}",
    )
    create_progress_artifact(
        key=artifact_key(slug, "progress"),
        progress=progress_percent(views),
        description=f"{title}: share of status rows done or waived",
    )
    create_markdown_artifact(
        key=artifact_key(slug, "summary"),
        markdown=summary_markdown(title, views, as_of, failures),
        description=f"{title}: overdue first",
    )


@task(name="send-reminders")
def send_reminders(views: list[StatusView], as_of: dt.datetime, run_id: str) -> ReminderReport:
    """Send tonight's digests: one per recipient, each reminder claimed in the log before sending."""
    logger = get_run_logger()
    plan = plan_reminders(views)
    if not plan:
        return ReminderReport()
    try:
        hub = load_channels(plan.keys())
    except ChannelConfigError as exc:
        logger.error("no reminder sent: %s", exc)
        report = ReminderReport(failed=sum(len(items) for items in plan.values()))
        report.failures.append(f"channel configuration: {exc}")
        return report
    report = send_planned(plan, hub=hub, as_of=as_of, run_id=run_id)
    logger.info(
        "reminders: %d sent in %d digests, %d already sent, %d failed",
        report.sent, report.messages, report.already_sent, report.failed,
    )
    return report


def _status_json(view: StatusView) -> dict:
    return {
        "roadmap": view.roadmap,
        "milestone": view.milestone,
        "member_state": view.member_state,
        "state": view.classification.value,
        "deadline": view.deadline_local.isoformat(),
        "days_left": view.days_left,
    }


@flow(name="nightly-status-check")
def nightly_status_check(as_of: str | None = None) -> dict:
    """Check every milestone of every roadmap for every member state, publish the dashboard
    artifacts, and send each mission, office and the coordinators the reminders they need.

    Args:
        as_of: ISO-8601 instant with offset (e.g. "2024-06-05T09:00:00+02:00"); default now.

    Returns:
        ``{"as_of", "statuses": [{"roadmap", "milestone", "member_state", "state", "deadline",
        "days_left"}], "reminders": {"sent", "already_sent", "failed"}}`` (JSON-ready).
    """
    logger = get_run_logger()
    moment = resolve_as_of(as_of)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    with session_scope() as session:
        roadmaps = [(r.slug, r.title) for r in session.exec(select(Roadmap).order_by(Roadmap.slug))]
    checked = {slug: check_roadmap(slug, moment) for slug, _ in roadmaps}
    every_view = [view for views in checked.values() for view in views]
    report = send_reminders(every_view, moment, run_id)
    for slug, title in roadmaps:
        publish_artifacts(slug, title, checked[slug], moment, report.failures)
    logger.info(
        "checked %d status rows in %d roadmaps as of %s", len(every_view), len(roadmaps), moment.isoformat()
    )
    return {
        "as_of": pendulum.instance(moment).isoformat(),
        "statuses": [
            _status_json(v)
            # views come in (member state, milestone position) order; keep milestones in roadmap order
            for v in sorted(every_view, key=lambda v: (v.roadmap, v.member_state))
        ],
        "reminders": report.as_dict(),
    }


@flow(name="record-status")
def record_status(
    milestone: str,
    member_state: str,
    state: str,
    note: str | None = None,
    roadmap: str | None = None,
    changed_by: str = "prefect-ui",
) -> dict:
    """Record where one member state stands on one milestone (e.g. invitations, JO, done).

    Returns ``{"roadmap", "milestone", "member_state", "state", "note"}``.

    Raises:
        models.status.StatusError: unknown milestone, member state, roadmap or state.
    """
    with session_scope() as session:
        row = record_status_row(
            session, milestone=milestone, member_state=member_state, state=state, note=note,
            changed_by=changed_by, roadmap=roadmap,
        )
        return {"milestone": milestone, "member_state": row.member_state_code, "state": row.state, "note": row.note}


def database_in_use() -> str:
    """The database URL with any password masked (for logs)."""
    from sqlalchemy.engine import make_url

    from models.db import database_url

    return make_url(database_url()).render_as_string(hide_password=True)

