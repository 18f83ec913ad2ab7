"""Who acts on a milestone for a member state: recipient tag, clock and calendar.

The rule (from the seed's logistics timeline): the coordinators act for coordinator-owned
milestones, the permanent mission in Geneva for mission-owned ones, the IOM country office for
office-owned ones. Recipients are Apprise tags: ``coordinators``, ``mission-<cc>``,
``office-<cc>`` (lower-case alpha-2).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from models.calendars import WorkingCalendar, calendar_for, mission_calendar
from models.tables import MemberState, Owner

COORDINATORS_TAG = "coordinators"
#: How a digest to the ``coordinators`` tag addresses them, in English and Arabic.
COORDINATORS_NAMES = ("the coordinators", "المنسقين")


@dataclass(frozen=True)
class Party:
    """The acting party for one (milestone, member state).

    Attributes:
        recipient: Apprise tag of the party.
        timezone: IANA zone whose local day the deadline ends in.
        calendar: working days of the party.
    """

    recipient: str
    timezone: str
    calendar: WorkingCalendar


def recipient_tag(owner: Owner | str, member_state_code: str) -> str:
    """Return the Apprise tag of ``owner`` for a member state ("mission-jo", "office-jo", "coordinators")."""
    owner = Owner(owner)
    if owner is Owner.coordinator:
        return COORDINATORS_TAG
    return f"{owner.value}-{member_state_code.lower()}"


def party_for(
    owner: Owner | str,
    *,
    member_state_code: str,
    mission_timezone: str,
    office_timezone: str,
    weekend_override: list[int] | None,
    weekend_source: str,
    coordinator_timezone: str,
    coordinator_country: str,
) -> Party:
    """Return the acting :class:`Party` for ``owner`` and one member state.

    All arguments are plain values (table columns), so callers need no ORM session.
    The weekend override applies to the country office only: missions keep Geneva's calendar.

    Raises:
        ValueError: ``owner`` is none of :class:`Owner`'s values.
        NotImplementedError: the ``holidays`` package has no calendar for the country
            (:func:`models.calendars.calendar_for`; roadmap files are checked for it on load).
    """
    owner = Owner(owner)
    tag = recipient_tag(owner, member_state_code)
    if owner is Owner.coordinator:
        return Party(tag, coordinator_timezone, calendar_for(coordinator_country))
    if owner is Owner.mission:
        return Party(tag, mission_timezone, mission_calendar())
    return Party(
        tag, office_timezone, calendar_for(member_state_code, None, weekend_override, weekend_source)
    )


def coordinators_at_work(coordinator_country: str, coordinator_timezone: str, instant: dt.datetime) -> bool:
    """Whether the aware ``instant`` falls on a working day of the coordinators: their local day
    in ``coordinator_timezone`` (IANA), their country's weekend and public holidays
    (:func:`models.calendars.calendar_for`; Egypt's for the seed). Escalations wait for such a
    day, as reminders wait for their recipient's (found by a replay of the 2024 campaign: the
    invitations' escalation went out on Friday 7 June, the coordinators' weekend in Cairo).

    Raises:
        ValueError: ``instant`` is naive.
        NotImplementedError: the ``holidays`` package has no calendar for the country.
    """
    if instant.tzinfo is None:
        raise ValueError(f"instant {instant!r} is naive: give a UTC offset")
    local = instant.astimezone(ZoneInfo(coordinator_timezone))
    return calendar_for(coordinator_country).is_working_day(local.date())


def addressee_names(session: Session) -> dict[str, tuple[str, str]]:
    """{Apprise tag: (English name, Arabic name)} of every party a digest can go to, for its
    greeting: ``mission-<cc>`` the member state's ``mission.name`` from its roadmap file and, in
    Arabic, its ``mission.name_ar``, else "البعثة الدائمة" with the member state's Arabic name;
    ``office-<cc>`` the ``office.name`` and its ``office.name_ar``, else "مكتب المنظمة الدولية
    للهجرة في" with that name; ``coordinators`` :data:`COORDINATORS_NAMES`. A member state
    without any Arabic name keeps the English name in both. One query over the member states (a
    few hundred at most: ISO 3166-1 codes).
    """
    names = {COORDINATORS_TAG: COORDINATORS_NAMES}
    for state in session.exec(select(MemberState)):
        mission_ar = f"البعثة الدائمة {_with_lam(state.name_ar)}" if state.name_ar else state.mission_name
        office_ar = f"مكتب المنظمة الدولية للهجرة في {state.name_ar}" if state.name_ar else state.office_name
        names[recipient_tag(Owner.mission, state.code)] = (state.mission_name, state.mission_name_ar or mission_ar)
        names[recipient_tag(Owner.office, state.code)] = (state.office_name, state.office_name_ar or office_ar)
    return names


def _with_lam(name_ar: str) -> str:
    """``name_ar`` after the preposition لـ ("of"): ل + الجزائر is written للجزائر (the article's
    alif drops, a rule of Arabic spelling), ل + جيبوتي لجيبوتي."""
    return f"لل{name_ar[2:]}" if name_ar.startswith("ال") else f"ل{name_ar}"
