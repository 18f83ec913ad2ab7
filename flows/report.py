"""A picture of each roadmap: Gantt-style timeline (PNG/SVG) and a small static HTML report.

Plain functions, no Prefect calls: the nightly flow can publish the picture as an artifact and
``roadmap report --out DIR`` can write the pages, both through these functions.

- :func:`milestone_bars`: one :class:`MilestoneBar` per milestone from classified status rows.
- :func:`render_timeline`: the chart, drawn with matplotlib without pyplot (headless, no display).
- :func:`write_report`: ``index.html`` (Jinja2, autoescaped) with ``timeline.svg`` and ``timeline.png``.
- :func:`report_for_database`: every roadmap of a database, one folder per roadmap slug.

Dates on the chart and in the bars are local calendar dates (each owner's own day, as in
:class:`models.status.StatusView`); a bar covers its start and end days in full.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlmodel import Session, select

from flows.dashboard import cell
from models.db import session_scope
from models.status import ATTENTION_ORDER, Classification, StatusView, iter_status_views
from models.tables import Milestone, Roadmap

TEMPLATES = Path(__file__).parent / "templates"

#: Days a bar reaches back from its earliest due day when the milestone is not a window (it has
#: no opening date): two weeks, the span of the default reminders (14 days before the deadline).
#: Purely visual: it says "due around here", not when work started.
DEFAULT_LEAD_DAYS = 14

#: File names written beside ``index.html`` by :func:`write_report`.
TIMELINE_SVG = "timeline.svg"
TIMELINE_PNG = "timeline.png"

_DONE = (Classification.done, Classification.waived)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# rc_context changes matplotlib's process-wide rcParams: one rendering at a time (task threads).
_RENDER_LOCK = threading.Lock()

# Colours (colour-blind safe blues, with the overdue count written in red beside the bar).
_BAR_COLOUR = "#c6dbef"
_DONE_COLOUR = "#2171b5"
_AS_OF_COLOUR = "#d62728"


@dataclass(frozen=True)
class MilestoneBar:
    """One milestone as a bar of the timeline.

    ``start`` and ``end`` are local calendar dates, both included in the bar. ``end`` is the
    latest local due day across member states (``due_last``); ``start`` is the window's opening
    date when the milestone is a window, else ``due_first`` minus :data:`DEFAULT_LEAD_DAYS` days
    (never after ``due_first``). ``share_done`` is the share (0.0 to 1.0) of its status rows that
    are done or waived; ``counts`` has every :class:`Classification` as a key (0 when none).
    """

    key: str
    title: str
    title_ar: str
    start: dt.date
    end: dt.date
    due_first: dt.date
    due_last: dt.date
    is_window: bool
    total: int
    done: int
    share_done: float
    counts: dict[Classification, int]


def _require_aware(as_of: dt.datetime) -> None:
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError(f"as_of {as_of!r} is naive: give a time-zone aware datetime")


def milestone_opens(session: Session, roadmap: Roadmap) -> dict[str, dt.date | None]:
    """Return ``{milestone key: opening date or None}`` for the active milestones of ``roadmap``,
    in roadmap order. Opening dates are the local calendar dates of the roadmap file
    (:attr:`models.tables.Milestone.opens_date`); None means the milestone is not a window.
    """
    rows = session.exec(
        select(Milestone.key, Milestone.opens_date)
        .where(Milestone.roadmap_id == roadmap.id, Milestone.active)
        .order_by(Milestone.position)
    )
    return {key: opens for key, opens in rows}


def milestone_bars(views: list[StatusView], opens: Mapping[str, dt.date | None]) -> list[MilestoneBar]:
    """One bar per milestone of one roadmap, in roadmap order (the order milestones first appear
    in ``views``, which :func:`models.status.iter_status_views` yields in position order).

    Args:
        views: classified status rows of a single roadmap (any member states).
        opens: ``{milestone key: local opening date, or None when not a window}`` for every
            milestone in ``views``, as :func:`milestone_opens` returns it.

    Returns:
        A list of :class:`MilestoneBar` (empty when ``views`` is).

    Raises:
        ValueError: ``views`` mixes several roadmaps, or ``opens`` lacks a milestone of ``views``.
    """
    roadmaps = {v.roadmap for v in views}
    if len(roadmaps) > 1:
        raise ValueError(f"views of several roadmaps ({', '.join(sorted(roadmaps))}): pass one roadmap's views")
    grouped: dict[str, list[StatusView]] = {}
    for view in views:
        grouped.setdefault(view.milestone, []).append(view)
    missing = [key for key in grouped if key not in opens]
    if missing:
        raise ValueError(f"no opening date given for milestone(s) {', '.join(missing)}")
    bars = []
    for key, group in grouped.items():
        counter = Counter(v.classification for v in group)
        due_first = min(v.due_day for v in group)
        due_last = max(v.due_day for v in group)
        window_opens = opens[key]
        done = sum(counter[c] for c in _DONE)
        bars.append(
            MilestoneBar(
                key=key,
                title=group[0].milestone_title,
                title_ar=group[0].milestone_title_ar,
                start=_bar_start(window_opens, due_first),
                end=due_last,
                due_first=due_first,
                due_last=due_last,
                is_window=window_opens is not None,
                total=len(group),
                done=done,
                share_done=done / len(group),
                counts={c: counter.get(c, 0) for c in ATTENTION_ORDER},
            )
        )
    return bars


def bars_from_tallies(tallies: list) -> list[MilestoneBar]:
    """The same bars as :func:`milestone_bars`, from the nightly check's streaming tallies
    (:class:`flows.tally.MilestoneTally`), so the flow never holds every row in memory."""
    bars = []
    for t in tallies:
        if not t.rows:
            continue
        bars.append(
            MilestoneBar(
                key=t.milestone, title=t.title, title_ar=t.title_ar,
                start=_bar_start(t.opens_first, t.due_first), end=t.due_last, due_first=t.due_first,
                due_last=t.due_last,
                is_window=t.opens_first is not None, total=t.rows, done=t.done, share_done=t.done / t.rows,
                counts={c: t.counts.get(c.value, 0) for c in ATTENTION_ORDER},
            )
        )
    return bars


def _bar_start(opens: dt.date | None, due_first: dt.date) -> dt.date:
    """A bar starts where its window opens, or :data:`DEFAULT_LEAD_DAYS` before its first
    deadline; never after that deadline."""
    start = opens if opens is not None else due_first - dt.timedelta(days=DEFAULT_LEAD_DAYS)
    return min(start, due_first)


def as_of_label(as_of: dt.datetime) -> str:
    """The text of the as-of line: ``"as of YYYY-MM-DD"``, the calendar date in ``as_of``'s own offset."""
    return f"as of {as_of.date().isoformat()}"


def render_timeline(bars: list[MilestoneBar], as_of: dt.datetime, path: Path) -> Path:
    """Draw the Gantt-style timeline of ``bars`` and write it to ``path``.

    One horizontal bar per milestone (top to bottom in the given order, milestone keys as y
    labels) on a date axis, from the start of ``start`` to the end of ``end``; the done share as a
    darker overlay from the bar's left end; "done/total" (and any overdue count) beside each bar;
    a vertical line at ``as_of``, placed at its wall-clock time in its own UTC offset and labelled
    :func:`as_of_label`. SVG when ``path`` ends with ``.svg`` (text kept as text), PNG otherwise.

    The output is deterministic for the same input and matplotlib version: a figure size fixed by
    the number of bars (10 in wide, 1.4 + 0.45 in per bar high, 100 dpi), matplotlib's default
    style whatever the local matplotlibrc, no date in the metadata, fixed SVG ids. No display is
    needed (the figure is drawn without pyplot, on the Agg/SVG canvases). Thread-safe among
    callers of this function; matplotlib settings are changed only while it draws.

    Args:
        bars: from :func:`milestone_bars`.
        as_of: aware instant of the report.
        path: file to write; its folder must exist.

    Returns:
        ``path``.

    Raises:
        ValueError: ``as_of`` is naive.
        OSError: the file cannot be written.
    """
    _require_aware(as_of)
    import matplotlib
    import matplotlib.dates as mdates
    import matplotlib.style
    from matplotlib.figure import Figure

    path = Path(path)
    as_of_wall = as_of.replace(tzinfo=None)
    # text.parse_math off: a "$" in a label is a dollar sign, never mathtext.
    rc = {
        "svg.hashsalt": "roadmap-tracker",  # fixed clip-path ids
        "svg.fonttype": "none",  # text stays text (searchable, selectable)
        "font.family": "sans-serif",
        "text.parse_math": False,
    }
    with _RENDER_LOCK, matplotlib.style.context("default"), matplotlib.rc_context(rc):
        fig = Figure(figsize=(10.0, 1.4 + 0.45 * max(len(bars), 1)), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        lefts = [mdates.date2num(b.start) for b in bars]
        widths = [(b.end - b.start).days + 1 for b in bars]
        ys = list(range(len(bars)))
        ax.barh(ys, widths, left=lefts, height=0.6, color=_BAR_COLOUR, edgecolor=_DONE_COLOUR, linewidth=0.8)
        ax.barh(ys, [w * b.share_done for w, b in zip(widths, bars)], left=lefts, height=0.6, color=_DONE_COLOUR)
        for y, left, width, bar in zip(ys, lefts, widths, bars):
            overdue, waived = bar.counts[Classification.overdue], bar.counts[Classification.waived]
            # Waived rows count as finished (the share shaded) but are not called done: found by
            # a coordinator's walkthrough ("16/16 done" with Lebanon's save-the-date waived).
            text = (f" {bar.done - waived}/{bar.total} done" + (f", {waived} waived" if waived else "")
                    + (f", {overdue} overdue" if overdue else ""))
            ax.text(left + width, y, text, va="center", ha="left", fontsize=8,
                    color=_AS_OF_COLOUR if overdue else "#333333")
        ax.set_yticks(ys, [b.key for b in bars])
        ax.set_ylim(max(len(bars), 1) - 0.5, -0.5)  # first milestone on top
        as_of_x = mdates.date2num(as_of_wall)
        ax.axvline(as_of_x, color=_AS_OF_COLOUR, linewidth=1.2, linestyle="--")
        ax.text(as_of_x, 1.0, as_of_label(as_of), transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8, color=_AS_OF_COLOUR)
        first = min([*lefts, as_of_x])
        last = max([left + width for left, width in zip(lefts, widths)] + [as_of_x])
        margin = max(3.0, (last - first) * 0.12)  # room on the right for the "done" labels
        ax.set_xlim(first - 3.0, last + margin)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        if not bars:
            ax.text(0.5, 0.5, "no milestones", transform=ax.transAxes, ha="center", va="center")
        if path.suffix.lower() == ".svg":
            fig.savefig(path, format="svg", metadata={"Date": None})
        else:
            fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # always: roadmap text (titles, names, notes) must never become markup
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _matrix(views: list[StatusView]) -> tuple[list[str], list[dict]]:
    milestones = list(dict.fromkeys(v.milestone for v in views))
    rows: dict[str, dict] = {}
    for view in views:
        row = rows.setdefault(
            view.member_state,
            {"code": view.member_state, "name": view.member_state_name, "name_ar": view.member_state_name_ar,
             "cells": {}},
        )
        row["cells"][view.milestone] = {"text": cell(view), "classification": view.classification.value}
    return milestones, list(rows.values())


def write_report(
    out_dir: Path,
    roadmap_title: str,
    roadmap_title_ar: str,
    views: list[StatusView],
    bars: list[MilestoneBar],
    as_of: dt.datetime,
) -> Path:
    """Write one roadmap's static report into ``out_dir`` (created if missing).

    Files: ``index.html`` (UTF-8, self-contained: inline CSS, no script, no external resource),
    ``timeline.svg`` (shown by the page) and ``timeline.png`` (linked). The page has the title in
    English and Arabic (``dir="rtl" lang="ar"``), the timeline, a milestone table (text
    alternative of the chart), the matrix member state x milestone with the English and Arabic
    (``dir="rtl"``) names, and the overdue rows, most days overdue first. Every value is
    HTML-escaped. Existing files of those names are replaced.

    Args:
        out_dir: folder of the report.
        roadmap_title: English title; ``roadmap_title_ar``: Arabic title ("" to leave it out).
        views: classified status rows of the roadmap (:func:`models.status.iter_status_views`).
        bars: :func:`milestone_bars` of the same views.
        as_of: aware instant the views were classified at; shown as given (its own offset).

    Returns:
        The path of ``index.html``.

    Raises:
        ValueError: ``as_of`` is naive.
        OSError: a file cannot be written.
    """
    _require_aware(as_of)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    render_timeline(bars, as_of, out_dir / TIMELINE_SVG)
    render_timeline(bars, as_of, out_dir / TIMELINE_PNG)
    milestones, rows = _matrix(views)
    overdue = sorted(
        (v for v in views if v.classification is Classification.overdue),
        key=lambda v: (v.days_left, v.milestone, v.member_state),
    )
    html = _environment().get_template("report.html.j2").render(
        title=roadmap_title,
        title_ar=roadmap_title_ar,
        as_of=as_of.isoformat(),
        as_of_label=as_of_label(as_of),
        progress=round(100.0 * sum(v.classification in _DONE for v in views) / len(views), 1) if views else 0.0,
        total=len(views),
        bars=bars,
        milestones=milestones,
        titles={b.key: b.title for b in bars},
        rows=rows,
        overdue=[
            {"view": v, "deadline": v.deadline_local.format("YYYY-MM-DD HH:mm")} for v in overdue
        ],
        lead_days=DEFAULT_LEAD_DAYS,
        svg=TIMELINE_SVG,
        png=TIMELINE_PNG,
    )
    index = out_dir / "index.html"
    index.write_text(html, encoding="utf-8")
    return index


def report_for_database(out_dir: Path, as_of: dt.datetime, database_url: str | None = None) -> list[Path]:
    """Write the report of every roadmap in the database: ``out_dir/<slug>/index.html`` with its
    timeline files (see :func:`write_report`).

    The as-of instant is shown on each roadmap's coordinators' clock (``coordinator_timezone``).

    Args:
        out_dir: parent folder (created if missing).
        as_of: aware instant to classify the status rows at.
        database_url: SQLAlchemy URL; None for the configured one (``ROADMAP_DATABASE_URL``).

    Returns:
        The ``index.html`` paths, one per roadmap, in slug order (empty with no roadmap).

    Raises:
        ValueError: ``as_of`` is naive, or a roadmap slug is not ``[a-z0-9-]`` (unsafe as a folder).
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
        OSError: a file cannot be written.
    """
    _require_aware(as_of)
    collected = []
    with session_scope(database_url) as session:
        for roadmap in session.exec(select(Roadmap).where(Roadmap.active).order_by(Roadmap.slug)).all():
            if not _SLUG.fullmatch(roadmap.slug):
                raise ValueError(f"roadmap slug {roadmap.slug!r} is not [a-z0-9-]: refusing it as a folder name")
            views = list(iter_status_views(session, roadmap, as_of))
            bars = milestone_bars(views, milestone_opens(session, roadmap))
            local_as_of = as_of.astimezone(ZoneInfo(roadmap.coordinator_timezone))
            collected.append((roadmap.slug, roadmap.title, roadmap.title_ar, views, bars, local_as_of))
    out_dir = Path(out_dir)
    return [
        write_report(out_dir / slug, title, title_ar, views, bars, local_as_of)
        for slug, title, title_ar, views, bars, local_as_of in collected
    ]
