"""What coordinators see on the Prefect dashboard: content of the matrix, progress and summary
artifacts, built from classified status rows (pure functions, no Prefect calls).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

from models.status import ATTENTION_ORDER, Classification, StatusView

SYMBOLS = {
    Classification.done: "✅ done",
    Classification.waived: "➖ waived",
    Classification.blocked: "⛔ blocked",
    Classification.overdue: "🔴 overdue",
    Classification.due_today: "🟠 due today",
    Classification.due_soon: "🟡 due soon",
    Classification.upcoming: "⚪ upcoming",
}

#: Above this many member states the matrix artifact is summarised per milestone.
MATRIX_MAX_ROWS = 500


def artifact_key(slug: str, kind: str) -> str:
    """Return the artifact key for a roadmap slug (already ``[a-z0-9-]``) and a kind ("matrix")."""
    return f"{slug}-{kind}"


def cell(view: StatusView) -> str:
    """Short state of one status row with its symbol and local deadline day."""
    text = SYMBOLS[view.classification]
    if view.classification is Classification.overdue:
        text += f" by {-view.days_left}d ({-view.working_days_left} working)"
    elif view.classification in (Classification.due_soon, Classification.upcoming):
        text += f", {view.days_left}d left"
    return f"{text} · {view.due_day.isoformat()}"


def matrix_rows(views: list[StatusView]) -> list[dict[str, str]]:
    """One row per member state, one column per milestone (in roadmap order).

    Returns a list of dicts with keys ``member_state`` then each milestone key; for more than
    :data:`MATRIX_MAX_ROWS` member states, one row per milestone with counts instead.
    """
    milestones = list(dict.fromkeys(v.milestone for v in views))
    by_state: dict[str, dict[str, str]] = {}
    for view in views:
        row = by_state.setdefault(
            view.member_state, {"member_state": f"{view.member_state} {view.member_state_name}"}
        )
        row[view.milestone] = cell(view)
    if len(by_state) <= MATRIX_MAX_ROWS:
        return [{k: row.get(k, "") for k in ["member_state", *milestones]} for row in by_state.values()]
    counts: dict[str, Counter] = defaultdict(Counter)
    for view in views:
        counts[view.milestone][view.classification.value] += 1
    return [
        {"milestone": key, **{c.value: str(counts[key][c.value]) for c in ATTENTION_ORDER}} for key in milestones
    ]


def progress_percent(views: list[StatusView]) -> float:
    """Share of status rows that are done or waived, in percent (0.0 for an empty roadmap)."""
    if not views:
        return 0.0
    finished = sum(1 for v in views if v.classification in (Classification.done, Classification.waived))
    return round(100.0 * finished / len(views), 1)


def summary_markdown(
    title: str, views: list[StatusView], as_of: dt.datetime, failed_channels: list[str] | None = None
) -> str:
    """Markdown summary: overdue first (most days overdue first), then due today/soon, then
    blocked; counts per milestone; failed channels of this run."""
    counts = Counter(v.classification for v in views)
    lines = [
        f"# {title}",
        "",
        f"As of {as_of.isoformat()}: {len(views)} status rows, {progress_percent(views)}% done.",
        "",
        " · ".join(f"{SYMBOLS[c]}: {counts.get(c, 0)}" for c in ATTENTION_ORDER),
        "",
    ]
    overdue = sorted(
        (v for v in views if v.classification is Classification.overdue),
        key=lambda v: (v.days_left, v.milestone, v.member_state),
    )
    sections = [
        ("Overdue", overdue, lambda v: f"overdue by {-v.days_left} days ({-v.working_days_left} working days)"),
        (
            "Due today or soon",
            sorted(
                (v for v in views if v.classification in (Classification.due_today, Classification.due_soon)),
                key=lambda v: (v.days_left, v.milestone, v.member_state),
            ),
            lambda v: f"{v.days_left} days left ({v.working_days_left} working days)",
        ),
        (
            "Blocked",
            [v for v in views if v.classification is Classification.blocked],
            lambda v: "waiting for " + ", ".join(v.blocked_by),
        ),
    ]
    for heading, items, detail in sections:
        lines += [f"## {heading} ({len(items)})", ""]
        if not items:
            lines += ["None.", ""]
            continue
        lines += ["| Milestone | Member state | Deadline (owner's time) | |", "|---|---|---|---|"]
        for v in items[:200]:
            deadline = v.deadline_local.format("YYYY-MM-DD HH:mm") + f" {v.owner_timezone}"
            lines.append(f"| {v.milestone} | {v.member_state} {v.member_state_name} | {deadline} | {detail(v)} |")
        if len(items) > 200:
            lines.append(f"| … | {len(items) - 200} more | | |")
        lines.append("")
    per_milestone: dict[str, Counter] = defaultdict(Counter)
    for v in views:
        per_milestone[v.milestone][v.classification] += 1
    lines += ["## Per milestone", "", "| Milestone | " + " | ".join(SYMBOLS[c] for c in ATTENTION_ORDER) + " |"]
    lines.append("|---" * (len(ATTENTION_ORDER) + 1) + "|")
    for key, counter in per_milestone.items():
        lines.append(f"| {key} | " + " | ".join(str(counter.get(c, 0)) for c in ATTENTION_ORDER) + " |")
    lines.append("")
    if failed_channels:
        lines += ["## Channels that failed in this run", ""]
        lines += [f"- {item}" for item in failed_channels]
        lines.append("")
    return "\n".join(lines)
