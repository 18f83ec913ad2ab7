"""A synthetic portfolio for the nightly-check benchmark, written with bulk inserts.

The schema is the product's: :func:`models.db.get_engine` brings the database to the head
Alembic revision; this module only inserts rows (SQLAlchemy Core ``executemany`` in chunks,
which SQLAlchemy turns into multi-row ``INSERT ... VALUES`` batches on PostgreSQL). It does not
go through :mod:`models.sync`, which is per-row ORM work and far too slow at a million rows.

Shape: roadmaps of 6 milestones (the seed roadmap's shape: coordinator, mission and office
owners, a dependency chain, two windows, one "previous working day" rule), each roadmap with 16
to 200 member states drawn from the 249 ISO 3166-1 alpha-2 codes (pycountry). Deadlines are
spread around the as-of date (roadmaps' conferences from 40 days before to 90 days after it),
so overdue, due today, due soon, upcoming and blocked rows all occur. Recorded states depend on
whether the deadline has passed and on the dependency's state; overall about 40 % done.
Deterministic for a given ``seed`` and ``rows``.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import pycountry
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine

from models.calendars import calendar_for
from models.deadlines import end_of_local_day, start_of_local_day
from models.tables import MemberState, Milestone, Roadmap, Status

#: Rows per executemany call.
CHUNK = 20_000

#: Where the roadmaps' secretariats sit (country, IANA zone).
COORDINATORS = [
    ("EG", "Africa/Cairo"), ("CH", "Europe/Zurich"), ("JO", "Asia/Amman"), ("SN", "Africa/Dakar"),
    ("TH", "Asia/Bangkok"), ("PA", "America/Panama"), ("KE", "Africa/Nairobi"), ("AT", "Europe/Vienna"),
    ("US", "America/New_York"), ("FJ", "Pacific/Fiji"),
]

#: Two ISO codes have no zone in the IANA zone.tab; the zone of the administering country's nearest post.
_ZONE_FALLBACK = {"BV": "Europe/Oslo", "HM": "Indian/Kerguelen"}


@dataclass(frozen=True)
class MilestoneShape:
    key: str
    title: str
    owner: str
    days_before_conference: int
    depends_on: tuple[str, ...] = ()
    reminder_days: tuple[int, ...] = (14, 7, 3, 1, 0)
    overdue_every_days: int = 3
    window_days: int | None = None  #: the window opens this many days before the due day
    non_working_day: str = "none"


SHAPE = [
    MilestoneShape("orientation-briefing", "Orientation session on the draft agenda", "coordinator", 100),
    MilestoneShape("save-the-date", "Save-the-date through the permanent missions", "mission", 75),
    MilestoneShape("invitations", "Signed invitations to the ministers of foreign affairs", "mission", 40),
    MilestoneShape("nominations", "Nomination of delegates through the country offices", "office", 20,
                   ("invitations",), non_working_day="previous_working_day"),
    MilestoneShape("travel", "Travel arrangements through the country offices", "office", 8,
                   ("nominations",), window_days=29),
    MilestoneShape("conference", "Regional review conference", "coordinator", 0,
                   reminder_days=(14, 7, 1), overdue_every_days=0, window_days=2),
]


@dataclass
class PortfolioStats:
    rows: int = 0
    roadmaps: int = 0
    milestones: int = 0
    member_states_used: set[str] = field(default_factory=set)
    states: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def country_zone(code: str) -> str:
    """The first IANA zone of ``code`` in zone.tab (pytz's copy), or a fallback for BV and HM."""
    try:
        import pytz

        zones = pytz.country_timezones.get(code)
    except ImportError:  # pragma: no cover - pytz comes with the stack today
        zones = None
    return zones[0] if zones else _ZONE_FALLBACK.get(code, "Etc/UTC")


def member_state_rows() -> list[dict]:
    rows = []
    for country in sorted(pycountry.countries, key=lambda c: c.alpha_2):
        code, name = country.alpha_2, getattr(country, "common_name", None) or country.name
        zone = country_zone(code)
        rows.append(dict(
            code=code, name=name, name_ar="", timezone=zone,
            mission_name=f"Permanent Mission of {name} to the United Nations Office at Geneva",
            mission_timezone="Europe/Zurich",
            office_name=f"IOM {name} country office", office_timezone=zone,
            weekend_override=None, weekend_source="",
        ))
    return rows


@lru_cache(maxsize=None)
def _utc_end(day: dt.date, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(end_of_local_day(day, zone).timestamp(), tz=dt.timezone.utc)


@lru_cache(maxsize=None)
def _utc_start(day: dt.date, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(start_of_local_day(day, zone).timestamp(), tz=dt.timezone.utc)


@lru_cache(maxsize=None)
def _office_on_or_before(code: str, day: dt.date) -> dt.date:
    return calendar_for(code).on_or_before(day)


def _state(rng: random.Random, past: bool, dependency_met: bool) -> str:
    r = rng.random()
    if past:
        done = 0.72 if dependency_met else 0.15
        cuts = [("done", done), ("waived", 0.04), ("in_progress", 0.13)]
    else:
        done = 0.14 if dependency_met else 0.03
        cuts = [("done", done), ("waived", 0.02), ("in_progress", 0.30)]
    acc = 0.0
    for state, p in cuts:
        acc += p
        if r < acc:
            return state
    return "pending"


def generate(engine: Engine, *, rows: int, seed: int, as_of: dt.datetime) -> PortfolioStats:
    """Insert a portfolio of exactly ``rows`` status rows into the (migrated, empty) database of ``engine``."""
    import time

    started = time.perf_counter()
    rng = random.Random(seed)
    stats = PortfolioStats()
    as_of_day = as_of.astimezone(dt.timezone.utc).date()
    states = member_state_rows()
    zone_of = {s["code"]: s["office_timezone"] for s in states}
    codes = [s["code"] for s in states]
    changed_at = as_of - dt.timedelta(days=3)
    loaded_at = as_of - dt.timedelta(days=30)
    status_table, milestone_table, roadmap_table = Status.__table__, Milestone.__table__, Roadmap.__table__

    with engine.begin() as conn:
        conn.execute(insert(MemberState.__table__), states)
        remaining, roadmap_id, milestone_id, status_id = rows, 0, 0, 0
        roadmap_batch: list[dict] = []
        milestone_batch: list[dict] = []
        status_batch: list[dict] = []

        def flush(final: bool = False) -> None:
            # parents first: the foreign keys are checked per statement
            if roadmap_batch:
                conn.execute(insert(roadmap_table), roadmap_batch)
                roadmap_batch.clear()
            if milestone_batch:
                conn.execute(insert(milestone_table), milestone_batch)
                milestone_batch.clear()
            if status_batch:
                conn.execute(insert(status_table), status_batch)
                status_batch.clear()

        while remaining > 0:
            roadmap_id += 1
            members = sorted(rng.sample(codes, rng.randint(16, 200)))
            coord_country, coord_zone = COORDINATORS[rng.randrange(len(COORDINATORS))]
            conference = as_of_day + dt.timedelta(days=rng.randint(-40, 90))
            slug = f"bench-{roadmap_id:05d}"
            roadmap_batch.append(dict(
                id=roadmap_id, slug=slug, title=f"Regional review {roadmap_id}", title_ar="",
                coordinator_timezone=coord_zone, coordinator_country=coord_country,
                event_timezone=coord_zone, source_file=f"synthetic/{slug}.yaml", loaded_at=loaded_at,
            ))
            stats.roadmaps += 1
            recorded: dict[tuple[str, str], str] = {}
            for position, shape in enumerate(SHAPE):
                if remaining <= 0:
                    break
                milestone_id += 1
                due = conference - dt.timedelta(days=shape.days_before_conference)
                opens = due - dt.timedelta(days=shape.window_days) if shape.window_days is not None else None
                milestone_batch.append(dict(
                    id=milestone_id, roadmap_id=roadmap_id, key=shape.key, title=shape.title, title_ar="",
                    owner=shape.owner, deadline_rule=due.isoformat(),
                    opens_rule=opens.isoformat() if opens else None, due_date=due, opens_date=opens,
                    depends_on=list(shape.depends_on), reminder_days=list(shape.reminder_days),
                    overdue_every_days=shape.overdue_every_days, non_working_day=shape.non_working_day,
                    position=position, active=True,
                ))
                stats.milestones += 1
                for code in members[: min(len(members), remaining)]:
                    if shape.owner == "coordinator":
                        zone, day = coord_zone, due
                    elif shape.owner == "mission":
                        zone, day = "Europe/Zurich", due
                    else:
                        zone = zone_of[code]
                        day = _office_on_or_before(code, due) if shape.non_working_day == "previous_working_day" else due
                    met = all(recorded.get((dep, code)) in ("done", "waived") for dep in shape.depends_on)
                    state = _state(rng, day < as_of_day, met)
                    recorded[(shape.key, code)] = state
                    status_id += 1
                    status_batch.append(dict(
                        id=status_id, milestone_id=milestone_id, member_state_code=code, state=state,
                        deadline=_utc_end(day, zone), opens_at=_utc_start(opens, zone) if opens else None,
                        owner_timezone=zone, changed_at=changed_at, changed_by="benchmark",
                        note=f"NV {status_id}/2024" if rng.random() < 0.1 else "",
                        last_classification=None, last_checked_at=None,
                    ))
                    stats.states[state] += 1
                    stats.member_states_used.add(code)
                    remaining -= 1
                if len(status_batch) >= CHUNK:
                    flush()
        flush(final=True)
        stats.rows = status_id
        if engine.dialect.name == "postgresql":
            # explicit ids do not move the serial sequences
            for table in ("roadmap", "milestone", "status"):
                conn.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT coalesce(max(id), 1) FROM {table}))"
                ))
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
        assert conn.execute(select(func.count()).select_from(status_table)).scalar_one() == rows
    stats.seconds = time.perf_counter() - started
    return stats
