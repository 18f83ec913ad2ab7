"""The nightly digest: one message per recipient covering all its due items, English and Arabic.

Templates live in ``notifications/templates/`` (Jinja2), package files. Text from a roadmap file
(titles, notes) reaches them as values, which Jinja2 renders and never evaluates: it cannot run
template code. The HTML variant autoescapes. Hijri dates use the Umm al-Qura calendar (``hijridate``).
"""

from __future__ import annotations

import datetime as dt
import heapq
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import pendulum

from hijridate import Gregorian
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from notifications.plurals import arabic_count, english_count

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
    #: The same reason in Arabic, for the digest's Arabic part ("" shows ``reason`` there).
    reason_ar: str = ""
    #: The public mailbox of the item's coordinators ("" when its roadmap gives none), where a
    #: mission or an office tells them what it has done.
    coordinator_email: str = ""


@lru_cache(maxsize=4096)
def hijri_date(day: dt.date, language: str = "ar") -> str:
    """Return ``day`` in the Umm al-Qura Hijri calendar, e.g. 2024-05-31 -> "23 ذي القعدة 1445".

    In Arabic the month after a day's number is in the genitive: ``hijridate`` names the eleventh
    and twelfth months "ذو القعدة" and "ذو الحجة" (nominative), written here "ذي القعدة" and
    "ذي الحجة"; the other months' names do not change.

    Raises:
        OverflowError: ``day`` is outside the range ``hijridate`` supports (1343-1500 AH).
    """
    hijri = Gregorian(day.year, day.month, day.day).to_hijri()
    month = hijri.month_name(language)
    if language == "ar" and month.startswith("ذو "):
        month = "ذي " + month[3:]
    return f"{hijri.day} {month} {hijri.year}"


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
    env.filters["en"] = english_count
    env.filters["ar"] = arabic_count
    env.globals.update(state_en=_STATE_EN, state_ar=_STATE_AR)
    return env


#: Items listed one by one in a digest, most urgent first; the rest are counted in one line. A
#: digest is read by a person: the coordinators' escalations of a global portfolio can number
#: tens of thousands, and the dashboard lists them all.
DIGEST_MAX_ITEMS = 300

_TEXT_ENV = _env(autoescape=False)
_HTML_ENV = _env(autoescape=True)


@lru_cache(maxsize=4096)
def _local_deadline(deadline: dt.datetime, timezone: str) -> tuple[str, dt.date, str]:
    """("YYYY-MM-DD HH:mm" in ``timezone``, local due day, its UTC offset "UTC+02:00") of an aware
    deadline (the offset found by a review of the seed: "Europe/Zurich" alone left a reader in
    Amman or Nouakchott to work out what 23:59 was on their clock). Cached: a
    milestone's deadline repeats across member states, and pendulum's formatting is the costly
    part of a digest of hundreds of items. Sized for a digest (at most :data:`DIGEST_MAX_ITEMS`
    items), not for a night's digests: the cache lives as long as the process."""
    local = pendulum.instance(deadline).in_tz(timezone)
    return local.format("YYYY-MM-DD HH:mm"), local.date(), "UTC" + local.format("Z")


def _urgency(item: DigestItem) -> tuple:
    return item.days_left, item.member_state, item.milestone_title


class Digest:
    """One recipient's digest in bounded memory: the :data:`DIGEST_MAX_ITEMS` most urgent items
    (fewest days left, then member state code, then milestone title; ties in the order added)
    and counts of all the items added.

    The coordinators' escalations on a first night of 1M status rows are 125,000 items, and the
    digest lists 300 of them: a digest built item by item with :meth:`add` keeps at most four
    times that many. ``Digest(items)`` adds ``items``. The rendering functions take a digest or
    a plain list of :class:`DigestItem`.
    """

    def __init__(self, items: Iterable[DigestItem] = ()):
        self.count = 0  #: items added
        self.overdue = 0  #: of which classified ``overdue``
        self.escalation = False  #: whether any item carries an escalation ``reason``
        #: {coordinators' mailbox, or "" for none: titles of the roadmaps whose items name it, in
        #: the order added}
        self.mailboxes: dict[str, dict[str, None]] = {}
        self._kept: list[DigestItem] = []
        for item in items:
            self.add(item)

    def add(self, item: DigestItem) -> None:
        """Count ``item`` and keep it while it may be among the most urgent."""
        self.count += 1
        self.overdue += item.classification == "overdue"
        self.escalation = self.escalation or bool(item.reason)
        self.mailboxes.setdefault(item.coordinator_email, {})[item.roadmap_title] = None
        self._kept.append(item)
        if len(self._kept) >= 4 * DIGEST_MAX_ITEMS:
            # nsmallest is sorted(...)[:n], stable: ties keep the order they were added in.
            self._kept = heapq.nsmallest(DIGEST_MAX_ITEMS, self._kept, key=_urgency)

    def listed(self) -> list[DigestItem]:
        """The items listed one by one, most urgent first (at most :data:`DIGEST_MAX_ITEMS`)."""
        return sorted(self._kept, key=_urgency)[:DIGEST_MAX_ITEMS]


def _digest(items: Digest | list[DigestItem]) -> Digest:
    return items if isinstance(items, Digest) else Digest(items)


#: (English, Arabic) name of a digest's addressee: ("Permanent Mission of Jordan to the United
#: Nations Office at Geneva", "البعثة الدائمة للأردن"); ``models.parties.addressee_names``.
Addressee = tuple[str, str]


def _context(recipient: str, digest: Digest, as_of: dt.datetime, addressee: Addressee | None,
             ask_to_report: bool = False) -> dict:
    rows = []
    for item in digest.listed():
        text, day, offset = _local_deadline(item.deadline, item.timezone)
        rows.append({"item": item, "deadline_local": text, "due_day": day, "utc_offset": offset})
    to_en, to_ar = addressee or (recipient, recipient)
    heading_en, heading_ar = _heading(digest)
    # One mailbox for every item is named on the line that asks; otherwise each is listed with
    # the roadmaps it serves (a mission in two regions' reviews), those that give none last
    # ("" : the template's "your usual contact"; found by a review of this change: their items
    # had no word).
    mailboxes = sorted(((mailbox, list(titles)) for mailbox, titles in digest.mailboxes.items()),
                       key=lambda pair: (not pair[0], pair[0]))
    only = mailboxes[0][0] if len(mailboxes) == 1 else ""
    if mailboxes == [("", mailboxes[0][1])]:
        mailboxes = []  # no roadmap gives one: the plain sentence
    return {"recipient": recipient, "to_en": to_en, "to_ar": to_ar, "rows": rows, "count": digest.count,
            "more": digest.count - len(rows), "as_of": as_of_text(as_of), "ask_to_report": ask_to_report,
            "heading_en": heading_en, "heading_ar": heading_ar, "only_mailbox": only,
            "mailboxes": [] if only else mailboxes}


def _heading(digest: Digest) -> tuple[str, str]:
    """(English, Arabic) title of ``digest``, for its subject and its first line alike (found by a
    seed review: an escalation's subject said "Escalation", its first line "Roadmap reminders")."""
    if digest.escalation:
        return "Escalation to the coordinators", "تصعيد إلى المنسقين"
    return "Roadmap reminders", "تذكيرات خريطة الطريق"


def as_of_text(as_of: dt.datetime) -> str:
    """The instant of the check as a digest states it: "2024-06-05 07:00 UTC" (aware ``as_of``,
    any zone; each deadline is shown in its owner's zone)."""
    return pendulum.instance(as_of).in_tz("UTC").format("YYYY-MM-DD HH:mm") + " UTC"


def render_subject(items: Digest | list[DigestItem]) -> str:
    """Return the bilingual subject line, e.g. "Roadmap reminders: 3 items | تذكيرات خريطة
    الطريق: 3 بنود"; "Escalation to the coordinators: ..." when any item carries an escalation
    reason. Counted nouns agree with their number in both languages (:mod:`notifications.plurals`)."""
    digest = _digest(items)
    count, overdue = digest.count, digest.overdue
    heading_en, heading_ar = _heading(digest)
    flag_en, flag_ar = ((f" ({overdue} overdue)", f" (المتأخر منها: {overdue})") if overdue and not digest.escalation
                        else ("", ""))
    return (f"{heading_en}: {english_count(count, 'item')}{flag_en}"
            f" | {heading_ar}: {arabic_count(count, 'item')}{flag_ar}")


def render_digest(recipient: str, items: Digest | list[DigestItem], as_of: dt.datetime,
                  addressee: Addressee | None = None, ask_to_report: bool = False) -> tuple[str, str]:
    """Render the plain-text digest for ``recipient`` (an Apprise tag) of ``items`` (a
    :class:`Digest` or a list); ``as_of`` is the aware instant of the check. The greeting names
    ``addressee`` (the tag when None); the last line names the tag. ``ask_to_report`` adds, in
    both languages, what to do when an item is done already: tell the coordinators (a digest
    to a mission or a country office; found by a review of the digests: they said what was
    late and nothing of what to do), at the items' ``coordinator_email`` where their roadmaps
    give one (found by a review of the seed, whose last slide gives the mailbox).

    Returns:
        ``(subject, body)``: both bilingual (English, then Arabic).
    """
    digest = _digest(items)
    body = _TEXT_ENV.get_template("digest.txt.j2").render(
        **_context(recipient, digest, as_of, addressee, ask_to_report))
    return render_subject(digest), body


def render_digest_html(recipient: str, items: Digest | list[DigestItem], as_of: dt.datetime,
                       addressee: Addressee | None = None, ask_to_report: bool = False) -> str:
    """Render the HTML digest (autoescaped; Arabic part right-to-left), as :func:`render_digest`."""
    return _HTML_ENV.get_template("digest.html.j2").render(
        **_context(recipient, _digest(items), as_of, addressee, ask_to_report))
