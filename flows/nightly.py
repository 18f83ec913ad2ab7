"""The nightly status check: the main Prefect flow of roadmap-tracker.

The run graph reads like the roadmap: for a region's review, one task run per milestone of each
roadmap (named "<milestone> [<roadmap>]"); for a large portfolio, one per group of roadmaps (see
:data:`MILESTONE_TASKS_MAX`). Each roadmap's matrix and progress artifacts go out as soon as its
rows are classified, then one task sends every digest and escalation, then the summaries (which
list the channels that failed) and the timelines follow. A large portfolio publishes a
roadmap's artifacts, summary included, only when they changed, and an overview every night
(:mod:`flows.publishing`). Task runs grow with roadmaps and milestones, never with status rows;
memory holds one group's rows at a time.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable

import pendulum
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from sqlalchemy import func, update
from sqlmodel import select

from flows import progress
from flows.collector import collector_paused, freeze_survivors, frozen_until_done, map_large_blocks, release_free_memory
from flows.dashboard import REMINDERS_ARTIFACT_KEY, artifact_key, progress_percent, reminders_markdown
from flows.events import emit_reminder_event, emit_status_event, emit_summary_event
from flows.publishing import (
    OVERVIEW_ARTIFACT_KEY,
    OVERVIEW_MAX_ROWS,
    PUBLISHING_AHEAD,
    RoadmapDashboard,
    dashboard_of,
    keep_changed,
    overview_rows,
    publish_dashboards,
    publish_feeds,
    publish_summaries,
    published_dashboards_on_server,
    ready_folders,
    settle,
)
from flows.reminders import ReminderReport, escalations, send_planned
from flows.tally import MilestoneTally, PlannedReminder, ReminderPlan
from models.db import session_scope
from models.deadlines import parse_instant
from models.parties import coordinators_at_work
from models.published import forget_published
from models.status import Classification, Classifier, milestones_to_read, read_ahead
from models.tables import Milestone, Roadmap, Status
from models.transactions import in_transaction
from notifications.channels import ChannelConfigError, load_channels
from notifications.plurals import english_count

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
    """A roadmap to check: plain values only. ``first_due`` is the earliest local due date of
    its active milestones (None without any)."""

    id: int
    slug: str
    title: str
    milestones: tuple[str, ...]
    rows: int
    first_due: dt.date | None = None
    #: The coordinators' public mailbox ("" when the roadmap file gives none).
    coordinator_email: str = ""


def list_roadmaps(slugs: list[str] | None = None) -> list[RoadmapRef]:
    """Active roadmaps in the database (all, or those named; a retired one is left out), by
    slug, with their active milestones (in file order), active status rows counted, and
    earliest due date.

    Three queries whatever the number of roadmaps: at 1M status rows, two queries per roadmap
    were 3,066 round trips and 3.6 s of the check on PostgreSQL (``benchmarks/nightly_check.py``).
    """
    with session_scope() as session:
        query = (select(Roadmap.id, Roadmap.slug, Roadmap.title, Roadmap.coordinator_email)
                 .where(Roadmap.active).order_by(Roadmap.slug))
        if slugs:
            query = query.where(Roadmap.slug.in_(slugs))
        roadmaps = session.exec(query).all()

        def of_these(milestone_query):
            return milestone_query.where(Milestone.roadmap_id.in_([r.id for r in roadmaps])) if slugs else milestone_query

        keys: dict[int, list[str]] = {}
        first_due: dict[int, dt.date] = {}
        for roadmap_id, key, due in session.exec(of_these(
            select(Milestone.roadmap_id, Milestone.key, Milestone.due_date).where(Milestone.active)
            .order_by(Milestone.roadmap_id, Milestone.position)
        )):
            keys.setdefault(roadmap_id, []).append(key)
            first_due[roadmap_id] = min(due, first_due.get(roadmap_id, due))
        counts = dict(session.exec(of_these(
            select(Milestone.roadmap_id, func.count(Status.id)).join(Status, Status.milestone_id == Milestone.id)
            .where(Milestone.active, Status.active).group_by(Milestone.roadmap_id)
        )).all())
        return [RoadmapRef(id_, slug, title, tuple(keys.get(id_, ())), counts.get(id_, 0), first_due.get(id_), email)
                for id_, slug, title, email in roadmaps]


#: Up to this many milestones in one check, every milestone is its own task run, named after it
#: ("invitations [gcm-arab-2024]"), and each roadmap's progress artifact moves milestone by
#: milestone. Beyond, milestones are checked roadmap by roadmap in groups of about
#: :data:`GROUP_ROWS` status rows: task runs still grow with roadmaps, never with rows, and a
#: portfolio of thousands of roadmaps is not thousands of orchestrated task runs (issue "Scale").
#: Groups follow the roadmaps' first deadlines (:func:`plan_units`).
MILESTONE_TASKS_MAX = 60
#: Status rows per grouped task run (a roadmap is never split). What a group keeps until its
#: dashboards are rendered (its rows that a summary may list, its matrix cells, the texts) is
#: most of the check's memory peak: at 1M status rows, 25,000 rows a group brought the peak
#: from 341 MB to 311 MB for twice the task runs of 50,000 (``benchmarks/nightly_check.py``).
GROUP_ROWS = 25_000
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

    def allow(self, kind: str, items: list | Callable[[], list], total: int | None = None) -> list:
        """The first of ``items`` that fit in the budget; the others (of ``total``, default all
        items) are counted for the summary. ``items`` may be a function that returns them: it
        is not called once the budget of ``kind`` is spent (``total`` is then required), so a
        first night does not build views of rows it only counts."""
        left = max(0, self.limit - self.emitted[kind])
        if callable(items):
            if not left:
                self.skipped[kind] += total
                return []
            items = items()
        allowed = items[:left]
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
                    for view in budget.allow(kind, newly.items, newly.total):
                        emit_status_event(kind, view)


@dataclass(frozen=True)
class CheckUnit:
    """One task run of the check: ``work`` is ((roadmap slug, milestone keys), ...)."""

    label: str
    work: tuple[tuple[str, tuple[str, ...]], ...]
    rows: int


def roadmaps_label(slugs: list[str]) -> str:
    """Name a group of roadmaps in a task run name: the slug, or "N roadmaps (first, second, …)".
    Not a range of slugs: large groups follow the roadmaps' deadlines (:func:`plan_units`)."""
    if len(slugs) == 1:
        return slugs[0]
    return f"{len(slugs)} roadmaps ({', '.join(slugs[:2])}{', …' if len(slugs) > 2 else ''})"


def milestone_by_milestone(refs: list[RoadmapRef]) -> bool:
    """True when the check runs one task per milestone (see :data:`MILESTONE_TASKS_MAX`)."""
    return sum(len(ref.milestones) for ref in refs) <= MILESTONE_TASKS_MAX


def plan_units(refs: list[RoadmapRef]) -> list[CheckUnit]:
    """Split the roadmaps' milestones into task runs (see :data:`MILESTONE_TASKS_MAX`).

    A small portfolio: one unit per milestone, roadmaps in the order given. A large one: groups
    of whole roadmaps taken in the order of their first deadline (then slug), labelled with
    their slugs and the span of those deadlines; a roadmap without active milestones is in none.

    Roadmaps prepared on one timetable share their deadlines, and a task run works out what a
    (deadline, zone, calendar) means once for all its rows (:class:`models.status.Classifier`):
    at 1M status rows, groups of roadmaps in slug order worked out 346,000 row outcomes, groups
    by first deadline 182,000, and classification alone went from 28 s to 19 s
    (``benchmarks/classification.py``).
    """
    if milestone_by_milestone(refs):
        return [
            CheckUnit(f"{key} [{ref.slug}]", ((ref.slug, (key,)),), ref.rows)
            for ref in refs for key in ref.milestones
        ]
    units: list[CheckUnit] = []
    batch: list[RoadmapRef] = []

    def close() -> None:
        if batch:
            label = roadmaps_label([r.slug for r in batch])
            first, last = batch[0].first_due, batch[-1].first_due  # the batch is in deadline order
            if first is not None:
                label += f", first deadline {first}" if first == last else f", first deadlines {first} to {last}"
            units.append(CheckUnit(label, tuple((r.slug, r.milestones) for r in batch), sum(r.rows for r in batch)))
            batch.clear()

    rows = 0
    # A roadmap without active milestones has nothing to check: the flow gives it its dashboard
    # on its own (in a group too, it got two).
    for ref in sorted((r for r in refs if r.milestones), key=lambda r: (r.first_due or dt.date.max, r.slug)):
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
    roadmap) as of ``as_of`` (an aware instant; a naive one raises ``ValueError``) and remember
    tonight's classification.

    Returns:
        {roadmap slug: [MilestoneTally in the order of the keys given]}.
    """
    classifier = Classifier(as_of)
    shared: dict = {}  # the tallies' (flows.tally), for the outcomes the classifier shares
    results: dict[str, list[MilestoneTally]] = {}
    with session_scope() as session:
        roadmap_rows = {r.slug: r for r in session.exec(select(Roadmap).where(Roadmap.slug.in_([slug for slug, _ in work])))}
        milestones: dict[int, list[Milestone]] = {}
        for m in session.exec(select(Milestone).where(Milestone.roadmap_id.in_([r.id for r in roadmap_rows.values()]))):
            milestones.setdefault(m.roadmap_id, []).append(m)
        plan = []  # (slug, keys, roadmap, its milestones to check, all its milestones)
        for slug, keys in work:
            roadmap_row = roadmap_rows[slug]
            every = milestones.get(roadmap_row.id, [])
            by_key = {m.key: m for m in every}
            plan.append((slug, keys, roadmap_row, [by_key[key] for key in keys], every))
        # The next roadmap's rows are read while this one is classified (models.status.read_ahead).
        reads = read_ahead(session.get_bind(), (milestones_to_read(wanted, every) for _, _, _, wanted, every in plan))
        for (slug, keys, roadmap_row, wanted, every), read in zip(plan, reads, strict=True):
            tallies = {key: MilestoneTally(slug, key, statuses=[] if keep_statuses else None, shared=shared) for key in keys}
            escalating = coordinators_at_work(roadmap_row.coordinator_country, roadmap_row.coordinator_timezone, as_of)
            for context, rows in classifier.iter_classified(session, roadmap_row, wanted, every, rows=read):
                tallies[context.key].add_rows(context, rows, escalating)
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


def _channel_config() -> tuple[str | None, str]:
    """The Apprise config text from the Prefect Secret block named in ROADMAP_APPRISE_SECRET_BLOCK, if any."""
    name = os.environ.get(SECRET_BLOCK_ENV)
    if not name:
        return None, ""
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get()), f"Prefect Secret block {name!r}"


def night_channels(recipients: set[str] | frozenset[str] = frozenset({"coordinators"})):
    """The night's channels (an ``apprise.Apprise``): the Apprise config of the Prefect Secret
    block named in ``ROADMAP_APPRISE_SECRET_BLOCK``, else of the file in
    ``ROADMAP_APPRISE_CONFIG``, else an ``outbox://<tag>`` channel per tag of ``recipients``
    (:func:`notifications.channels.load_channels`).

    Raises:
        notifications.channels.ChannelConfigError: the config cannot be read or used.
        ValueError: the Secret block cannot be loaded (Prefect's error: no block of that name).
    """
    text, source = _channel_config()
    return load_channels(set(recipients) | {"coordinators"}, config_text=text, source=source)


@task(name="send-reminders", cache_policy=NO_CACHE)
def send_reminders(
    planned: ReminderPlan, overdue_escalations: ReminderPlan, as_of: dt.datetime, run_id: str, already_sent: int = 0,
    mailboxes: dict[str, str] | None = None,
) -> ReminderReport:
    """Send tonight's digests (one per recipient), then the coordinators' escalations, as of
    ``as_of`` (aware: the dates the digests show); each item is claimed in the reminder log
    before any message leaves. Both plans are emptied as their digests go out. Logs the counts
    and publishes the run's reminder report (``nightly-check-reminders`` artifact: counts and
    the channels that failed). ``already_sent`` counts the items the check skipped because
    their window was delivered on an earlier night. ``mailboxes``: {roadmap slug: its
    coordinators' public mailbox}, named in the missions' and offices' digests."""
    report = _send_all(planned, overdue_escalations, as_of, run_id, mailboxes or {})
    report.already_sent += already_sent  # items the check did not plan: their window went out before
    _log_report(report)
    create_markdown_artifact(
        key=REMINDERS_ARTIFACT_KEY,
        markdown=reminders_markdown(as_of, report.sent, report.already_sent, report.failed, report.escalated,
                                    report.messages, report.failures, report.in_flight),
        description="Reminders of this check: counts and the channels that failed",
    )
    return report


def _send_all(planned, overdue_escalations, as_of, run_id, mailboxes) -> ReminderReport:
    logger = get_run_logger()
    plan = planned.recipients
    report = ReminderReport()
    try:
        hub = night_channels(set(plan))
    except (ChannelConfigError, ValueError) as exc:
        logger.error("no reminder sent: %s", exc)
        report.failed = len(planned)
        report.failures.append(f"channel configuration: {exc}")
        report.config_error = str(exc)
        return report
    events = _EventBudget("roadmap.reminder", REMINDER_EVENTS_PER_RUN)
    failed: dict[int, tuple] = {}  # {status id: source} of the items whose digest failed tonight

    def on_result(kind: str, item: PlannedReminder, reason: str) -> None:
        if kind == "failed":
            failed[item.status_id] = item.source
        for allowed in events.allow(kind, [item]):
            emit_reminder_event(kind, allowed.view, allowed.recipient, allowed.window, reason)

    if plan:
        # Each recipient's items are let go once its digest is out (consume): the night's plan
        # is not held while the escalations are claimed.
        report = send_planned(plan, hub=hub, as_of=as_of, run_id=run_id, on_result=on_result, consume=True,
                              mailboxes=mailboxes)
    events.flush(run_id)
    to_escalate, reasons = escalations(failed, overdue_escalations, as_of)
    if to_escalate:
        escalated = send_planned(to_escalate.recipients, hub=hub, as_of=as_of, run_id=run_id, reasons=reasons,
                                 consume=True)
        report.add_escalations(escalated)
    return report


def _log_report(report: ReminderReport) -> None:
    """The run log's account of the night's reminders: the counts ``roadmap check --json``
    gives (found by a fault review: the log left out the items skipped before planning, so it
    said "0 already sent" where the JSON said 16), then the failed digests."""
    logger = get_run_logger()
    logger.info(
        "reminders: %d sent in %d digests, %d already sent, %d failed; %d escalated%s",
        report.sent, report.messages, report.already_sent, report.failed, report.escalated,
        f"; {report.in_flight} held by another run" if report.in_flight else "",
    )
    if report.failures:
        # Found by a coordinator's walkthrough: a deployment's run logged the counts only; which
        # recipients failed, and why, was in the reminder artifact alone.
        shown = report.failures[:FAILURES_LOGGED]
        more = len(report.failures) - len(shown)
        logger.warning("digests that failed (%d): %s%s", len(report.failures), "; ".join(shown),
                       f"; and {more} more in the {REMINDERS_ARTIFACT_KEY} artifact" if more else "")


#: Failed digests named in the run's log, at most (each is "<tag>: <reason>"); the reminder
#: artifact lists them all.
FAILURES_LOGGED = 20


#: Publications (the only tasks the check submits) run one at a time, in order, in one worker
#: thread; the groups waiting hold their packed content only. Prefect's default runner starts a
#: thread per submitted task: with every group's publication in flight at once, each with its own
#: API client and event loop, the check's peak at 1M status rows was 311 MB, against 291 MB one at
#: a time (``benchmarks/nightly_check.py``).
CHECK_TASK_RUNNER = ThreadPoolTaskRunner(max_workers=1)


@flow(name="nightly-status-check", task_runner=CHECK_TASK_RUNNER)
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
        ``{"as_of", "statuses": [{"roadmap", "milestone", "member_state", "state",
        "recorded_state", "deadline", "days_left"}], "reminders": {"sent", "already_sent",
        "failed", "escalated", "in_flight"}}`` (JSON-ready; :func:`flows.tally.status_json`;
        :meth:`flows.reminders.ReminderReport.as_dict`).

    Raises:
        models.db.SettingError: a report or calendar folder cannot be written (before anything
            is sent).
        notifications.channels.ChannelConfigError: no channel could be loaded (see
            :func:`night_channels`): raised at the end, once the dashboards are published, so
            that the run fails and the coordinators' automation tells them.
    """
    map_large_blocks()  # large blocks go back to the system when freed (flows.collector)
    with frozen_until_done():  # what each group froze (flows.collector) goes back to the collector
        return _check_portfolio(as_of, roadmaps, include_statuses, publish, republish)


def _check_portfolio(as_of, roadmaps, include_statuses, publish, republish) -> dict:
    """The body of :func:`nightly_status_check` (same arguments and result)."""
    logger = get_run_logger()
    moment = resolve_as_of(as_of)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    refs = {ref.slug: ref for ref in list_roadmaps(roadmaps)}
    if publish:
        ready_folders(list(refs))
    units = plan_units(list(refs.values()))
    live_progress = milestone_by_milestone(list(refs.values()))
    if not live_progress and (republish or not published_dashboards_on_server()):
        logger.info("publishing every roadmap's dashboard (%s)", "asked" if republish else "the Prefect server lacks them")
        in_transaction(forget_published)
    total_rows, rows_through = sum(ref.rows for ref in refs.values()), 0
    progress_ids: dict[str, object] = {}
    checked: dict[str, list[MilestoneTally]] = {}
    dashboards: list[RoadmapDashboard] = []
    planned, overdue_escalations = ReminderPlan(), ReminderPlan()
    publishing: deque = deque()
    already_sent = 0
    status_events = _EventBudget("roadmap.milestone", STATUS_EVENTS_PER_RUN)
    for unit in units:
        # The collector is paused for the group (flows.collector): classifying it and rendering
        # its dashboards made 12.8 s of collections in a 42 s check at 1M status rows. A large
        # portfolio then collects the group's young garbage and freezes what it keeps for the
        # night (the reminder plan), so that no later collection walks it again.
        with collector_paused():
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
                for t in tallies:
                    planned.merge(t.reminders)
                    overdue_escalations.merge(t.escalations)
                already_sent += sum(t.already_sent for t in tallies)
                rows_through += sum(t.rows for t in tallies)
                if progress_ids.get(slug):
                    update_progress_artifact(progress_ids[slug], progress_percent(
                        sum(t.done for t in checked[slug]), refs[slug].rows))
                if len(checked[slug]) == len(refs[slug].milestones):
                    d = dashboard_of(slug, refs[slug].title, checked.pop(slug), moment, countdown=live_progress,
                                     bars=publish)
                    # A large portfolio's dashboard waits for the group's end settled: as UTF-8, not
                    # rows and 4-byte characters.
                    complete.append(d if live_progress else settle(d))
            progress.report(rows_through, total_rows)
            dashboards += complete
            if not live_progress:
                complete = keep_changed(complete)
            if complete:
                # In the flow's one worker thread while the next groups are classified: the API
                # server's work overlaps ours. At most PUBLISHING_AHEAD groups wait for the server,
                # so memory holds a few groups' dashboards, not the portfolio's, when the server is
                # the slower side.
                while len(publishing) >= PUBLISHING_AHEAD:
                    publishing.popleft().result()
                publishing.append(publish_dashboards.submit(
                    roadmaps_label([d.slug for d in complete]), quote(complete), moment, whole=not live_progress))
            del results, complete
            if not live_progress:
                freeze_survivors()
    empty = [dashboard_of(ref.slug, ref.title, [], moment, countdown=live_progress) for ref in refs.values() if not ref.milestones]
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
    if not live_progress:
        release_free_memory()  # what the groups' threads freed, before the night's digests
    mailboxes = {ref.slug: ref.coordinator_email for ref in refs.values() if ref.coordinator_email}
    report = send_reminders(quote(planned), quote(overdue_escalations), moment, run_id, already_sent, mailboxes)
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
    logger.info("checked %s in %s as of %s", english_count(total_rows, "status row"), english_count(len(refs), "roadmap"),
                moment.isoformat())
    if report.config_error:
        # Found by a new user's walkthrough: with no usable channel config every reminder failed
        # and the run still completed, so the "nightly check failed" automation never told the
        # coordinators. The dashboards are out; the reminders go on a later night.
        raise ChannelConfigError(f"no reminder sent tonight ({report.failed} failed): {report.config_error}")
    statuses = []
    if include_statuses:
        statuses = [row for d in dashboards for row in d.statuses]
        statuses.sort(key=lambda s: (s["roadmap"], s["member_state"]))  # stable: milestones stay in file order
    return {
        "as_of": pendulum.instance(moment).isoformat(),
        "statuses": statuses,
        "reminders": report.as_dict(),
    }
