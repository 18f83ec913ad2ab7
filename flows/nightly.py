"""The nightly status check, and recording a status: the Prefect flows of roadmap-tracker.

The run graph reads like the roadmap: one task run per milestone of each roadmap (named
"<milestone> [<roadmap>]"), then one task that sends every digest, one that escalates, one that
publishes each roadmap's artifacts. Task runs grow with roadmaps and milestones, never with
status rows.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from pathlib import Path
from dataclasses import dataclass

import pendulum
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from sqlalchemy import func, update
from sqlmodel import select

from flows.dashboard import artifact_key, matrix_rows, progress_percent, summary_markdown
from flows import progress
from flows.events import emit_reminder_event, emit_status_event, emit_summary_event
from flows.ics import calendar_dir, write_feeds
from flows.report import bars_from_tallies, render_timeline
from flows.reminders import ReminderReport, by_recipient, escalations, send_planned
from flows.tally import MilestoneTally, PlannedReminder, status_json
from models.db import session_scope
from models.deadlines import parse_instant
from models.transactions import in_transaction
from models.status import Classification, iter_milestone_views
from models.tables import Milestone, Roadmap, Status
from notifications.channels import ChannelConfigError, load_channels

#: Prefect Secret block holding the Apprise YAML config, when set (issue 4: secrets).
SECRET_BLOCK_ENV = "ROADMAP_APPRISE_SECRET_BLOCK"


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


@dataclass(frozen=True)
class RoadmapRef:
    """A roadmap to check: plain values only."""

    id: int
    slug: str
    title: str
    milestones: tuple[str, ...]
    rows: int


def list_roadmaps(slugs: list[str] | None = None) -> list[RoadmapRef]:
    """Roadmaps in the database (all, or those named), with their active milestones and row counts."""
    with session_scope() as session:
        query = select(Roadmap).order_by(Roadmap.slug)
        if slugs:
            query = query.where(Roadmap.slug.in_(slugs))
        refs = []
        for roadmap in session.exec(query):
            keys = tuple(session.exec(
                select(Milestone.key).where(Milestone.roadmap_id == roadmap.id, Milestone.active).order_by(Milestone.position)
            ))
            rows = session.exec(
                select(func.count(Status.id)).join(Milestone).where(Milestone.roadmap_id == roadmap.id, Milestone.active)
            ).one()
            refs.append(RoadmapRef(roadmap.id, roadmap.slug, roadmap.title, keys, rows))
        return refs


@task(name="check-milestone", task_run_name="{milestone} [{roadmap}]")
def check_milestone(roadmap: str, milestone: str, as_of: dt.datetime, keep_statuses: bool = True) -> MilestoneTally:
    """Classify one milestone for every member state (two set-based queries), emit events for
    rows that became overdue or done, and remember tonight's classification."""
    result = MilestoneTally(roadmap, milestone, statuses=[] if keep_statuses else None)
    with session_scope() as session:
        roadmap_row = session.exec(select(Roadmap).where(Roadmap.slug == roadmap)).one()
        milestone_row = session.exec(
            select(Milestone).where(Milestone.roadmap_id == roadmap_row.id, Milestone.key == milestone)
        ).one()
        for view in iter_milestone_views(session, roadmap_row, milestone_row, as_of):
            result.add(view)

    def remember(session) -> None:
        for state, ids in result.transitions.items():
            for start in range(0, len(ids), 5000):
                session.execute(
                    update(Status).where(Status.id.in_(ids[start : start + 5000]))
                    .values(last_classification=state, last_checked_at=as_of)
                )

    in_transaction(remember)
    for kind in (Classification.overdue.value, Classification.done.value):
        if kind in result.newly:
            for view in result.newly[kind].items():
                emit_status_event(kind, view)
    return result


def _channel_config() -> tuple[str | None, str]:
    """The Apprise config text from the Prefect Secret block named in ROADMAP_APPRISE_SECRET_BLOCK, if any."""
    name = os.environ.get(SECRET_BLOCK_ENV)
    if not name:
        return None, ""
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get()), f"Prefect Secret block {name!r}"


#: Reminder events emitted per run and kind, one per item; beyond it, one summary event per kind.
REMINDER_EVENTS_PER_RUN = 1000


class _ReminderEvents:
    """Emits ``roadmap.reminder.*`` per item up to :data:`REMINDER_EVENTS_PER_RUN` per kind, then counts."""

    def __init__(self) -> None:
        self.emitted: dict[str, int] = {}
        self.skipped: dict[str, int] = {}

    def __call__(self, kind: str, item: PlannedReminder, reason: str) -> None:
        if self.emitted.get(kind, 0) < REMINDER_EVENTS_PER_RUN:
            self.emitted[kind] = self.emitted.get(kind, 0) + 1
            emit_reminder_event(kind, item.view, item.recipient, item.window, reason)
        else:
            self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def flush(self, run_id: str) -> None:
        for kind, count in self.skipped.items():
            emit_summary_event(f"roadmap.reminder.{kind}", run_id, count)


@task(name="send-reminders")
def send_reminders(planned: list[PlannedReminder], overdue_escalations: list[PlannedReminder], as_of: dt.datetime, run_id: str) -> ReminderReport:
    """Send tonight's digests (one per recipient), then the coordinators' escalations; each item
    is claimed in the reminder log before any message leaves."""
    logger = get_run_logger()
    plan = by_recipient(planned)
    report = ReminderReport()
    try:
        text, source = _channel_config()
        hub = load_channels(set(plan) | {"coordinators"}, config_text=text, source=source)
    except (ChannelConfigError, ValueError) as exc:
        logger.error("no reminder sent: %s", exc)
        report.failed = len(planned)
        report.failures.append(f"channel configuration: {exc}")
        return report
    events = _ReminderEvents()
    if plan:
        report = send_planned(plan, hub=hub, as_of=as_of, run_id=run_id, on_result=events)
    events.flush(run_id)
    to_escalate, reasons = escalations(planned, overdue_escalations)
    if to_escalate:
        escalated = send_planned(by_recipient(to_escalate), hub=hub, as_of=as_of, run_id=run_id, reasons=reasons)
        report.escalated = escalated.sent
        report.failures += escalated.failures
    logger.info(
        "reminders: %d sent in %d digests, %d already sent, %d failed; %d escalated",
        report.sent, report.messages, report.already_sent, report.failed, report.escalated,
    )
    return report


@task(name="publish-artifacts", task_run_name="artifacts [{roadmap}]")
def publish_artifacts(roadmap: str, title: str, tallies: list[MilestoneTally], as_of: dt.datetime, failures: list[str]) -> None:
    """Publish the roadmap's matrix and summary artifacts (stable keys, versioned by Prefect)."""
    create_table_artifact(
        key=artifact_key(roadmap, "matrix"),
        table=matrix_rows(tallies),
        description=f"{title}: where every member state stands on each milestone, as of {as_of.isoformat()}",
    )
    create_markdown_artifact(
        key=artifact_key(roadmap, "summary"),
        markdown=summary_markdown(title, tallies, as_of, failures),
        description=f"{title}: overdue first",
    )


def report_dir() -> Path:
    """Folder of published pictures and pages (``ROADMAP_REPORT_DIR``, default ``./reports``)."""
    return Path(os.environ.get("ROADMAP_REPORT_DIR") or "reports")


def published_url(path: Path) -> str:
    """URL of a published file: under ``ROADMAP_PUBLISH_BASE_URL`` when the folders are served
    over HTTP (e.g. ``https://intranet/roadmap`` serving the working directory), else a file URI."""
    base = os.environ.get("ROADMAP_PUBLISH_BASE_URL")
    if base:
        return base.rstrip("/") + "/" + path.as_posix().lstrip("./")
    return path.resolve().as_uri()


#: Largest timeline PNG embedded in the markdown artifact (bytes); larger ones are linked.
EMBED_MAX_BYTES = 300_000


@task(name="publish-feeds", task_run_name="timeline and calendars [{roadmap}]")
def publish_feeds(roadmap: str, title: str, tallies: list[MilestoneTally], as_of: dt.datetime) -> None:
    """Draw the roadmap's timeline (``<slug>-timeline`` artifact) and write its calendar feeds
    (``<slug>-calendars`` link artifact)."""
    folder = report_dir() / roadmap
    folder.mkdir(parents=True, exist_ok=True)
    bars = bars_from_tallies(tallies)
    # Drawn under a unique name, then renamed: concurrent runs never write one file at once.
    partial = render_timeline(bars, as_of, folder / f".timeline.{uuid.uuid4().hex}.png")
    png = folder / "timeline.png"  # `roadmap report` also writes an SVG
    os.replace(partial, png)
    shares = ", ".join(f"{b.key} {round(100 * b.share_done)}% done" for b in bars)
    image = (
        f"![Timeline of {title}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})"
        if png.stat().st_size <= EMBED_MAX_BYTES else f"[Timeline (PNG)]({published_url(png)})"
    )
    with session_scope() as session:
        roadmap_row = session.exec(select(Roadmap).where(Roadmap.slug == roadmap)).one()
        feeds = write_feeds(session, roadmap_row, calendar_dir(), as_of)
    create_markdown_artifact(
        key=artifact_key(roadmap, "timeline"),
        markdown=f"# {title}: timeline as of {as_of.date().isoformat()}\n\n{image}\n\n{shares}\n\n"
        f"[calendar of all deadlines]({published_url(feeds[0])})",
        description=f"{title}: milestones on a date axis, shaded by their share done",
    )
    create_link_artifact(
        key=artifact_key(roadmap, "calendars"),
        link=published_url(feeds[0]),
        link_text=f"{title}: deadlines and agenda (ICS, {len(feeds) - 1} member state feeds beside it)",
        description="RFC 5545 calendar feeds: all.ics and one <cc>.ics per member state",
    )


@flow(name="nightly-status-check")
def nightly_status_check(
    as_of: str | None = None, roadmaps: list[str] | None = None, include_statuses: bool = True, publish: bool = True
) -> dict:
    """Check every milestone of every roadmap for every member state, publish the dashboard
    artifacts, and send each mission, office and the coordinators the reminders they need.

    Args:
        as_of: ISO-8601 instant with offset (e.g. "2024-06-05T09:00:00+02:00"); default now.
        roadmaps: slugs to check; default all.
        include_statuses: return every classified row (off for very large portfolios).
        publish: draw the timeline and write the calendar feeds (``ROADMAP_REPORT_DIR``,
            ``ROADMAP_CALENDAR_DIR``) with their artifacts.

    Returns:
        ``{"as_of", "statuses": [{"roadmap", "milestone", "member_state", "state", "deadline",
        "days_left"}], "reminders": {"sent", "already_sent", "failed"}}`` (JSON-ready).
    """
    logger = get_run_logger()
    moment = resolve_as_of(as_of)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    refs = list_roadmaps(roadmaps)
    tallies: dict[str, list[MilestoneTally]] = {}
    total_rows, rows_through = sum(ref.rows for ref in refs), 0
    for ref in refs:
        progress_id = create_progress_artifact(
            progress=0.0, key=artifact_key(ref.slug, "progress"),
            description=f"{ref.title}: share of status rows done or waived (counting)",
        )
        done = 0
        tallies[ref.slug] = []
        for key in ref.milestones:
            result = check_milestone(ref.slug, key, moment, include_statuses)
            tallies[ref.slug].append(result)
            done += result.done
            rows_through += result.rows
            progress.report(rows_through, total_rows)
            if progress_id:
                update_progress_artifact(progress_id, progress_percent(done, ref.rows))
    planned = [p for ts in tallies.values() for t in ts for p in t.reminders]
    overdue_escalations = [p for ts in tallies.values() for t in ts for p in t.escalations]
    # quote(): Prefect would otherwise walk every row of these lists looking for futures.
    report = send_reminders(quote(planned), quote(overdue_escalations), moment, run_id)
    for ref in refs:
        publish_artifacts(ref.slug, ref.title, quote(tallies[ref.slug]), moment, report.failures)
        if publish and ref.rows:
            publish_feeds(ref.slug, ref.title, quote(tallies[ref.slug]), moment)
    rows = sum(ref.rows for ref in refs)
    logger.info("checked %d status rows in %d roadmaps as of %s", rows, len(refs), moment.isoformat())
    statuses = []
    if include_statuses:
        statuses = [status_json(v) for ts in tallies.values() for t in ts for v in t.statuses]
        statuses.sort(key=lambda s: (s["roadmap"], s["member_state"]))  # stable: milestones stay in file order
    return {
        "as_of": pendulum.instance(moment).isoformat(),
        "statuses": statuses,
        "reminders": report.as_dict(),
    }
