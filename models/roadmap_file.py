"""Reading and validating a roadmap file (YAML) before anything touches the database.

The file format is documented in ``roadmaps/README.md``; ``roadmaps/gcm-arab-2024.yaml`` is the
real example. Validation happens here, on non-table pydantic models (the SQLModel table
classes do not validate on construction); :mod:`models.sync` only writes what passed.

Every problem raises :class:`RoadmapFileError` naming the file, the field path
(``milestones[3].deadline``) and the offending value.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import zoneinfo
from email.errors import MessageError
from email.headerregistry import Address
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import pycountry
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.deadlines import FIRST_DATE, LAST_DATE, DeadlineRuleError, LocalDates, RelativeRule, parse_rule, shift
from models.parties import Party, party_for
from models.tables import NonWorkingDay, Owner, State

#: Largest roadmap file accepted. A real roadmap is a few kB; this bounds memory on bad input.
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Deepest YAML nesting accepted (a roadmap needs four levels); bounds PyYAML's recursive composer.
MAX_YAML_DEPTH = 20
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A host name of two or more dotted labels of ASCII letters, digits and inner hyphens (RFC 1123).
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))+")
_SLUG_CLEAN = re.compile(r"[^a-z0-9]+")
#: Every weekday name a weekend may use, case aside: the three-letter abbreviation or the full
#: English name (``Fri``, ``friday``), each to its number, Monday = 0.
_WEEKDAY_NAMES = {
    name: number
    for number, full in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
    for name in (full[:3], full)
}
#: A whole number of days, not a YAML boolean (``yes`` is true, which pydantic would read as 1)
#: nor a text or a fraction.
Days = Annotated[int, Field(strict=True)]


#: ``value`` of a :class:`RoadmapFileError` about no value at all (an unreadable file, a YAML
#: syntax error): the message then ends with the reason, not "(value: None)".
NO_VALUE: Any = object()


class RoadmapFileError(ValueError):
    """A roadmap file that cannot be loaded.

    Attributes:
        file: the path as given.
        field: the field path inside the file (``milestones[2].depends_on[0]``), or "" for the whole file.
        value: the offending value (``repr``-able; None is YAML's null), or None when the error is
            about no value (given as :data:`NO_VALUE`).
    """

    def __init__(self, file: str | Path, field: str, value: Any, reason: str):
        if len(reason) > 300:  # a validator's message may quote a long value; the value is shown below
            reason = reason[:297] + "..."
        self.file, self.field, self.value, self.reason = str(file), field, None if value is NO_VALUE else value, reason
        where = f"{self.file}: {field}" if field else self.file
        if value is NO_VALUE:
            super().__init__(f"{where}: {reason}")
            return
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{where}: {reason} (value: {shown})")


@lru_cache(maxsize=1)
def _iana_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(name: str) -> str:
    """Return ``name`` if it is an IANA time zone, else raise ``ValueError`` with a hint."""
    if name not in _iana_zones():
        hint = " (Geneva is in 'Europe/Zurich')" if name == "Europe/Geneva" else ""
        raise ValueError(f"unknown IANA time zone {name!r}{hint}")
    return name


def check_mailbox(address: str) -> str:
    """Return ``address``, one plain e-mail address (``gcmrrarabstates@iom.int``), as the standard
    library's RFC 5322 parser (:class:`email.headerregistry.Address`) reads it, with a host name
    of dotted ASCII labels for its domain (a mailbox others can write to; ``name@iom`` is a
    typo) and none of ``? # % & /`` (a ``mailto:`` link would read them as its own: RFC 6068).

    Raises:
        ValueError: anything else: a display name (``Name <a@b.org>``), several addresses, a
            quoted or non-ASCII local part, a line break, no ``@`` or no domain, a domain that
            is no host name (``a@[192.0.2.1]``, ``a@-iom.int``).
    """
    try:
        parsed = Address(addr_spec=address).addr_spec
    except IndexError:  # the parser's own, on "name@"
        raise ValueError("is not one e-mail address (no domain)") from None
    except (ValueError, MessageError) as exc:
        raise ValueError(f"is not one e-mail address ({exc})") from None
    local, _, domain = address.rpartition("@")
    if parsed != address or any(c in local for c in '"?#%&/') or not _HOST_NAME.fullmatch(domain):
        raise ValueError("is not one plain e-mail address such as name@example.org")
    return address


def check_country(code: str) -> str:
    """Return ``code`` upper-cased if it is an ISO 3166-1 alpha-2 code (pycountry), else raise ``ValueError``."""
    if not code.isascii() or pycountry.countries.get(alpha_2=code.upper()) is None:
        raise ValueError(f"unknown ISO 3166-1 alpha-2 country code {code!r}")
    return code.upper()


def normalise_slug(text: str) -> str:
    """Return ``text`` as an artifact-safe slug: lower case, ``[a-z0-9-]`` only (Prefect's key rule)."""
    return _SLUG_CLEAN.sub("-", text.lower()).strip("-")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


#: Characters a name or title may not hold, with what they are: control characters (Unicode
#: category Cc: line breaks, tabs, escape) and the bidirectional embeddings, overrides and
#: isolates (U+202A-U+202E, U+2066-U+2069), which reorder the text around them on screen.
_BIDI_CONTROLS = {0x202A: "a left-to-right embedding", 0x202B: "a right-to-left embedding",
                  0x202C: "a pop of directional formatting", 0x202D: "a left-to-right override",
                  0x202E: "a right-to-left override", 0x2066: "a left-to-right isolate",
                  0x2067: "a right-to-left isolate", 0x2068: "a first-strong isolate",
                  0x2069: "a pop of directional isolate"}


def check_one_line(text: str) -> str:
    """Return ``text``, a name or a title shown on one line (a digest's greeting, a matrix row,
    a calendar event), or raise ``ValueError`` naming the first character it may not hold: a
    control character (a line break, a tab) or a bidirectional override (found by a review: a
    mission's name with line breaks became lines of its digest, and a right-to-left override
    reordered the Arabic greeting). Arabic text needs none of them: the Unicode bidirectional
    algorithm orders it."""
    for char in text:
        code = ord(char)
        if unicodedata.category(char) == "Cc":
            what = {10: "a line break", 13: "a carriage return", 9: "a tab"}.get(code, "a control character")
        elif code in _BIDI_CONTROLS:
            what = _BIDI_CONTROLS[code]
        else:
            continue
        raise ValueError(f"holds {what} (U+{code:04X}): a name or title is one line of plain text")
    return text


class PlaceSpec(_Strict):
    """A mission, office or coordinator: a name and the IANA zone it keeps time in."""

    name: str = Field(min_length=1, max_length=200)
    timezone: str

    _tz = field_validator("timezone")(check_timezone)
    _one_line = field_validator("name")(check_one_line)


class PartySpec(PlaceSpec):
    """A member state's permanent mission or country office: a place, and optionally its name in
    Arabic (``name_ar``: the Arabic greeting of its digests; else one is made from the member
    state's Arabic name, which cannot say where a mission is accredited)."""

    name_ar: str = Field(default="", max_length=200)

    _one_line_ar = field_validator("name_ar")(check_one_line)


class CoordinatorSpec(PlaceSpec):
    """The secretariat: a place whose country's public holidays apply to coordinator-owned
    milestones, and optionally the public mailbox where missions and offices tell it what they
    have done (``email``: shown in their digests; the seed's last slide gives one)."""

    country: str = Field(min_length=2, max_length=2)
    email: str = Field(default="", max_length=254)

    @field_validator("country")
    @classmethod
    def _iso_code(cls, code: str) -> str:
        return check_country(code)

    @field_validator("email")
    @classmethod
    def _mailbox(cls, address: str) -> str:
        return check_mailbox(address) if address else address


class WeekendSpec(_Strict):
    """A weekend override for one member state, with where it comes from."""

    days: list[str] = Field(min_length=0, max_length=6)
    source: str = Field(min_length=1, max_length=500)

    @field_validator("days")
    @classmethod
    def _weekday_names(cls, days: list[str]) -> list[str]:
        for day in days:
            if day.lower() not in _WEEKDAY_NAMES:
                raise ValueError(f"unknown weekday {day!r} (use Mon, Tue, ... Sun, or Monday ... Sunday)")
        return days

    def numbers(self) -> list[int]:
        """Weekday numbers, Monday = 0 (the ``holidays`` package's convention), sorted."""
        return sorted({_WEEKDAY_NAMES[day.lower()] for day in self.days})


class MemberStateSpec(_Strict):
    """A member state as the roadmap file describes it."""

    code: str = Field(min_length=2, max_length=2)
    name: str = Field(min_length=1, max_length=200)
    name_ar: str = Field(default="", max_length=200)
    timezone: str
    mission: PartySpec
    office: PartySpec
    weekend: WeekendSpec | None = None

    _tz = field_validator("timezone")(check_timezone)
    _one_line = field_validator("name", "name_ar")(check_one_line)

    @field_validator("code")
    @classmethod
    def _iso_code(cls, code: str) -> str:
        return check_country(code)


class ReminderPolicySpec(_Strict):
    """When reminders are due: days before the deadline, then every N days while overdue."""

    before_days: list[Days] = Field(default=[14, 7, 3, 1, 0], max_length=30)
    overdue_every_days: Days = Field(default=3, ge=0, le=365)

    @field_validator("before_days")
    @classmethod
    def _sorted_days(cls, days: list[int]) -> list[int]:
        if any(day < 0 or day > 365 for day in days):
            raise ValueError("reminder days must be between 0 and 365")
        return sorted(set(days), reverse=True)


class MilestoneSpec(_Strict):
    """A milestone as the roadmap file describes it."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)
    title: str = Field(min_length=1, max_length=300)
    title_ar: str = Field(default="", max_length=300)
    owner: Owner
    deadline: str = Field(max_length=200)
    opens: str | None = Field(default=None, max_length=200)
    depends_on: list[str] = Field(default_factory=list, max_length=50)
    reminders: ReminderPolicySpec | None = None
    non_working_day: NonWorkingDay = NonWorkingDay.none
    #: Initial state for every member state, when the source says it already happened.
    status: State = State.pending
    #: Note recorded with that initial state.
    note: str = Field(default="", max_length=2000)

    _one_line = field_validator("title", "title_ar")(check_one_line)

    @field_validator("deadline", "opens", mode="before")
    @classmethod
    def _date_to_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2024-03-17 as a date; the rule grammar wants text.
        return value.isoformat() if isinstance(value, dt.date) else value


class AgendaItemSpec(_Strict):
    """A timed agenda session, local to the venue."""

    date: dt.date
    start: dt.time
    end: dt.time
    title: str = Field(min_length=1, max_length=300)
    title_ar: str = Field(default="", max_length=300)

    _one_line = field_validator("title", "title_ar")(check_one_line)

    @field_validator("date")
    @classmethod
    def _in_range(cls, day: dt.date) -> dt.date:
        if not FIRST_DATE <= day <= LAST_DATE:
            raise ValueError(f"dates must fall between {FIRST_DATE} and {LAST_DATE}")
        return day

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted 09:00 as a sexagesimal integer (540).
        if isinstance(value, int):
            raise ValueError("write times in quotes, e.g. '09:00'")
        return value

    @field_validator("start", "end")
    @classmethod
    def _local(cls, value: dt.time) -> dt.time:
        # "09:00Z" parses to an aware time, which cannot be compared with a naive one.
        if value.tzinfo is not None:
            raise ValueError("write local times without a UTC offset, e.g. '09:00' (the venue's zone applies)")
        return value

    @model_validator(mode="after")
    def _ends_after_start(self) -> "AgendaItemSpec":
        if self.end <= self.start:
            raise ValueError(f"session ends at {self.end} before it starts at {self.start}")
        return self


class RoadmapSpec(_Strict):
    """A whole roadmap file, validated. ``due`` holds each milestone's resolved local dates."""

    slug: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=300)
    title_ar: str = Field(default="", max_length=300)
    source: str = ""
    coordinator: CoordinatorSpec
    venue: PlaceSpec
    reminders: ReminderPolicySpec = ReminderPolicySpec()
    member_states: list[MemberStateSpec] = Field(min_length=1, max_length=300)
    milestones: list[MilestoneSpec] = Field(min_length=1, max_length=500)
    agenda: list[AgendaItemSpec] = Field(default_factory=list, max_length=500)
    due: dict[str, LocalDates] = Field(default_factory=dict, exclude=True)
    #: The slug exactly as written in the file (``slug`` is its normalised form).
    declared_slug: str = Field(default="", exclude=True)

    _one_line = field_validator("title", "title_ar")(check_one_line)

    @model_validator(mode="before")
    @classmethod
    def _no_computed_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in ("due", "declared_slug"):
                if name in data:
                    raise ValueError(f"unknown field {name!r}: it is computed, not written")
        return data

    @field_validator("slug")
    @classmethod
    def _slug(cls, slug: str) -> str:
        clean = normalise_slug(slug)
        if not clean:
            raise ValueError(f"slug {slug!r} has no letters or digits")
        if len(clean) > 64:
            raise ValueError(f"slug is {len(clean)} characters long once normalised: at most 64")
        return clean

    def policy(self, milestone: MilestoneSpec) -> ReminderPolicySpec:
        """Return the milestone's reminder policy, or the roadmap default."""
        return milestone.reminders or self.reminders

    def party_due(self, milestone: MilestoneSpec, member: MemberStateSpec) -> tuple[Party, dt.date]:
        """The party acting on ``milestone`` for ``member`` (:func:`models.parties.party_for`)
        and its deadline: the milestone's resolved local date (``due``, filled by
        :func:`load_roadmap_file`) moved by ``non_working_day`` to the party's working day.

        Returns:
            ``(party, date)``: the date is local to ``party.timezone`` (the deadline is the end
            of that day there; see :func:`models.deadlines.end_of_local_day`).
        """
        party = party_for(
            milestone.owner, member_state_code=member.code, mission_timezone=member.mission.timezone,
            office_timezone=member.office.timezone, weekend_override=member.weekend.numbers() if member.weekend else None,
            weekend_source=member.weekend.source if member.weekend else "",
            coordinator_timezone=self.coordinator.timezone, coordinator_country=self.coordinator.country,
        )
        due = self.due[milestone.key].due
        if milestone.non_working_day is NonWorkingDay.previous_working_day:
            due = party.calendar.on_or_before(due)
        elif milestone.non_working_day is NonWorkingDay.next_working_day:
            due = party.calendar.on_or_after(due)
        return party, due


def _loc(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int) or not _PLAIN_KEY.match(str(part)):
            # An index, or a key that is not a plain name ("na\nme", "", 3.5): shown quoted.
            path += f"[{part}]" if isinstance(part, int) else f"[{str(part)!r}]"
        else:
            path += f".{part}" if path else part
    return path


def _value_at(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


#: A whole number as a roadmap file writes one: decimal digits, no leading zero, an optional sign.
_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9]*)")


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses YAML aliases (a roadmap needs none, and they enable YAML bombs),
    nesting deeper than ``MAX_YAML_DEPTH`` and a key given twice in one mapping, and reports a scalar it cannot convert
    (``2024-02-30``, a 5000-digit number) as a YAML error at its line instead of a ``ValueError``."""

    _depth = 0

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                None, None, "YAML aliases (*name) are not allowed in a roadmap file", event.start_mark
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.MarkedYAMLError(
                None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: D401 - PyYAML hook
        # YAML 1.2 requires unique keys; PyYAML keeps the last silently, so a second ``slug:``
        # or ``deadline:`` pasted below the first would replace it (found by a bad-input review).
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (first on line {first})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_object(self, node, deep=False):  # noqa: D401 - PyYAML hook
        if node.tag == "tag:yaml.org,2002:int" and not _DECIMAL.fullmatch(node.value):
            # Found by a bad-input review: YAML 1.1 reads 010 as 8 (octal), 10:00 as 600.
            if ":" in node.value:
                problem = (f"YAML 1.1 reads {node.value!r:.30} as a number (minutes and seconds); write a time or text in "
                           f"quotes ('{node.value:.30}'), a number in decimal digits")
            else:
                problem = (f"write the number {node.value!r:.30} in plain decimal digits (YAML 1.1 reads a leading 0 as "
                           "octal, 0x as hexadecimal)")
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:
            if node.tag == "tag:yaml.org,2002:timestamp":
                # An impossible date (2024-06-31) is read as text, so its field's own check names
                # the field, as for a quoted one (found by a review of roadmap changes).
                return node.value
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r:.60}: {exc}", node.start_mark
            ) from None


def read_yaml(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Read a YAML file safely: size-bounded, no aliases, no Python tags.

    Raises:
        RoadmapFileError: missing or unreadable (a folder), too large, not UTF-8, or not valid YAML.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RoadmapFileError(path, "", NO_VALUE, f"cannot read file: {exc.strerror}") from None
    if size > max_bytes:
        raise RoadmapFileError(path, "", size, f"file is larger than {max_bytes} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RoadmapFileError(path, "", exc.object[exc.start : exc.start + 8], "file is not UTF-8") from None
    except OSError as exc:  # a folder named *.yaml, no permission
        raise RoadmapFileError(path, "", NO_VALUE, f"cannot read file: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RoadmapFileError(path, where, NO_VALUE, f"invalid YAML: {problem}") from None


#: Name endings of roadmap files in a folder: YAML's two (yaml.org FAQ: ".yaml" preferred).
ROADMAP_SUFFIXES = (".yaml", ".yml")


def roadmap_files_in(folder: Path) -> list[Path]:
    """The roadmap files of ``folder`` (not its subfolders): every entry whose name ends in
    ``.yaml`` or ``.yml``, in any case (``C.YAML``), except hidden ones (``._a.yaml``, which
    macOS leaves beside copies), sorted by path; none when ``folder`` does not exist. Found by
    bad-input reviews: ``*.yml`` files, then ``*.YAML`` ones, were ignored."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in ROADMAP_SUFFIXES and not p.name.startswith("."))


def load_roadmap_file(path: str | Path) -> RoadmapSpec:
    """Read, validate and resolve a roadmap file.

    Args:
        path: a YAML roadmap file.

    Returns:
        A ``RoadmapSpec`` whose ``due`` maps each milestone key to its resolved ``LocalDates``.

    Raises:
        RoadmapFileError: the first problem found, with file, field path and value: unreadable
            or invalid YAML, unknown field, unknown time zone or country code, duplicate
            milestone key or member state, unknown dependency or reference, dependency cycle,
            unreadable or impossible deadline, a milestone due before one it depends on.
    """
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise RoadmapFileError(path, "", type(data).__name__, "a roadmap file is a mapping of fields")
    nul = next(_nul_texts(data, ()), None)
    if nul is not None:
        raise RoadmapFileError(
            path, _loc(nul), _value_at(data, nul), "text holds a NUL character (\\x00), which the database cannot store"
        )
    try:
        spec = RoadmapSpec.model_validate(data)
    except ValidationError as exc:
        # An unknown field is usually a typo that also causes "field required": name it first.
        first = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        loc = tuple(first["loc"])
        raise RoadmapFileError(path, _loc(loc), _value_at(data, loc), first["msg"]) from None
    _check_unique(path, spec)
    spec.due = _resolve(path, spec)
    _check_moved_deadlines(path, spec)
    spec.declared_slug = str(data["slug"]).strip()[:64]
    return spec


def _nul_texts(data: Any, loc: tuple):
    """Yield the location of every key or string value holding NUL (PostgreSQL refuses it in text)."""
    if isinstance(data, str):
        if "\x00" in data:
            yield loc
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and "\x00" in key:
                yield loc + (key,)
            yield from _nul_texts(value, loc + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _nul_texts(value, loc + (index,))


def _check_unique(path: str | Path, spec: RoadmapSpec) -> None:
    seen: set[str] = set()
    for index, state in enumerate(spec.member_states):
        if state.code in seen:
            raise RoadmapFileError(path, f"member_states[{index}].code", state.code, "duplicate member state")
        seen.add(state.code)
    keys: set[str] = set()
    for index, milestone in enumerate(spec.milestones):
        if milestone.key in keys:
            raise RoadmapFileError(path, f"milestones[{index}].key", milestone.key, "duplicate milestone key")
        keys.add(milestone.key)
    for index, milestone in enumerate(spec.milestones):
        for dep_index, dep in enumerate(milestone.depends_on):
            if dep not in keys:
                raise RoadmapFileError(
                    path, f"milestones[{index}].depends_on[{dep_index}]", dep, "unknown milestone"
                )


def _resolve(path: str | Path, spec: RoadmapSpec) -> dict[str, LocalDates]:
    """Resolve every rule in dependency order; detect cycles through depends_on and references."""
    index_of = {m.key: i for i, m in enumerate(spec.milestones)}
    parsed: dict[str, tuple[LocalDates | RelativeRule, LocalDates | RelativeRule | None]] = {}
    for i, milestone in enumerate(spec.milestones):
        rules = []
        for field in ("deadline", "opens"):
            text = getattr(milestone, field)
            if text is None:
                rules.append(None)
                continue
            try:
                rule = parse_rule(text)
            except DeadlineRuleError as exc:
                raise RoadmapFileError(path, f"milestones[{i}].{field}", text, str(exc)) from None
            if isinstance(rule, RelativeRule) and rule.ref not in index_of:
                raise RoadmapFileError(
                    path, f"milestones[{i}].{field}", text, f"refers to unknown milestone {rule.ref!r}"
                )
            rules.append(rule)
        parsed[milestone.key] = (rules[0], rules[1])

    def edges(key: str) -> list[tuple[str, str]]:
        milestone = spec.milestones[index_of[key]]
        out = [(dep, f"milestones[{index_of[key]}].depends_on") for dep in milestone.depends_on]
        for field, rule in zip(("deadline", "opens"), parsed[key]):
            if isinstance(rule, RelativeRule):
                out.append((rule.ref, f"milestones[{index_of[key]}].{field}"))
        return out

    resolved: dict[str, LocalDates] = {}
    visiting: list[str] = []

    def visit(key: str) -> LocalDates:
        if key in resolved:
            return resolved[key]
        visiting.append(key)
        for ref, field in edges(key):
            if ref in visiting:
                cycle = visiting[visiting.index(ref) :] + [ref]
                raise RoadmapFileError(path, field, ref, "dependency cycle: " + " -> ".join(cycle))
            visit(ref)
        visiting.pop()
        due_rule, opens_rule = parsed[key]
        i = index_of[key]
        due = _apply(due_rule, resolved)
        opens = _apply(opens_rule, resolved) if opens_rule is not None else None
        result = LocalDates(due=due.due, opens=opens.due if opens else due.opens)
        for field, day in (("deadline", result.due), ("opens" if opens else "deadline", result.opens)):
            if day is not None and not FIRST_DATE <= day <= LAST_DATE:
                raise RoadmapFileError(
                    path, f"milestones[{i}].{field}", str(day), f"dates must fall between {FIRST_DATE} and {LAST_DATE}"
                )
        if result.opens and result.opens > result.due:
            raise RoadmapFileError(
                path, f"milestones[{i}].opens", str(result.opens), f"opens after its deadline {result.due}"
            )
        resolved[key] = result
        return result

    for milestone in spec.milestones:
        visit(milestone.key)
    for i, milestone in enumerate(spec.milestones):
        # Found by a bad-input review: a milestone could be due before one it depends on, so
        # that finishing the dependency on its last day left it overdue already.
        for dep in milestone.depends_on:
            if resolved[milestone.key].due < resolved[dep].due:
                raise RoadmapFileError(
                    path, f"milestones[{i}].deadline", milestone.deadline,
                    f"due on {resolved[milestone.key].due}, before {dep!r} (due on {resolved[dep].due}), "
                    "which it depends on",
                )
    return resolved


def _check_moved_deadlines(path: str | Path, spec: RoadmapSpec) -> None:
    """Check the deadlines ``non_working_day`` moves to a party's working day, member state by
    member state: each stays between ``FIRST_DATE`` and ``LAST_DATE``, and none comes before the
    deadline of a milestone it depends on. Found by bad-input reviews: travel on
    ``previous_working_day`` ended on Friday 28 June 2024 for the offices with a Saturday-Sunday
    weekend, before nominations (Sunday 30 June) that it depends on; 2999-12-31 on
    ``next_working_day`` became 3000-01-02. Dates are compared as each party's local dates: one
    day in Geneva and in Amman is the same day."""
    moved = {
        m.key: {member.code: spec.party_due(m, member)[1] for member in spec.member_states}
        for m in spec.milestones if m.non_working_day is not NonWorkingDay.none
    }
    if not moved:
        return  # every deadline on its resolved date, checked by _resolve
    by_key = {m.key: m for m in spec.milestones}

    def due(key: str, code: str) -> dt.date:
        return moved[key][code] if key in moved else spec.due[key].due

    for i, milestone in enumerate(spec.milestones):
        for code, day in moved.get(milestone.key, {}).items():
            if not FIRST_DATE <= day <= LAST_DATE:
                raise RoadmapFileError(
                    path, f"milestones[{i}].deadline", milestone.deadline,
                    f"due for {code} on {day}{_MOVED[milestone.non_working_day]}: dates must fall between "
                    f"{FIRST_DATE} and {LAST_DATE}",
                )
        for dep in milestone.depends_on:
            if milestone.key not in moved and dep not in moved:
                continue
            dependency = by_key[dep]
            for member in spec.member_states:
                own, before = due(milestone.key, member.code), due(dep, member.code)
                if own < before:
                    raise RoadmapFileError(
                        path, f"milestones[{i}].deadline", milestone.deadline,
                        f"due for {member.code} on {own}{_MOVED[milestone.non_working_day]}, before {dep!r} "
                        f"on {before}{_MOVED[dependency.non_working_day]}, which it depends on",
                    )


#: How a deadline moved by ``non_working_day`` is told in an error message.
_MOVED = {
    NonWorkingDay.none: "",
    NonWorkingDay.previous_working_day: " (moved to the previous working day)",
    NonWorkingDay.next_working_day: " (moved to the next working day)",
}


def _apply(rule: LocalDates | RelativeRule, resolved: dict[str, LocalDates]) -> LocalDates:
    if isinstance(rule, LocalDates):
        return rule
    ref = resolved[rule.ref]
    anchor = (ref.opens or ref.due) if rule.anchor == "start" else ref.due
    return LocalDates(due=shift(anchor, rule))
