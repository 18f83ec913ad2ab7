"""The nightly status check: the main Prefect flow of roadmap-tracker.

The run graph reads like the roadmap: for a region's review, one task run per milestone of each
roadmap (named "<milestone> [<roadmap>]"); for a large portfolio, one per group of roadmaps (see
:data:`MILESTONE_TASKS_MAX`). Each roadmap's matrix and progress artifacts go out as soon as its
rows are classified, then one task sends every digest and escalation, then the summaries (which
list the channels that failed) and the timelines follow. Task runs grow with roadmaps and
milestones, never with status rows; memory holds one group's rows at a time.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import uuid
from collections import Counter, deque
from pathlib import Path
from dataclasses import dataclass, field

import pendulum
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import (
    Artifact,
    MarkdownArtifact,
    ProgressArtifact,
    TableArtifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from sqlalchemy import func, update
from sqlmodel import select

from flows.dashboard import (
    REMINDERS_ARTIFACT_KEY,
    SYMBOLS,
    artifact_key,
    content_digest,
    failures_section,
    matrix_rows,
    progress_percent,
    reminders_markdown,
    summary_parts,
)
from flows import progress
from flows.events import emit_reminder_event, emit_status_event, emit_summary_event
from flows.ics import calendar_dir, write_feeds
from flows.report import MilestoneBar, bars_from_tallies, render_timeline
from flows.reminders import ReminderReport, by_recipient, escalations, send_planned
from flows.tally import MilestoneTally, PlannedReminder, status_json
from models.db import session_scope
from models.deadlines import parse_instant
from models.transactions import in_transaction
from models.published import forget_published, latest_published_key, published_digests, remember_published
from models.status import ATTENTION_ORDER, Classification, Classifier
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


#: Up to this many milestones in one check, every milestone is its own task run, named after it
#: ("invitations [gcm-arab-2024]"), and each roadmap's progress artifact moves milestone by
#: milestone. Beyond, milestones are checked roadmap by roadmap in groups of about
#: :data:`GROUP_ROWS` status rows: task runs still grow with roadmaps, never with rows, and a
#: portfolio of thousands of roadmaps is not thousands of orchestrated task runs (issue "Scale").
MILESTONE_TASKS_MAX = 60
#: Status rows per grouped task run (a roadmap is never split).
GROUP_ROWS = 50_000
# Every task here has ``cache_policy=NO_CACHE``: a night's check must run every night, and the
# default policy would hash every input (hundreds of thousands of rows at scale) for nothing.

#: Status events (``roadmap.milestone.overdue`` / ``.done``) per kind and run; beyond it, one
#: summary event carries the count (a first night of a large portfolio would otherwise flood the
#: server's event queue, which drops what it cannot hold).
STATUS_EVENTS_PER_RUN = 1000
#: The same for reminder events (``roadmap.reminder.sent`` / ``.failed``), one per item.
REMINDER_EVENTS_PER_RUN = 1000


class _EventBudget:
    """A run's budget for one family of events (``roadmap.milestone``, ``roadmap.reminder``):
    ``limit`` events per kind, then one summary event per kind carries the count of the rest."""

    def __init__(self, family: str, limit: int) -> None:
        self.family, self.limit = family, limit
        self.emitted: Counter = Counter()
        self.skipped: Counter = Counter()

    def allow(self, kind: str, items: list, total: int | None = None) -> list:
        """The first of ``items`` that fit in the budget; the others (of ``total``, default all
        items) are counted for the summary."""
        allowed = items[: max(0, self.limit - self.emitted[kind])]
        self.emitted[kind] += len(allowed)
        self.skipped[kind] += (len(items) if total is None else total) - len(allowed)
        return allowed

    def flush(self, run_id: str) -> None:
        for kind, count in self.skipped.items():
            if count:
                emit_summary_event(f"{self.family}.{kind}", run_id, count)


def _emit_status_events(budget: _EventBudget, results: dict[str, list[MilestoneTally]]) -> None:
    """Emit ``roadmap.milestone.overdue`` / ``.done`` for the rows of a checked group that became so."""
    for tallies in results.values():
        for tally in tallies:
            for kind in (Classification.overdue.value, Classification.done.value):
                newly = tally.newly.get(kind)
                if newly is not None:
                    for view in budget.allow(kind, newly.items(), newly.total):
                        emit_status_event(kind, view)


@dataclass(frozen=True)
class CheckUnit:
    """One task run of the check: ``work`` is ((roadmap slug, milestone keys), ...)."""

    label: str
    work: tuple[tuple[str, tuple[str, ...]], ...]
    rows: int


def roadmaps_label(slugs: list[str]) -> str:
    """Name a group of roadmaps in a task run name: the slug, or "first … last (N roadmaps)"."""
    return slugs[0] if len(slugs) == 1 else f"{slugs[0]} … {slugs[-1]} ({len(slugs)} roadmaps)"


def milestone_by_milestone(refs: list[RoadmapRef]) -> bool:
    """True when the check runs one task per milestone (see :data:`MILESTONE_TASKS_MAX`)."""
    return sum(len(ref.milestones) for ref in refs) <= MILESTONE_TASKS_MAX


def plan_units(refs: list[RoadmapRef]) -> list[CheckUnit]:
    """Split the roadmaps' milestones into task runs (see :data:`MILESTONE_TASKS_MAX`)."""
    if milestone_by_milestone(refs):
        return [
            CheckUnit(f"{key} [{ref.slug}]", ((ref.slug, (key,)),), ref.rows)
            for ref in refs for key in ref.milestones
        ]
    units: list[CheckUnit] = []
    batch: list[RoadmapRef] = []

    def close() -> None:
        if batch:
            units.append(CheckUnit(roadmaps_label([r.slug for r in batch]), tuple((r.slug, r.milestones) for r in batch), sum(r.rows for r in batch)))
            batch.clear()

    rows = 0
    for ref in refs:
        if batch and rows + ref.rows > GROUP_ROWS:
            close()
            rows = 0
        batch.append(ref)
        rows += ref.rows
    close()
    return units


@task(name="check-milestones", task_run_name="{label}", cache_policy=NO_CACHE)
def check_milestones(
    label: str, work: tuple[tuple[str, tuple[str, ...]], ...], as_of: dt.datetime, keep_statuses: bool = True
) -> dict[str, list[MilestoneTally]]:
    """Classify the given milestones of each roadmap for every member state (one query per
    roadmap) and remember tonight's classification.

    Returns:
        {roadmap slug: [MilestoneTally in the order of the keys given]}.
    """
    classifier = Classifier(as_of)
    results: dict[str, list[MilestoneTally]] = {}
    with session_scope() as session:
        roadmap_rows = {r.slug: r for r in session.exec(select(Roadmap).where(Roadmap.slug.in_([slug for slug, _ in work])))}
        milestones: dict[int, list[Milestone]] = {}
        for m in session.exec(select(Milestone).where(Milestone.roadmap_id.in_([r.id for r in roadmap_rows.values()]))):
            milestones.setdefault(m.roadmap_id, []).append(m)
        for slug, keys in work:
            roadmap_row = roadmap_rows[slug]
            every = milestones.get(roadmap_row.id, [])
            by_key = {m.key: m for m in every}
            tallies = {key: MilestoneTally(slug, key, statuses=[] if keep_statuses else None) for key in keys}
            for context, rows in classifier.iter_classified(session, roadmap_row, [by_key[key] for key in keys], every):
                tallies[context.key].add_rows(context, rows)
            results[slug] = [tallies[key] for key in keys]

    def remember(session) -> None:
        for tallies in results.values():
            for tally in tallies:
                for state, ids in tally.transitions.items():
                    for start in range(0, len(ids), 5000):
                        session.execute(
                            update(Status).where(Status.id.in_(ids[start : start + 5000]))
                            .values(last_classification=state, last_checked_at=as_of)
                        )

    in_transaction(remember)
    return results


#: Dashboard artifacts of each roadmap, by kind (key ``<slug>-<kind>``).
DASHBOARD_KINDS = ("matrix", "progress", "summary")


@dataclass
class RoadmapDashboard:
    """What the check keeps of one classified roadmap until its artifacts are out: no rows."""

    slug: str
    title: str
    rows: int
    done: int
    matrix: list[dict[str, str]] | None
    summary_head: str
    summary_tail: str
    bars: list
    statuses: list[dict]
    #: Rows per classification value.
    counts: Counter = field(default_factory=Counter)
    #: Kinds of :data:`DASHBOARD_KINDS` to publish tonight (a large portfolio: only those changed).
    changed: tuple[str, ...] = DASHBOARD_KINDS
    #: {artifact key: content digest} (a large portfolio's check records them once published).
    digests: dict[str, str] = field(default_factory=dict)
    #: As-of instant of the check that found the dashboard as it is (tonight's when it changed).
    found_at: dt.datetime | None = None

    def summary_markdown(self) -> str:
        """A large portfolio's summary: published before the reminders, so failed channels are
        in the run's reminder report artifact."""
        return self.summary_head + failures_section(None, listed_elsewhere=True) + self.summary_tail


def dashboard_of(ref: RoadmapRef, tallies: list[MilestoneTally], as_of: dt.datetime, countdown: bool = True) -> RoadmapDashboard:
    """Render a roadmap's artifacts' content from its tallies (so the rows can be let go); without
    ``countdown``, content that changes only when a classification does (see
    :func:`flows.dashboard.summary_parts`)."""
    head, tail = summary_parts(ref.title, tallies, as_of, countdown)
    counts: Counter = Counter()
    for t in tallies:
        counts.update(t.counts)
    return RoadmapDashboard(
        slug=ref.slug, title=ref.title, rows=sum(t.rows for t in tallies), done=sum(t.done for t in tallies),
        matrix=matrix_rows(tallies, countdown), summary_head=head, summary_tail=tail, bars=bars_from_tallies(tallies),
        statuses=[status_json(v) for t in tallies for v in (t.statuses or ())], counts=counts, found_at=as_of,
    )


def keep_changed(dashboards: list[RoadmapDashboard]) -> list[RoadmapDashboard]:
    """A large portfolio's dashboards to publish: for each, the kinds whose content differs from
    what was last published (``published_artifact``); content not to publish is let go.

    Returns:
        The dashboards with at least one kind to publish (``changed`` set on every dashboard,
        ``found_at`` set back to the publishing check's instant where nothing changed).
    """
    for d in dashboards:
        d.digests = {
            artifact_key(d.slug, "matrix"): content_digest(d.matrix),
            artifact_key(d.slug, "progress"): content_digest(str(progress_percent(d.done, d.rows))),
            artifact_key(d.slug, "summary"): content_digest(d.summary_markdown()),
        }
    with session_scope() as session:
        known = published_digests(session, [key for d in dashboards for key in d.digests])
    publishing = []
    for d in dashboards:
        d.changed = tuple(kind for kind in DASHBOARD_KINDS
                          if known.get(artifact_key(d.slug, kind), (None,))[0] != d.digests[artifact_key(d.slug, kind)])
        if not d.changed:
            d.found_at = max(known[key][1] for key in d.digests)
            d.digests = {}
        if "matrix" not in d.changed:
            d.matrix = None
        if "summary" not in d.changed:
            d.summary_head = d.summary_tail = ""
        if d.changed:
            publishing.append(d)
    return publishing


def _published_dashboards_on_server() -> bool:
    """False when the database records published dashboards that the Prefect server does not have
    (a new or reset server): then every dashboard must go out again. One API call."""
    with session_scope() as session:
        key = latest_published_key(session)
    if key is None:
        return True
    with get_client(sync_client=True) as client:
        return bool(client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1))


#: Most roadmaps listed in the ``portfolio-overview`` artifact (those with most overdue rows first).
OVERVIEW_MAX_ROWS = 1000
#: Key of a whole portfolio's overview artifact, refreshed by every large-portfolio check.
OVERVIEW_ARTIFACT_KEY = "portfolio-overview"


def overview_rows(dashboards: list[RoadmapDashboard]) -> list[dict[str, str]]:
    """One row per roadmap, most overdue rows first (then slug), at most :data:`OVERVIEW_MAX_ROWS`:
    counts per classification that needs attention, share done, and the day of the check that
    found its dashboard as it is."""
    ranked = sorted(dashboards, key=lambda d: (-d.counts.get(Classification.overdue.value, 0), d.slug))
    rows = []
    for d in ranked[:OVERVIEW_MAX_ROWS]:
        rows.append({
            "roadmap": d.slug, "title": d.title, "status rows": str(d.rows),
            "% done": str(progress_percent(d.done, d.rows)),
            **{SYMBOLS[c]: str(d.counts.get(c.value, 0)) for c in ATTENTION_ORDER[:4]},
            "dashboard as of": d.found_at.date().isoformat() if d.found_at else "",
        })
    return rows


#: Groups of dashboards being published while the check goes on (see the flow).
PUBLISHING_AHEAD = 1
#: Artifact calls in flight at once when a task publishes many roadmaps' artifacts.
ARTIFACT_CONCURRENCY = 8


def _create_all(artifacts: list[Artifact]) -> None:
    """Create ``artifacts`` in the current task run, :data:`ARTIFACT_CONCURRENCY` requests at a
    time over one API client (a client per artifact costs a TLS context each: 17 ms)."""

    async def create_all() -> None:
        limit = asyncio.Semaphore(ARTIFACT_CONCURRENCY)
        async with get_client() as client:

            async def one(artifact: Artifact) -> None:
                async with limit:
                    await artifact.acreate(client)

            await asyncio.gather(*(one(artifact) for artifact in artifacts))

    asyncio.run(create_all())


@task(name="publish-dashboard", task_run_name="dashboard [{label}]", cache_policy=NO_CACHE)
def publish_dashboards(label: str, dashboards: list[RoadmapDashboard], as_of: dt.datetime, whole: bool) -> None:
    """Publish each roadmap's matrix table artifact, a few calls in flight at once. With ``whole``
    (a large portfolio, whose progress did not move milestone by milestone): only the kinds of
    each dashboard's ``changed``, its progress and its summary included (the summary points to
    the run's reminder report for failed channels), then record their digests."""
    artifacts: list[Artifact] = []
    found = f"as found by the check of {as_of.date().isoformat()} (republished when it changes)"
    for d in dashboards:
        if not whole:
            artifacts.append(TableArtifact(
                key=artifact_key(d.slug, "matrix"), table=d.matrix,
                description=f"{d.title}: where every member state stands on each milestone, as of {as_of.isoformat()}",
            ))
            continue
        if "matrix" in d.changed:
            artifacts.append(TableArtifact(
                key=artifact_key(d.slug, "matrix"), table=d.matrix,
                description=f"{d.title}: where every member state stands on each milestone, {found}",
            ))
        if "progress" in d.changed:
            artifacts.append(ProgressArtifact(
                key=artifact_key(d.slug, "progress"), progress=progress_percent(d.done, d.rows),
                description=f"{d.title}: share of status rows done or waived, {found}",
            ))
        if "summary" in d.changed:
            artifacts.append(MarkdownArtifact(key=artifact_key(d.slug, "summary"), markdown=d.summary_markdown(),
                                              description=f"{d.title}: overdue first, {found}"))
    _create_all(artifacts)
    if whole:
        published = {key: digest for d in dashboards for key, digest in d.digests.items()
                     if key.rsplit("-", 1)[1] in d.changed}
        in_transaction(lambda session: remember_published(session, published, as_of))
    for d in dashboards:  # published: let them go (a summary is 100 KB of UCS-4 text with its emoji)
        d.matrix = None
        if whole:
            d.summary_head = d.summary_tail = ""
        d.digests = {}


@task(name="publish-summary", task_run_name="summary [{label}]", cache_policy=NO_CACHE)
def publish_summaries(label: str, dashboards: list[RoadmapDashboard], failures: list[str]) -> None:
    """Publish each roadmap's summary markdown artifact, with tonight's channel failures."""
    failed = failures_section(failures)
    _create_all([MarkdownArtifact(key=artifact_key(d.slug, "summary"), markdown=d.summary_head + failed + d.summary_tail,
                                  description=f"{d.title}: overdue first") for d in dashboards])


def _channel_config() -> tuple[str | None, str]:
    """The Apprise config text from the Prefect Secret block named in ROADMAP_APPRISE_SECRET_BLOCK, if any."""
    name = os.environ.get(SECRET_BLOCK_ENV)
    if not name:
        return None, ""
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get()), f"Prefect Secret block {name!r}"


@task(name="send-reminders", cache_policy=NO_CACHE)
def send_reminders(
    planned: list[PlannedReminder], overdue_escalations: list[PlannedReminder], as_of: dt.datetime, run_id: str,
    already_sent: int = 0,
) -> ReminderReport:
    """Send tonight's digests (one per recipient), then the coordinators' escalations; each item
    is claimed in the reminder log before any message leaves. Publishes the run's reminder report
    (``nightly-check-reminders`` artifact: counts and the channels that failed). ``already_sent``
    counts the items the check skipped because their window was delivered on an earlier night."""
    report = _send_all(planned, overdue_escalations, as_of, run_id)
    report.already_sent += already_sent  # items the check did not plan: their window went out before
    create_markdown_artifact(
        key=REMINDERS_ARTIFACT_KEY,
        markdown=reminders_markdown(as_of, report.sent, report.already_sent, report.failed, report.escalated,
                                    report.messages, report.failures),
        description="Reminders of this check: counts and the channels that failed",
    )
    return report


def _send_all(planned, overdue_escalations, as_of, run_id) -> ReminderReport:
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
    events = _EventBudget("roadmap.reminder", REMINDER_EVENTS_PER_RUN)

    def on_result(kind: str, item: PlannedReminder, reason: str) -> None:
        for allowed in events.allow(kind, [item]):
            emit_reminder_event(kind, allowed.view, allowed.recipient, allowed.window, reason)

    if plan:
        report = send_planned(plan, hub=hub, as_of=as_of, run_id=run_id, on_result=on_result)
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


@task(name="publish-feeds", task_run_name="timeline and calendars [{label}]", cache_policy=NO_CACHE)
def publish_feeds(label: str, roadmaps: list[tuple[str, str, list[MilestoneBar]]], as_of: dt.datetime) -> None:
    """For each (slug, title, bars): draw the roadmap's timeline (``<slug>-timeline`` artifact) and
    write its calendar feeds (``<slug>-calendars`` link artifact)."""
    for roadmap, title, bars in roadmaps:
        _publish_feeds(roadmap, title, bars, as_of)


def _publish_feeds(roadmap: str, title: str, bars: list[MilestoneBar], as_of: dt.datetime) -> None:
    folder = report_dir() / roadmap
    folder.mkdir(parents=True, exist_ok=True)
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
    as_of: str | None = None, roadmaps: list[str] | None = None, include_statuses: bool = True, publish: bool = True,
    republish: bool = False,
) -> dict:
    """Check every milestone of every roadmap for every member state, publish the dashboard
    artifacts, and send each mission, office and the coordinators the reminders they need.

    Args:
        as_of: ISO-8601 instant with offset (e.g. "2024-06-05T09:00:00+02:00"); default now.
        roadmaps: slugs to check; default all.
        include_statuses: return every classified row (off for very large portfolios).
        publish: draw the timeline and write the calendar feeds (``ROADMAP_REPORT_DIR``,
            ``ROADMAP_CALENDAR_DIR``) with their artifacts.
        republish: a large portfolio (more than :data:`MILESTONE_TASKS_MAX` milestones)
            publishes a roadmap's matrix, progress and summary only when they changed since
            they last went out, and a ``portfolio-overview`` table every night; True publishes
            them all (the check also does when the Prefect server lost them).

    Returns:
        ``{"as_of", "statuses": [{"roadmap", "milestone", "member_state", "state", "deadline",
        "days_left"}], "reminders": {"sent", "already_sent", "failed"}}`` (JSON-ready).
    """
    logger = get_run_logger()
    moment = resolve_as_of(as_of)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    refs = {ref.slug: ref for ref in list_roadmaps(roadmaps)}
    units = plan_units(list(refs.values()))
    live_progress = milestone_by_milestone(list(refs.values()))
    if not live_progress and (republish or not _published_dashboards_on_server()):
        logger.info("publishing every roadmap's dashboard (%s)", "asked" if republish else "the Prefect server lacks them")
        in_transaction(forget_published)
    total_rows, rows_through = sum(ref.rows for ref in refs.values()), 0
    progress_ids: dict[str, object] = {}
    checked: dict[str, list[MilestoneTally]] = {}
    dashboards: list[RoadmapDashboard] = []
    planned: list[PlannedReminder] = []
    overdue_escalations: list[PlannedReminder] = []
    publishing: deque = deque()
    already_sent = 0
    status_events = _EventBudget("roadmap.milestone", STATUS_EVENTS_PER_RUN)
    for unit in units:
        if live_progress:  # one milestone per task run: the progress bar moves milestone by milestone
            slug = unit.work[0][0]
            if slug not in progress_ids:
                progress_ids[slug] = create_progress_artifact(
                    progress=0.0, key=artifact_key(slug, "progress"),
                    description=f"{refs[slug].title}: share of status rows done or waived (counting)",
                )
        # quote(): Prefect would otherwise walk every row of these values looking for futures.
        results = check_milestones(unit.label, quote(unit.work), moment, include_statuses)
        _emit_status_events(status_events, results)
        complete = []
        for slug, tallies in results.items():
            checked.setdefault(slug, []).extend(tallies)
            planned += [p for t in tallies for p in t.reminders]
            overdue_escalations += [p for t in tallies for p in t.escalations]
            already_sent += sum(t.already_sent for t in tallies)
            rows_through += sum(t.rows for t in tallies)
            if progress_ids.get(slug):
                update_progress_artifact(progress_ids[slug], progress_percent(
                    sum(t.done for t in checked[slug]), refs[slug].rows))
            if len(checked[slug]) == len(refs[slug].milestones):
                complete.append(dashboard_of(refs[slug], checked.pop(slug), moment, countdown=live_progress))
        progress.report(rows_through, total_rows)
        dashboards += complete
        if not live_progress:
            complete = keep_changed(complete)
        if complete:
            # In a worker thread while the next group is classified: the API server's work
            # overlaps ours. At most PUBLISHING_AHEAD groups wait for the server, so memory holds
            # a few groups' dashboards, not the portfolio's, when the server is the slower side.
            while len(publishing) >= PUBLISHING_AHEAD:
                publishing.popleft().result()
            publishing.append(publish_dashboards.submit(
                roadmaps_label([d.slug for d in complete]), quote(complete), moment, whole=not live_progress))
    empty = [dashboard_of(ref, [], moment, countdown=live_progress) for ref in refs.values() if not ref.milestones]
    dashboards += empty
    if not live_progress:
        empty = keep_changed(empty)
    if empty:
        publishing.append(publish_dashboards.submit("roadmaps without milestones", quote(empty), moment, whole=True))
    if not live_progress:
        create_table_artifact(
            key=OVERVIEW_ARTIFACT_KEY if roadmaps is None else None, table=overview_rows(dashboards),
            description=f"Every roadmap as of {moment.isoformat()}, most overdue rows first "
                        f"({len(dashboards)} roadmaps, at most {OVERVIEW_MAX_ROWS} listed)",
        )
    status_events.flush(run_id)
    report = send_reminders(quote(planned), quote(overdue_escalations), moment, run_id, already_sent)
    while publishing:
        publishing.popleft().result()  # a dashboard that failed to publish fails the run
    del planned, overdue_escalations
    if live_progress:  # a region's review: the summary lists tonight's failed channels itself
        publish_summaries(roadmaps_label([d.slug for d in dashboards]), quote(dashboards), report.failures)
    if publish:
        drawn = [(d.slug, d.title, d.bars) for d in dashboards if d.rows]
        for start in range(0, len(drawn), 100):
            batch = drawn[start : start + 100]
            publish_feeds(roadmaps_label([slug for slug, _, _ in batch]), quote(batch), moment)
    logger.info("checked %d status rows in %d roadmaps as of %s", total_rows, len(refs), moment.isoformat())
    statuses = []
    if include_statuses:
        statuses = [row for d in dashboards for row in d.statuses]
        statuses.sort(key=lambda s: (s["roadmap"], s["member_state"]))  # stable: milestones stay in file order
    return {
        "as_of": pendulum.instance(moment).isoformat(),
        "statuses": statuses,
        "reminders": report.as_dict(),
    }
