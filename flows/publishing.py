"""Publishing what the nightly check found: each roadmap's dashboard artifacts (matrix, progress,
summary), a large portfolio's overview, and the timelines and calendar feeds.

A region's review publishes everything every night. A large portfolio (see
:data:`flows.nightly.MILESTONE_TASKS_MAX`) publishes a roadmap's artifacts only when their
content changed since they last went out (``models.published``), and its overview every night.
Tasks here are called by :func:`flows.nightly.nightly_status_check`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import tempfile
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prefect import task
from prefect.artifacts import (
    Artifact,
    MarkdownArtifact,
    ProgressArtifact,
    TableArtifact,
    create_link_artifact,
    create_markdown_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlmodel import select

from flows.dashboard import (
    SYMBOLS,
    artifact_key,
    content_digest,
    failures_section,
    matrix_rows,
    progress_percent,
    summary_parts,
)
from flows.ics import calendar_dir, write_feeds
from flows.report import MilestoneBar, bars_from_tallies, render_timeline
from flows.tally import MilestoneTally, status_json
from models.db import SettingError, session_scope
from models.published import latest_published_key, published_digests, remember_published
from models.status import ATTENTION_ORDER, Classification
from models.tables import Roadmap
from models.transactions import in_transaction


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
    #: A large portfolio's kinds ("matrix", "progress", "summary") to publish tonight, those whose content
    #: changed, with their content digest (recorded once published): {kind: digest}.
    digests: dict[str, str] = field(default_factory=dict)
    #: A large portfolio's matrix and summary to publish, from :func:`keep_changed` until they are
    #: out: {"matrix": the table's JSON text, "summary": the markdown}, each packed (:func:`pack`).
    packed: dict[str, bytes] = field(default_factory=dict)
    #: A large portfolio's matrix and summary from :func:`settle` until :func:`keep_changed`:
    #: {"matrix": the table's JSON text, "summary": the markdown}, each as UTF-8.
    settled: dict[str, bytes] = field(default_factory=dict)
    #: As-of instant of the check that found the dashboard as it is (tonight's when it changed).
    found_at: dt.datetime | None = None

    def summary_markdown(self) -> str:
        """A large portfolio's summary: published before the reminders, so failed channels are
        in the run's reminder report artifact."""
        return self.summary_head + failures_section(None, listed_elsewhere=True) + self.summary_tail


def dashboard_of(
    slug: str, title: str, tallies: list[MilestoneTally], as_of: dt.datetime, countdown: bool = True,
    bars: bool = True,
) -> RoadmapDashboard:
    """Render a roadmap's artifacts' content from its tallies (so the rows can be let go); without
    ``countdown``, content that changes only when a classification does (see
    :func:`flows.dashboard.summary_parts`); without ``bars``, no timeline bars (a check that
    draws no timeline: they are kept for every roadmap until the end of the night, 4.5 MB at
    1M status rows). Makes no reference cycles: the nightly check runs it with the garbage
    collector paused (a summary builds a view of every row it may list, hundreds of thousands
    a night at 1M status rows)."""
    head, tail = summary_parts(title, tallies, as_of, countdown)
    counts: Counter = Counter()
    for t in tallies:
        counts.update(t.counts)
    return RoadmapDashboard(
        slug=slug, title=title, rows=sum(t.rows for t in tallies), done=sum(t.done for t in tallies),
        matrix=matrix_rows(tallies, countdown), summary_head=head, summary_tail=tail,
        bars=bars_from_tallies(tallies) if bars else [],
        statuses=[status_json(v) for t in tallies for v in (t.statuses or ())], counts=counts, found_at=as_of,
    )


def pack(text: bytes) -> bytes:
    """``text`` (UTF-8 ``bytes``, as :func:`settle` holds it) zlib-compressed (level 1), for
    content waiting to be published.

    A roadmap's summary at 1M status rows is about 100 KB in memory (its emoji make Python store
    every character in 4 bytes) and a few KB packed; its matrix is hundreds of small row dicts.
    Held packed, many groups' dashboards can wait for the Prefect server at once. zlib is
    Python's own (RFC 1950).
    """
    return zlib.compress(text, 1)


def unpack(packed: bytes) -> str:
    """The text :func:`pack` packed (str)."""
    return zlib.decompress(packed).decode("utf-8")


def settle(d: RoadmapDashboard) -> RoadmapDashboard:
    """Turn a large portfolio's dashboard ``d`` (in place, and returned) into what
    :func:`keep_changed` compares: its matrix as the JSON text its table artifact sends and its
    summary, each as UTF-8 in ``settled``, and the ``digests`` of the three kinds; the matrix
    rows and the summary's text are let go.

    The flow settles each roadmap as soon as it is rendered: a group's roadmaps wait for one
    query of their published digests, and meanwhile a summary's text (its emoji make Python
    store every character in 4 bytes) and a matrix's row dicts take several times the memory
    of their UTF-8.
    """
    matrix = json.dumps(d.matrix).encode("utf-8")
    summary = d.summary_markdown().encode("utf-8")
    d.settled = {"matrix": matrix, "summary": summary}
    d.digests = {
        "matrix": content_digest(matrix),
        "progress": content_digest(str(progress_percent(d.done, d.rows))),
        "summary": content_digest(summary),
    }
    d.matrix, d.summary_head, d.summary_tail = None, "", ""
    return d


def keep_changed(dashboards: list[RoadmapDashboard]) -> list[RoadmapDashboard]:
    """A large portfolio's dashboards to publish: for each (:func:`settle`-d here if it is not
    yet), the kinds whose content differs from what was last published
    (``published_artifact``); content not to publish is let go, content to publish is packed
    (:func:`pack`) into ``packed`` (the matrix as its table artifact's JSON text).

    Returns:
        The dashboards with at least one kind to publish (``digests`` set on every dashboard,
        ``found_at`` set back to the publishing check's instant where nothing changed).
    """
    for d in dashboards:
        if not d.settled:
            settle(d)
    with session_scope() as session:
        known = published_digests(session, [artifact_key(d.slug, kind) for d in dashboards for kind in d.digests])
    publishing = []
    for d in dashboards:
        before = {kind: known.get(artifact_key(d.slug, kind), (None, None)) for kind in d.digests}
        d.digests = {kind: digest for kind, digest in d.digests.items() if before[kind][0] != digest}
        if not d.digests:
            d.found_at = max(published_at for _, published_at in before.values())
        d.packed = {kind: pack(text) for kind, text in d.settled.items() if kind in d.digests}
        d.settled = {}
        if d.digests:
            publishing.append(d)
    return publishing


def published_dashboards_on_server() -> bool:
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


#: Groups of dashboards waiting for the Prefect server or being published while the check goes
#: on (see the flow, which publishes one group at a time). Groups by deadline bring the changed
#: dashboards together: at 1M status rows the check waited for the server 5.3 s of 44.5 s with
#: one group ahead, 2.5 s of 45.5 s with four, 0.04 s of 39.4 s with eight
#: (``benchmarks/nightly_check.py --py-spy``). Packed, a changed summary is about 6 KB and a
#: matrix 3 KB, yet each group waiting costs more than its content: the second night, when every
#: summary changes, peaked at 291 MB with four ahead, 298 MB with eight, 303 MB with sixteen.
PUBLISHING_AHEAD = 8
#: Artifact calls in flight at once when a task publishes many roadmaps' artifacts.
ARTIFACT_CONCURRENCY = 8


class TableText(Artifact):
    """A table artifact given as its JSON text (``table_json``: ``json.dumps`` of a list of row
    dicts), which is the data :class:`prefect.artifacts.TableArtifact` sends; for a matrix held
    packed, so that its rows are never built again."""

    table_json: str
    type: str | None = "table"

    async def aformat(self) -> str:
        """The table's JSON text as given (Prefect's ``Artifact.create`` sends what this returns)."""
        return self.table_json


def _create_all(makers: list[Callable[[], Artifact]]) -> None:
    """Create the artifacts ``makers`` make, in the current task run, :data:`ARTIFACT_CONCURRENCY`
    requests at a time over one API client (a client per artifact costs a TLS context each:
    17 ms). Each artifact is made just before its request: a packed one is unpacked then."""

    async def create_all() -> None:
        limit = asyncio.Semaphore(ARTIFACT_CONCURRENCY)
        async with get_client() as client:

            async def one(make: Callable[[], Artifact]) -> None:
                async with limit:
                    await make().acreate(client)

            await asyncio.gather(*(one(make) for make in makers))

    asyncio.run(create_all())


@task(name="publish-dashboard", task_run_name="dashboard [{label}]", cache_policy=NO_CACHE)
def publish_dashboards(label: str, dashboards: list[RoadmapDashboard], as_of: dt.datetime, whole: bool) -> None:
    """Publish each roadmap's matrix table artifact, a few calls in flight at once. With ``whole``
    (a large portfolio, whose progress did not move milestone by milestone): only the kinds of
    each dashboard's ``digests``, its progress and its summary included (the summary points to
    the run's reminder report for failed channels), from what :func:`keep_changed` packed; then
    record their digests."""
    makers: list[Callable[[], Artifact]] = []  # each binds its dashboard: d=d
    found = f"as found by the check of {as_of.date().isoformat()} (republished when it changes)"
    for d in dashboards:
        if not whole:
            makers.append(lambda d=d: TableArtifact(
                key=artifact_key(d.slug, "matrix"), table=d.matrix,
                description=f"{d.title}: where every member state stands on each milestone, as of {as_of.isoformat()}",
            ))
            continue
        if "matrix" in d.digests:
            makers.append(lambda d=d: TableText(
                key=artifact_key(d.slug, "matrix"), table_json=unpack(d.packed["matrix"]),
                description=f"{d.title}: where every member state stands on each milestone, {found}",
            ))
        if "progress" in d.digests:
            makers.append(lambda d=d: ProgressArtifact(
                key=artifact_key(d.slug, "progress"), progress=progress_percent(d.done, d.rows),
                description=f"{d.title}: share of status rows done or waived, {found}",
            ))
        if "summary" in d.digests:
            makers.append(lambda d=d: MarkdownArtifact(
                key=artifact_key(d.slug, "summary"), markdown=unpack(d.packed["summary"]),
                description=f"{d.title}: overdue first, {found}",
            ))
    _create_all(makers)
    if whole:
        published = {artifact_key(d.slug, kind): digest for d in dashboards for kind, digest in d.digests.items()}
        in_transaction(lambda session: remember_published(session, published, as_of))
    for d in dashboards:  # published: let them go
        d.matrix = None
        d.packed = {}
        d.digests = {}


@task(name="publish-summary", task_run_name="summary [{label}]", cache_policy=NO_CACHE)
def publish_summaries(label: str, dashboards: list[RoadmapDashboard], failures: list[str]) -> None:
    """Publish each roadmap's summary markdown artifact, with tonight's channel failures."""
    failed = failures_section(failures)
    _create_all([lambda d=d: MarkdownArtifact(key=artifact_key(d.slug, "summary"),
                                              markdown=d.summary_head + failed + d.summary_tail,
                                              description=f"{d.title}: overdue first") for d in dashboards])


def report_dir() -> Path:
    """Folder of published pictures and pages (``ROADMAP_REPORT_DIR``, default ``./reports``)."""
    return Path(os.environ.get("ROADMAP_REPORT_DIR") or "reports")


def ready_folders(slugs: list[str] | tuple[str, ...] = ()) -> None:
    """Make the folders the check publishes into, before it sends anything, and write and remove
    a file in each: :func:`report_dir` (``ROADMAP_REPORT_DIR``) and
    :func:`flows.ics.calendar_dir` (``ROADMAP_CALENDAR_DIR``), and in each a ``<slug>`` folder
    per roadmap of ``slugs`` (where its timeline and calendar feeds go). Folders already there
    are kept as they are. About 16 µs a folder (4,000 folders: 63 ms).

    Raises:
        models.db.SettingError: a folder cannot be made or written into (a file or a broken link
            of that name, no permission, a read-only disk); the message names the variable and
            the path. Found by bad-input reviews: a report folder, a roadmap's calendar folder
            that was a file, then a roadmap's read-only folder, failed the check after its
            reminders had gone out, so the run failed and ``--json`` printed nothing.
    """
    for variable, top in (("ROADMAP_REPORT_DIR", report_dir()), ("ROADMAP_CALENDAR_DIR", calendar_dir())):
        for folder in (top, *(top / slug for slug in slugs)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe, name = tempfile.mkstemp(dir=folder, prefix=".roadmap-probe-")
                os.close(probe)
                os.unlink(name)
            except OSError as exc:
                if folder.is_symlink() and not folder.exists():
                    reason = f"it is a link to {os.readlink(folder)}, which does not exist"
                elif isinstance(exc, FileExistsError):
                    reason = "it is a file, not a folder"
                else:
                    reason = exc.strerror or str(exc)
                shown = str(top) if folder == top else f"{top} (its folder {folder})"
                raise SettingError(f"{variable}={shown}: cannot publish there: {reason}") from None


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
    write its calendar feeds (``<slug>-calendars`` link artifact), as of ``as_of`` (aware; a
    naive one raises ``ValueError``)."""
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
