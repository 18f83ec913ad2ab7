"""What coordinators see on the Prefect dashboard: content of the matrix, progress and summary
artifacts, built from the milestone tallies of one roadmap (pure functions, no Prefect calls).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from functools import lru_cache

from flows.tally import Listed, MilestoneTally, listed
from models.status import ATTENTION_ORDER, Classification, StatusView, zone
from models.tables import State

SYMBOLS = {
    Classification.done: "✅ done",
    Classification.waived: "➖ waived",
    Classification.blocked: "⛔ blocked",
    Classification.overdue: "🔴 overdue",
    Classification.due_today: "🟠 due today",
    Classification.due_soon: "🟡 due soon",
    Classification.upcoming: "⚪ upcoming",
}


def artifact_key(slug: str, kind: str) -> str:
    """Return the artifact key for a roadmap slug (already ``[a-z0-9-]``) and a kind ("matrix")."""
    return f"{slug}-{kind}"


#: The recorded state a cell names (the party has started; the deadline, not the recorded
#: state, decides its classification: ``models.status``), and the words it uses.
IN_PROGRESS_STATE = State.in_progress.value
IN_PROGRESS = "in progress"


def cell(view: StatusView) -> str:
    """Short state of one status row with its symbol and the owner's local deadline day."""
    return cell_text(view.classification, view.working_days_left, view.due_day,
                     in_progress=view.recorded_state == IN_PROGRESS_STATE)


def cell_text(classification: Classification, working_days_left: int, due_day: dt.date, countdown: bool = True,
              in_progress: bool = False) -> str:
    """See :func:`cell`: "🔴 overdue by 3 working days · 2024-05-31"; without ``countdown``,
    "🔴 overdue · 2024-05-31" (text that stays true until the classification changes); a row
    recorded ``in_progress`` says so before the day: "🔴 overdue · in progress · 2024-05-31"."""
    text = SYMBOLS[classification]
    if countdown and classification is Classification.overdue:
        text += f" by {-working_days_left} working days"
    elif countdown and classification in (Classification.due_soon, Classification.upcoming):
        text += f", {working_days_left} working days left"
    if in_progress:
        text += f" · {IN_PROGRESS}"
    return f"{text} · {due_day.isoformat()}"


def matrix_rows(tallies: list[MilestoneTally], countdown: bool = True) -> list[dict[str, str]]:
    """One row per member state, one column per milestone (roadmap order); cells as
    :func:`cell_text` with ``countdown``.

    When a milestone had too many member states to keep cells (see ``MATRIX_MAX_ROWS``), the
    matrix is summarised instead: one row per milestone with counts per classification.
    """
    if any(t.cells_dropped for t in tallies):
        return [
            {"milestone": t.milestone, **{c.value: str(t.counts.get(c.value, 0)) for c in ATTENTION_ORDER}}
            for t in tallies
        ]
    names: dict[str, str] = {}
    for t in tallies:
        for code, entry in t.cells.items():
            names[code] = entry[0]
    # A cell's text follows from its outcome, which the rows of a check share (compared by
    # identity): each text is built once, not once per cell (a million cells a night at 1M rows).
    texts: dict[object, str] = {}
    rows = []
    for code in sorted(names):
        row = {"member_state": f"{code} {names[code]}"}
        for t in tallies:
            entry = t.cells.get(code)
            if entry is None:
                row[t.milestone] = ""
                continue
            o = entry[1]
            text = texts.get(o)
            if text is None:
                text = texts[o] = cell_text(o.classification, o.working_days_left, o.due_day, countdown,
                                            o.recorded_state == IN_PROGRESS_STATE)
            row[t.milestone] = text
        rows.append(row)
    return rows


def progress_percent(done: int, rows: int) -> float:
    """Share of status rows done or waived, in percent, one decimal (0.0 when there are none)."""
    return round(100.0 * done / rows, 1) if rows else 0.0


#: Bytes hashed per call in :func:`content_digest`: below CPython's ``HASHLIB_GIL_MINSIZE``
#: (2,048), the size from which ``hashlib`` releases the GIL (Modules/hashlib.h).
HASH_PIECE = 2047


def content_digest(content: object) -> str:
    """SHA-256 (hex) of an artifact's content: text as UTF-8 (``bytes`` are taken as UTF-8
    already), anything else as canonical JSON.

    Hashed in pieces shorter than 2,048 bytes, which ``hashlib`` hashes without letting go of
    the GIL: a larger piece lets it go, and the nightly check's thread then waits for another
    busy thread's turn to end (``sys.getswitchinterval()``, 5 ms) to go on. At 1M status rows
    the check hashes a matrix and a summary of tens of KB for each of 1,533 roadmaps;
    ``benchmarks/gil_handoff.py`` prints what each way costs beside a busy thread.
    """
    if not isinstance(content, bytes):
        text = content if isinstance(content, str) else json.dumps(content, sort_keys=True, ensure_ascii=False)
        content = text.encode("utf-8")
    digest, view = hashlib.sha256(), memoryview(content)
    for start in range(0, len(view), HASH_PIECE):
        digest.update(view[start : start + HASH_PIECE])
    return digest.hexdigest()


# Sized for a roadmap, not for the portfolio: the cache lives as long as the process. A first
# night at 1M status rows held 30,555 texts at its peak (``benchmarks/nightly_check.py
# --prior-nights 0 --tracemalloc``); a cache of that many pairs takes 6.6 MB (traced), more as
# the portfolio grows. A summary lists a few hundred rows (``flows.tally.ATTENTION_LIMIT`` a list).
@lru_cache(maxsize=4096)
def _deadline_text(deadline: dt.datetime, timezone: str) -> str:
    # Rows of a milestone share a few (deadline, zone) pairs: format each once.
    local = deadline.astimezone(zone(timezone))
    return local.strftime("%Y-%m-%d %H:%M") + f" {timezone}"


def _table(rows: list[Listed], detail) -> list[str]:
    if detail is None:
        lines = ["| Milestone | Member state | Deadline (owner's time) |", "|---|---|---|"]
    else:
        lines = ["| Milestone | Member state | Deadline (owner's time) | |", "|---|---|---|---|"]
    for r in rows:
        line = f"| {r.milestone} | {r.member_state} {r.member_state_name} | {_deadline_text(r.deadline, r.owner_timezone)} |"
        lines.append(line if detail is None else f"{line} {detail(r)} |")
    return lines


def summary_markdown(
    title: str,
    tallies: list[MilestoneTally],
    as_of: dt.datetime,
    failed_channels: list[str] | None = None,
) -> str:
    """Markdown summary as of ``as_of`` (aware): overdue first (most days overdue first), then
    due this week, blocked, channels that failed, holidays that weigh on deadlines, counts per
    milestone, and what changed since the previous check."""
    head, tail = summary_parts(title, tallies, as_of)
    return head + failures_section(failed_channels) + tail


#: Key of the run's reminder report artifact (counts and the channels that failed).
REMINDERS_ARTIFACT_KEY = "nightly-check-reminders"


def failures_section(failed_channels: list[str] | None, listed_elsewhere: bool = False) -> str:
    """The summary's "Channels that failed in this run" section (one line per "recipient: reason");
    with ``listed_elsewhere``, a pointer to the run's reminder report artifact instead (a large
    portfolio's summaries are published before its reminders go out)."""
    lines = ["## Channels that failed in this run", ""]
    if listed_elsewhere:
        lines.append(f"Reminders go out once every roadmap of the run is checked: see the `{REMINDERS_ARTIFACT_KEY}` "
                     "artifact of this flow run.")
    else:
        lines += [f"- {item}" for item in failed_channels] if failed_channels else ["None."]
    lines.append("")
    return "\n".join(lines) + "\n"


def summary_parts(
    title: str, tallies: list[MilestoneTally], as_of: dt.datetime, countdown: bool = True
) -> tuple[str, str]:
    """The summary's text before and after :func:`failures_section`: the nightly check renders
    them as soon as a roadmap is classified (and lets its rows go), and adds the failures once
    the reminders are sent.

    Without ``countdown`` the text holds nothing that changes by itself from one night to the
    next (no as-of instant, no days left): a large portfolio republishes it only when it changes,
    and the artifact's description tells which check found it."""
    rows = sum(t.rows for t in tallies)
    done = sum(t.done for t in tallies)
    counts = Counter()
    for t in tallies:
        counts.update(t.counts)
    lines = [
        f"# {title}",
        "",
        (f"As of {as_of.isoformat()}: " if countdown else "") + f"{rows} status rows, {progress_percent(done, rows)}% done.",
        "",
        " · ".join(f"{SYMBOLS[c]}: {counts.get(c.value, 0)}" for c in ATTENTION_ORDER),
        "",
    ]
    # Listed rows sort by (days left, milestone, member state) as tuples.
    overdue = sorted(r for t in tallies for r in t.overdue.items(listed))
    due_week = sorted(r for t in tallies for r in t.due.items(listed) if r.days_left <= 7)
    blocked = [r for t in tallies for r in t.blocked.items(listed)]
    sections = [
        ("Overdue", overdue, sum(t.overdue.total for t in tallies),
         (lambda r: f"overdue by {-r.days_left} days ({-r.working_days_left} working days)") if countdown else None),
        ("Due this week", due_week, len(due_week),
         (lambda r: f"{r.days_left} days left ({r.working_days_left} working days)") if countdown else None),
        ("Blocked", blocked, sum(t.blocked.total for t in tallies), lambda r: "waiting for " + ", ".join(r.blocked_by)),
    ]
    for heading, items, total, detail in sections:
        lines += [f"## {heading} ({total})", ""]
        lines += (_table(items, detail) if items else ["None."])
        if total > len(items):
            lines.append(f"\n… and {total - len(items)} more.")
        lines.append("")
    head = "\n".join(lines) + "\n"
    lines = []
    flags = [item for t in tallies for item in t.holiday_flags.items()]
    if flags:
        lines += [f"## Public holidays near deadlines ({sum(t.holiday_flags.total for t in tallies)})", ""]
        lines += [f"- {v.milestone}, {v.member_state} {v.member_state_name} ({v.recipient}): {why}" for v, why in flags]
        lines.append("")
    lines += ["## Per milestone", "", "| Milestone | " + " | ".join(SYMBOLS[c] for c in ATTENTION_ORDER) + " |"]
    lines.append("|---" * (len(ATTENTION_ORDER) + 1) + "|")
    for t in tallies:
        lines.append(f"| {t.milestone} | " + " | ".join(str(t.counts.get(c.value, 0)) for c in ATTENTION_ORDER) + " |")
    lines += ["", "## Changed since the previous check", ""]
    changed = False
    # Waived too (found by a replay of the 2024 campaign: rows waived were in no list).
    for kind, heading in (("done", "Newly done"), ("waived", "Newly waived"), ("overdue", "Newly overdue")):
        items = [(t.milestone, v) for t in tallies if kind in t.newly for v in t.newly[kind].items()]
        total = sum(t.newly[kind].total for t in tallies if kind in t.newly)
        if total:
            changed = True
            lines.append(f"- {heading} ({total}): " + ", ".join(f"{m} {v.member_state}" for m, v in items))
    if not changed:
        lines.append("Nothing newly done, waived or overdue.")
    lines.append("")
    return head, "\n".join(lines)


def reminders_markdown(as_of: dt.datetime, sent: int, already_sent: int, failed: int, escalated: int, messages: int,
                       failures: list[str], in_flight: int = 0) -> str:
    """The run's reminder report: counts of items (not messages) and one line per failed channel;
    ``in_flight`` items another run held (claimed within the lease), said when there are some."""
    held = (f" {in_flight} held by another run (it sends them, or a later check does once its claim "
            "lapses).") if in_flight else ""
    return (
        f"# Reminders of the check as of {as_of.isoformat()}\n\n"
        f"{sent} items sent in {messages} digests, {already_sent} already sent, {failed} failed; {escalated} escalated."
        f"{held}\n\n"
        + failures_section(failures)
    )
