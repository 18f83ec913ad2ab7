"""The nightly digest: one message per recipient covering all its due items, English and Arabic.

Templates live in ``notifications/templates/`` (Jinja2), package files. Text from a roadmap file
(titles, notes) reaches them as values, which Jinja2 renders and never evaluates: it cannot run
template code. The HTML variant autoescapes. Hijri dates use the Umm al-Qura calendar (``hijridate``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pendulum

from hijridate import Gregorian
from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "templates"

_STATE_EN = {
    "overdue": "OVERDUE",
    "due_today": "due today",
    "due_soon": "due soon",
    "upcoming": "upcoming",
}
_STATE_AR = {
    "overdue": "متأخر",
    "due_today": "مستحق اليوم",
    "due_soon": "مستحق قريبًا",
    "upcoming": "قادم",
}


@dataclass(frozen=True)
class DigestItem:
    """One due item of a digest; plain values.

    ``deadline`` is aware (any zone); it is shown in ``timezone`` (IANA), the owner's zone.
    ``days_left`` is negative when overdue.
    """

    roadmap_title: str
    milestone_title: str
    milestone_title_ar: str
    member_state: str
    member_state_name: str
    member_state_name_ar: str
    classification: str
    deadline: dt.datetime
    timezone: str
    days_left: int
    working_days_left: int
    window: str
    #: Why the item is escalated ("overdue by 7 working days", "reminders to mission-jo failed ..."), if it is.
    reason: str = ""


@lru_cache(maxsize=4096)
def hijri_date(day: dt.date, language: str = "ar") -> str:
    """Return ``day`` in the Umm al-Qura Hijri calendar, e.g. 2024-05-31 -> "23 ذو القعدة 1445".

    Raises:
        OverflowError: ``day`` is outside the range ``hijridate`` supports (1343-1500 AH).
    """
    hijri = Gregorian(day.year, day.month, day.day).to_hijri()
    return f"{hijri.day} {hijri.month_name(language)} {hijri.year}"


def _env(autoescape: bool) -> Environment:
    # Not Jinja2's SandboxedEnvironment: a sandbox guards against untrusted *templates*, and
    # these are ours. Its check of every attribute a template reads was most of a digest's
    # rendering time (1.4 s a night at 1M status rows, ``benchmarks/nightly_check.py``).
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), auto_reload=False,
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hijri"] = hijri_date
    env.globals.update(state_en=_STATE_EN, state_ar=_STATE_AR)
    return env


#: Items listed one by one in a digest, most urgent first; the rest are counted in one line. A
#: digest is read by a person: the coordinators' escalations of a global portfolio can number
#: tens of thousands, and the dashboard lists them all.
DIGEST_MAX_ITEMS = 300

_TEXT_ENV = _env(autoescape=False)
_HTML_ENV = _env(autoescape=True)


@lru_cache(maxsize=65_536)
def _local_deadline(deadline: dt.datetime, timezone: str) -> tuple[str, dt.date]:
    """("YYYY-MM-DD HH:mm" in ``timezone``, local due day) of an aware deadline. Cached: a
    milestone's deadline repeats across member states, and pendulum's formatting is the costly
    part of a digest of hundreds of items."""
    local = pendulum.instance(deadline).in_tz(timezone)
    return local.format("YYYY-MM-DD HH:mm"), local.date()


def _context(recipient: str, items: list[DigestItem], as_of: dt.datetime) -> dict:
    rows = []
    ordered = sorted(items, key=lambda i: (i.days_left, i.member_state, i.milestone_title))  # most urgent first
    for item in ordered[:DIGEST_MAX_ITEMS]:
        text, day = _local_deadline(item.deadline, item.timezone)
        rows.append({"item": item, "deadline_local": text, "due_day": day})
    return {"recipient": recipient, "rows": rows, "count": len(items), "more": len(items) - len(rows),
            "as_of": as_of.isoformat()}


def render_subject(items: list[DigestItem]) -> str:
    """Return the bilingual subject line, e.g. "Roadmap reminders: 3 items | تذكيرات خريطة الطريق: 3 بنود";
    "Escalation: ..." when any item carries an escalation reason."""
    if any(i.reason for i in items):
        return f"Escalation: {len(items)} items need the coordinators | تصعيد: {len(items)} بنود تحتاج إلى المنسقين"
    overdue = sum(1 for i in items if i.classification == "overdue")
    flag = f" ({overdue} overdue / {overdue} متأخر)" if overdue else ""
    return f"Roadmap reminders: {len(items)} items{flag} | تذكيرات خريطة الطريق: {len(items)} بنود"


def render_digest(recipient: str, items: list[DigestItem], as_of: dt.datetime) -> tuple[str, str]:
    """Render the plain-text digest for ``recipient`` (an Apprise tag).

    Returns:
        ``(subject, body)``: both bilingual (English, then Arabic).
    """
    body = _TEXT_ENV.get_template("digest.txt.j2").render(**_context(recipient, items, as_of))
    return render_subject(items), body


def render_digest_html(recipient: str, items: list[DigestItem], as_of: dt.datetime) -> str:
    """Render the HTML digest (autoescaped; Arabic part right-to-left)."""
    return _HTML_ENV.get_template("digest.html.j2").render(**_context(recipient, items, as_of))
