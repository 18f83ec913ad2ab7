"""Terminal output of the ``roadmap`` command: the member state x milestone matrix as a Rich table."""

from __future__ import annotations

import datetime as dt

from rich.console import Console
from rich.table import Table

from flows.dashboard import IN_PROGRESS_STATE
from models.status import StatusView

STYLES = {
    "done": ("✔", "green"),
    "waived": ("–", "dim"),
    "blocked": ("⛔", "magenta"),
    "overdue": ("✖", "bold red"),
    "due_today": ("●", "bold yellow"),
    "due_soon": ("●", "yellow"),
    "upcoming": ("○", "cyan"),
}
#: Added to the cell of a row recorded ``in_progress`` (its classification comes from the deadline).
IN_PROGRESS_MARK = "◐"
LEGEND = ("✔ done  – waived  ⛔ blocked  ✖ overdue (days)  ● due today / soon (days left)  ○ upcoming (days left)"
          f"  {IN_PROGRESS_MARK} in progress")


def _cell(state: str, days_left: int, in_progress: bool) -> str:
    label, style = STYLES[state]
    if state == "overdue":
        label += f" {-days_left}d"
    elif state in ("due_today", "due_soon", "upcoming"):
        label += f" {days_left}d"
    if in_progress:
        label += f" {IN_PROGRESS_MARK}"
    return f"[{style}]{label}[/]"


def _table(title: str, rows: list[tuple[str, str, str, int, bool]]) -> Table:
    """rows: (member state label, milestone, classification, days_left, recorded in progress)."""
    milestones = list(dict.fromkeys(r[1] for r in rows))
    table = Table(title=title, show_lines=False)
    table.add_column("Member state", no_wrap=True)
    for key in milestones:
        table.add_column(key, no_wrap=True)
    cells: dict[str, dict[str, str]] = {}
    for label, milestone, state, days_left, in_progress in rows:
        cells.setdefault(label, {})[milestone] = _cell(state, days_left, in_progress)
    for label in sorted(cells):
        table.add_row(label, *(cells[label].get(key, "") for key in milestones))
    return table


def print_check(result: dict, console: Console) -> None:
    """Print a nightly check result (the flow's JSON-ready dict) as one table per roadmap."""
    by_roadmap: dict[str, list] = {}
    for s in result["statuses"]:
        by_roadmap.setdefault(s["roadmap"], []).append(
            (s["member_state"], s["milestone"], s["state"], s["days_left"], s["recorded_state"] == IN_PROGRESS_STATE))
    for slug, rows in by_roadmap.items():
        console.print(_table(f"{slug} as of {result['as_of']}", rows))
    console.print(LEGEND)
    r = result["reminders"]
    held = (f"; {r['in_flight']} held by another run (it sends them, or a later check does once its claim lapses)"
            if r["in_flight"] else "")
    console.print(f"Reminders: {r['sent']} sent, {r['already_sent']} already sent, {r['failed']} failed; "
                  f"{r['escalated']} escalated{held}.")


def print_matrix(title: str, views: list[StatusView], as_of: dt.datetime, console: Console) -> None:
    """Print classified rows of one roadmap as a table, as of ``as_of`` (aware)."""
    rows = [
        (f"{v.member_state} {v.member_state_name}", v.milestone, v.classification.value, v.days_left,
         v.recorded_state == IN_PROGRESS_STATE)
        for v in views
    ]
    console.print(_table(f"{title} as of {as_of.isoformat()}", rows))
    console.print(LEGEND)
