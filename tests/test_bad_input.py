"""Bad input (issue "Bad input"): generated and mutated input never gives a traceback, always a
clear error naming where, and leaves the database unchanged.

Hypothesis properties feed the deadline-rule parser, the roadmap loader (alone, then through
``sync_roadmap_file`` on a seeded database), ``roadmap mark`` and the Apprise config loader. The
number of cases each property tried is printed in pytest's terminal summary
(``tests/hypothesis_report.py``). Specific cases: empty files, a YAML bomb, deep nesting, 10 MB
files, names mixing Arabic and Latin text, the 2000-character note limit.
"""

from __future__ import annotations

pytest_plugins = ["tests.hypothesis_report"]

import copy  # noqa: E402
import datetime as dt  # noqa: E402
import http.server  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import apprise  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sqlalchemy import select as sa_select  # noqa: E402
from sqlmodel import Session, SQLModel, select  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from flows.cli import app  # noqa: E402
from models.deadlines import DeadlineRuleError, LocalDates, RelativeRule, parse_rule  # noqa: E402
from models.roadmap_file import MAX_FILE_BYTES, RoadmapFileError, RoadmapSpec, load_roadmap_file  # noqa: E402
from models.sync import sync_roadmap_file  # noqa: E402
from models.tables import MemberState, Milestone, Roadmap, Status  # noqa: E402
from notifications.channels import ChannelConfigError, load_channels, parse_apprise_yaml  # noqa: E402
from tests.conftest import SEED_ROADMAP, error_lines  # noqa: E402
from tests.hypothesis_report import CASES  # noqa: E402

_FIXTURES_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
#: Pure properties: many cases. No per-example deadline: time and memory are bounded by the specific tests.
PURE = settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURES_OK)
#: Database-backed properties: few cases, so the suite stays fast on both databases.
DB = settings(max_examples=40, deadline=None, suppress_health_check=_FIXTURES_OK)

SEED_DATA = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
SEED_SPEC = load_roadmap_file(SEED_ROADMAP)
KEYS = [m.key for m in SEED_SPEC.milestones]
CODES = [m.code for m in SEED_SPEC.member_states]
STATES = ["pending", "in_progress", "done", "waived"]
VALID_RULES = [
    "end of May 2024", "mid-April 2024", "June 2024", "2024-03-17", "invitations + 10 days",
    "conference.start - 14 days", "travel.end", "Sept. 2024", "travel + 2 weeks",
]
#: Fields of the roadmap file that hold free text (names, titles, notes).
TEXT_FIELDS = {"name", "name_ar", "title", "title_ar", "note", "source"}
runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

_arabic_word = st.text(st.characters(min_codepoint=0x0621, max_codepoint=0x064A), min_size=1, max_size=8)
_latin_word = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=1, max_size=8)
#: Right-to-left mark, left-to-right mark, Arabic letter mark, tatweel: what mixed text carries.
_bidi_marks = st.sampled_from(["", "\u200f", "\u200e", "\u061c", "\u0640"])


@st.composite
def arabic_latin(draw, max_words: int = 6) -> str:
    """Text with at least one Arabic and one Latin word, in any order, with bidi marks between."""
    words = [draw(_arabic_word), draw(_latin_word)]
    words += draw(st.lists(st.one_of(_arabic_word, _latin_word), max_size=max_words - 2))
    words = draw(st.permutations(words))
    text = words[0]
    for word in words[1:]:
        text += draw(st.sampled_from([" ", " - ", "/", "\u060c ", " ("])) + draw(_bidi_marks) + word
    return text


#: Long text (around the 2000-character limits, up to 100 kB), built cheaply from a short unit.
long_text = st.builds(lambda unit, n: (unit * n)[:n], st.text(min_size=1, max_size=4), st.integers(1990, 100_000))
control_text = st.text(st.characters(max_codepoint=0x9F), max_size=20)
any_text = st.one_of(st.text(), arabic_latin(), long_text, control_text)

#: Pieces inserted by text edits: digits, separators, YAML and URL syntax, Rich markup.
_PIECES = st.one_of(
    st.text(max_size=3),
    st.sampled_from([
        "0000", "9999", "\u0662\u0660\u0662\u0664", "-", "+", " ", "\t", "\n", ".start", ".end", " weeks",
        " of ", "mid-", "end of ", "://", "@", ":", "/", "?", "&", "%", "#", "'", '"', "{", "}", "*", "&a",
        "!!python/object/apply:os.system", "\x00", "\u200f",
    ]),
)


def _edit_text(draw, text: str) -> str:
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "swapcase", "repeat"]))
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        if op == "insert":
            text = text[:i] + draw(_PIECES) + text[i:]
        elif op == "delete":
            text = text[:i] + text[j:]
        elif op == "replace":
            text = text[:i] + draw(_PIECES) + text[j:]
        elif op == "swapcase":
            text = text[:i] + text[i:j].swapcase() + text[j:]
        else:
            text = text[:i] + text[i:j] * draw(st.integers(2, 5)) + text[j:]
    return text


@st.composite
def edited(draw, bases: list[str]) -> str:
    """One of ``bases`` with one to three character-level edits."""
    return _edit_text(draw, draw(st.sampled_from(bases)))


def near(bases: list[str]) -> st.SearchStrategy[str]:
    """Valid values, their case variants and edits of them."""
    valid = st.sampled_from(bases)
    return st.one_of(valid, valid.map(str.lower), valid.map(str.upper), edited(bases))


#: Values that are almost right somewhere in a roadmap file.
_NEAR_VALID = st.sampled_from([
    "Europe/Geneva", "Europe/Zurich", "Pacific/Kiritimati", "Etc/GMT+12", "America/Los_Angeles", "EG", "XX",
    "jo", "AQ", "coordinator", "office", "mission", "done", "waived", "next_working_day",
    "previous_working_day", "09:00", "25:00", "Fri", "Thursday", "2024-02-30", "9999-12-31", "0001-01-01",
    "mid-April 0000", "invitations + 9999 weeks", "conference.start - 14 days", "travel.end", "nominations",
    "",
])
leaf_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**80),
    st.floats(),
    st.text(),
    arabic_latin(),
    long_text,
    st.dates(),
    st.datetimes(),
    st.times().map(lambda t: t.strftime("%H:%M")),
    _NEAR_VALID,
    near(VALID_RULES),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _walk(node, path):
    yield path, node
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _walk(child, path + (key,))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _walk(child, path + (index,))


def _get(root, path):
    for part in path:
        root = root[part]
    return root


@st.composite
def mutated_document(draw, base, values, max_ops: int = 4):
    """``base`` with up to ``max_ops`` structural mutations: delete a key or entry, replace a
    leaf by ``values``, duplicate a list entry, turn a list into a mapping or back, edit a string
    or a key."""
    doc = {"root": copy.deepcopy(base)}
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(["delete", "replace", "duplicate", "swap", "edit"]))
        nodes = list(_walk(doc["root"], ("root",)))
        if op == "delete":
            candidates = [p for p, _ in nodes if len(p) > 1]
        elif op == "replace":
            candidates = [p for p, n in nodes if not isinstance(n, (dict, list))]
        elif op == "duplicate":
            candidates = [p for p, n in nodes if isinstance(n, list) and n]
        elif op == "swap":
            candidates = [p for p, n in nodes if isinstance(n, (dict, list))]
        else:
            candidates = [p for p, n in nodes if isinstance(n, str) or (isinstance(n, dict) and n)]
        if not candidates:
            continue
        path = draw(st.sampled_from(candidates))
        parent, last = _get(doc, path[:-1]), path[-1]
        node = parent[last]
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(values)
        elif op == "duplicate":
            node.insert(draw(st.integers(0, len(node))), copy.deepcopy(node[draw(st.integers(0, len(node) - 1))]))
        elif op == "swap":
            parent[last] = list(node.values()) if isinstance(node, dict) else {f"item{i}": v for i, v in enumerate(node)}
        elif isinstance(node, str):
            parent[last] = _edit_text(draw, node)
        else:
            old = draw(st.sampled_from(list(node)))
            new = _edit_text(draw, str(old))
            parent[last] = {(new if key == old else key): value for key, value in node.items()}
    return doc["root"]


def _dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def byte_damage(draw, raw: bytes) -> bytes:
    """``raw`` as is, truncated at a random byte, with random bytes appended, or both."""
    op = draw(st.sampled_from(["none"] * 4 + ["append", "truncate", "truncate+append"]))
    if "truncate" in op:
        raw = raw[: draw(st.integers(0, len(raw)))]
    if "append" in op:
        raw += draw(st.binary(max_size=64))
    return raw


@st.composite
def roadmap_files(draw) -> bytes:
    """The seed roadmap, mutated in structure, then maybe damaged at the byte level."""
    return draw(byte_damage(_dump(draw(mutated_document(SEED_DATA, leaf_values))).encode("utf-8")))


@st.composite
def text_field_edits(draw) -> bytes:
    """The seed roadmap with one free-text field (name, title, note, ...) set to arbitrary text."""
    data = copy.deepcopy(SEED_DATA)
    paths = [p for p, n in _walk(data, ()) if isinstance(n, str) and p and p[-1] in TEXT_FIELDS]
    path = draw(st.sampled_from(paths))
    _get(data, path[:-1])[path[-1]] = draw(any_text)
    return _dump(data).encode("utf-8")


def _billion_laughs(tail: str) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n" + tail


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _backend(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def _snapshot(url: str) -> dict[str, list[str]]:
    """Every row of every table, as sorted reprs."""
    from models.db import get_engine

    with get_engine(url).connect() as conn:
        return {
            table.name: sorted(repr(tuple(row)) for row in conn.execute(sa_select(table)))
            for table in SQLModel.metadata.sorted_tables
        }


def _check_roadmap_error(exc: RoadmapFileError, path: Path) -> None:
    """A clear error: one line, starts with the file, names the field when there is one."""
    message = str(exc)
    assert message.startswith(f"{path}: "), message
    assert isinstance(exc.field, str) and hasattr(exc, "value")
    if exc.field:
        assert message.startswith(f"{path}: {exc.field}: "), message
    assert "\n" not in message and "Traceback" not in message, message
    assert len(message) <= len(str(path)) + 1000, message[:2000]


@contextmanager
def _peak_memory():
    """Yield a dict whose ``peak`` is set to the peak traced allocation (bytes) on exit."""
    box: dict[str, int] = {}
    tracemalloc.start()
    try:
        yield box
    finally:
        box["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


# ---------------------------------------------------------------------------------------------
# 1. Deadline rule parser
# ---------------------------------------------------------------------------------------------


@PURE
@given(rule=st.one_of(st.text(), near(VALID_RULES), edited(VALID_RULES), arabic_latin(), long_text))
@example(rule="mid-April 0000")
@example(rule="end of May 0000")
@example(rule="June 0000")
@example(rule="2024-02-30")
@example(rule="")
def test_parse_rule_returns_a_rule_or_quotes_the_input(rule):
    CASES["parse_rule"] += 1
    try:
        result = parse_rule(rule)
    except DeadlineRuleError as exc:
        assert repr(" ".join(rule.split())) in str(exc)
        return
    assert isinstance(result, (LocalDates, RelativeRule))
    if isinstance(result, LocalDates):
        assert isinstance(result.due, dt.date) and (result.opens is None or result.opens <= result.due)


# ---------------------------------------------------------------------------------------------
# 2. Roadmap loader, alone and through sync on a seeded database
# ---------------------------------------------------------------------------------------------


def test_the_unmutated_dump_loads(tmp_path):
    path = tmp_path / "seed.yaml"
    path.write_text(_dump(SEED_DATA), encoding="utf-8")
    assert load_roadmap_file(path).due == SEED_SPEC.due


@PURE
@given(case=roadmap_files())
@example(case=SEED_ROADMAP.read_bytes().replace(b"overdue_every_days: 3", b"overdue_every_days: " + b"9" * 5000))
@example(case=SEED_ROADMAP.read_bytes().replace(b"date: 2024-07-03,", b"date: 2024-02-30,", 1))
@example(case=SEED_ROADMAP.read_bytes().replace(b"deadline: 2024-03-17", b"deadline: 9999-12-31"))
@example(case=SEED_ROADMAP.read_bytes().replace(b"opens: 2024-07-02", b"opens: 0001-01-01"))
@example(case=SEED_ROADMAP.read_bytes().replace(b"slug: gcm-arab-2024", "slug: {}".format("\u0130" * 64).encode()))
@example(case=SEED_ROADMAP.read_bytes().replace(b"name: Algeria", b'name: "Alg\\0eria"'))
@example(case=SEED_ROADMAP.read_bytes().replace(b"name: Algeria", b'"na\\nme": Algeria'))
@example(case=b"slug: " + b"[" * 50_000 + b"]" * 50_000)
@example(case=SEED_ROADMAP.read_bytes().replace(b'start: "09:00", end: "09:45"', b'start: "09:00Z", end: "09:45"'))
def test_roadmap_loader_accepts_or_names_file_field_and_value(tmp_path, case):
    CASES["loader"] += 1
    path = tmp_path / "roadmap.yaml"
    path.write_bytes(case)
    try:
        spec = load_roadmap_file(path)
    except RoadmapFileError as exc:
        _check_roadmap_error(exc, path)
    else:
        assert isinstance(spec, RoadmapSpec)
        assert set(spec.due) == {m.key for m in spec.milestones}


@DB
@given(case=st.one_of(roadmap_files(), text_field_edits()))
@example(case=SEED_ROADMAP.read_bytes().replace(b"name: Algeria", b'name: "Alg\\0eria"'))
@example(case=SEED_ROADMAP.read_bytes().replace(b"slug: gcm-arab-2024", "slug: {}".format("\u0130" * 64).encode()))
@example(case=SEED_ROADMAP.read_bytes().replace(b"timezone: Africa/Cairo\n\n# The seed", b"timezone: Etc/GMT+12\n\n# The seed").replace(b"deadline: 2024-07-04", b"deadline: 9999-12-31"))
@example(case=SEED_ROADMAP.read_bytes().replace(b"timezone: Africa/Cairo\n\n# Default", b"timezone: Pacific/Kiritimati\n\n# Default").replace(b"date: 2024-07-03,", b"date: 0001-01-01,", 1))
def test_sync_of_mutated_file_loads_or_changes_nothing(seeded, tmp_path, case):
    CASES[f"sync[{_backend(seeded)}]"] += 1
    path = tmp_path / "mutated.yaml"
    path.write_bytes(case)
    before = _snapshot(seeded)
    try:
        sync_roadmap_file(path)
    except RoadmapFileError as exc:
        _check_roadmap_error(exc, path)
        assert _snapshot(seeded) == before


# ---------------------------------------------------------------------------------------------
# 3. roadmap mark
# ---------------------------------------------------------------------------------------------


def _mark(args: list[str], **kwargs):
    return runner.invoke(app, args, **kwargs)


def _status_row(url: str, milestone: str, code: str) -> Status:
    from models.db import get_engine

    with Session(get_engine(url)) as session:
        return session.exec(
            select(Status).join(Milestone).where(Milestone.key == milestone, Status.member_state_code == code)
        ).one()


@st.composite
def mark_argument(draw, valid: list[str]) -> str:
    """A valid value half the time (so that about a sixth of the calls succeed), else a variant,
    an edit or arbitrary text."""
    if draw(st.booleans()):
        return draw(st.one_of(near(valid), any_text))
    return draw(st.sampled_from(valid))


def _latest_recorded_change(url: str, milestone: str, code: str) -> dt.datetime | None:
    """When the latest change a person recorded for the row happened (aware, UTC), or None."""
    from sqlalchemy import func

    from models.db import get_engine
    from models.tables import StatusChange

    with Session(get_engine(url)) as session:
        latest = session.exec(
            select(func.max(StatusChange.changed_at)).join(Status, StatusChange.status_id == Status.id)
            .join(Milestone, Status.milestone_id == Milestone.id)
            .where(Milestone.key == milestone, Status.member_state_code == code, StatusChange.changed_by != "roadmap file")
        ).one()
    return latest  # aware UTC on both databases: models.db.UTCDateTime


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURES_OK)
@given(
    milestone=mark_argument(KEYS),
    member_state=mark_argument(CODES),
    state=mark_argument(STATES),
    note=st.one_of(st.none(), st.text(), arabic_latin(max_words=12), long_text, control_text),
    at=st.one_of(
        st.none(),
        st.datetimes(timezones=st.sampled_from([None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=-12))])).map(
            lambda moment: moment.isoformat()
        ),
        st.dates().map(str),
        near(["2024-06-05T09:00:00+02:00", "2024-06-05T09:00:00Z", "2024-06-05 09:00", "2024-06-05"]),
        st.text(max_size=30),
    ),
)
@example(milestone="invitations", member_state="jo", state="done", note="\u0645\u0630\u0643\u0631\u0629 NV/2024/051", at=None)
@example(milestone="", member_state="", state="", note=None, at=None)
@example(milestone="invitations", member_state="JO", state="done", note="x" * 100_000, at=None)
@example(milestone="[/]", member_state="JO", state="done", note=None, at=None)
@example(milestone="invitations", member_state="JO", state="done", note=None, at="0001-01-01T00:00:00")
@example(milestone="invitations", member_state="JO", state="done", note=None, at="9999-12-31T23:59:59-12:00")
@example(milestone="orientation-briefing", member_state="DZ", state="pending", note=None, at="0002-01-01000:00:00.1")
@example(milestone="orientation-briefing", member_state="DZ", state="pending", note="\x00", at=None)
def test_mark_records_or_fails_with_one_error_line_and_changes_nothing(seeded, milestone, member_state, state, note, at):
    from models.deadlines import parse_instant
    from models.status import FUTURE_SLACK

    backend = _backend(seeded)
    CASES[f"mark[{backend}]"] += 1
    milestone, member_state, state, note, at = (
        a for a in (milestone, member_state, state, note, at)
    )
    # A state is taken in any case, with a space or hyphen for its underscore ("In progress").
    normal_state = state.strip().lower().replace(" ", "_").replace("-", "_")
    valid = (milestone in KEYS and member_state.upper() in CODES and normal_state in STATES
             and (note is None or (len(note) <= 2000 and "\x00" not in note)))  # NUL: PostgreSQL cannot store it
    when = None
    if valid and at is not None:
        try:
            when = parse_instant(at, default_timezone=_status_row(seeded, milestone, member_state.upper()).owner_timezone)
        except ValueError:
            valid = False
        else:
            valid = when <= dt.datetime.now(dt.timezone.utc) + FUTURE_SLACK  # not dated in the future
            latest = _latest_recorded_change(seeded, milestone, member_state.upper())
            valid = valid and (latest is None or when >= latest)  # nor before a change recorded earlier
    args = ["mark"] + ([] if note is None else [f"--note={note}"]) + ([] if at is None else [f"--at={at}"])
    args += ["--", milestone, member_state, state]
    before = _snapshot(seeded)
    result = _mark(args)
    event("recorded" if valid else "refused")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if valid:
        assert result.exit_code == 0, result.stderr
        row = _status_row(seeded, milestone, member_state.upper())
        assert row.state == normal_state
        if note is not None:
            assert row.note == note
        if when is not None:
            # UTCDateTime stores through a float timestamp: far from 1970 (year 2, 9999) it may be
            # a few microseconds off.
            assert abs(row.changed_at - when) < dt.timedelta(milliseconds=1), (row.changed_at, when)
        return
    assert result.exit_code == 2, (result.exit_code, result.stdout[:300])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr[:500]
    # Long values are quoted up to their first 60 characters.
    named = any(repr(a) in lines[0] or repr(a[:60]) in lines[0] for a in (milestone, member_state, state, note, at) if a is not None)
    assert named or "note is" in lines[0], lines[0][:500]
    assert _snapshot(seeded) == before


@pytest.mark.parametrize("milestone", ["[/]", "[red]x", ":smile:"])
def test_mark_error_quotes_markup_literally(seeded, milestone):
    # Regression: errors were printed through Rich with markup on ('[/]' was a MarkupError).
    result = _mark(["mark", "--", milestone, "JO", "done"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2
    assert repr(milestone) in result.stderr


def test_mark_error_is_one_line_whatever_the_width(seeded, monkeypatch):
    # Regression: errors were wrapped at the terminal width (80 columns off a terminal).
    monkeypatch.setenv("COLUMNS", "40")
    result = _mark(["mark", "nope-" * 100, "JO", "done"])
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "args",
    [["mark", "invi\x00tations", "JO", "done"], ["mark", "--note=NV\x002024/051", "invitations", "JO", "done"]],
    ids=["nul-in-milestone", "nul-in-note"],
)
def test_mark_with_a_nul_character_fails_cleanly(seeded, args):
    before = _snapshot(seeded)
    result = _mark(args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2)
    if result.exit_code == 2:
        assert result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1
        assert _snapshot(seeded) == before


# ---------------------------------------------------------------------------------------------
# 4. Apprise config loader
# ---------------------------------------------------------------------------------------------


def _apprise_config(password: str) -> dict:
    return {
        "version": 1,
        "urls": [
            {
                f"mailtos://focal.point%40example.org:{password}@smtp.example.org"
                "?from=roadmap@example.org&to=mission.jordan@example.org": {"tag": "mission-jo"}
            },
            {f"json://roadmap:{password}@hooks.example.org/roadmap": {"tag": "coordinators"}},
            {f"mailto://user:{password}@example.org": [{"tag": "office-jo"}, {"tag": "office-tn"}]},
            {"outbox://archive": {"tag": "always"}},
        ],
    }


_apprise_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20), arabic_latin(),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=3),
    st.dictionaries(st.sampled_from(["tag", "format", "x"]), st.one_of(st.integers(), st.text(max_size=5)), max_size=2),
)


@st.composite
def apprise_configs(draw) -> tuple[str, str]:
    """(password, config text): arbitrary text, YAML-ish documents or mutations of a valid config,
    every URL carrying ``password``."""
    password = "S3cr3t-" + draw(st.text("0123456789abcdef", min_size=12, max_size=12))
    urls = st.sampled_from([
        f"json://u:{password}@h.example.org/x", f"mailto://u:{password}@example.org",
        f"u:{password}@h.example.org/x?to=http://y", f"nope://u:{password}@h",
    ])
    kind = draw(st.sampled_from(["text", "yamlish", "mutated", "mutated", "mutated"]))
    if kind == "text":
        return password, draw(st.one_of(st.text(), st.text().map(lambda t: f"urls:\n  - {t}\n")))
    if kind == "yamlish":
        keys = st.one_of(st.sampled_from(["urls", "tag", "include", "version"]), urls, st.text(max_size=8))
        tree = st.recursive(
            st.one_of(_apprise_leaves, urls),
            lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)),
            max_leaves=12,
        )
        return password, _dump(draw(st.dictionaries(keys, tree, max_size=4)))
    text = _dump(draw(mutated_document(_apprise_config(password), _apprise_leaves, max_ops=3)))
    op = draw(st.sampled_from(["none", "append", "truncate", "insert"]))
    if op == "append":
        text += draw(st.text(max_size=30))
    elif op == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif op == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(_PIECES) + text[at:]
    return password, text


def test_the_valid_apprise_config_loads():
    hub = parse_apprise_yaml(_dump(_apprise_config("S3cr3t-0123456789ab")), "apprise.yaml")
    assert len(hub) == 5


@PURE
@given(case=apprise_configs())
@example(case=("S3cr3t-feedfacefeed", "urls:\n  - 'u:S3cr3t-feedfacefeed@h.example.org/x?to=http://y': {tag: a}\n"))
@example(case=("S3cr3t-feedfacefeed", "urls:\n  - 'nope://u:S3cr3t-feedfacefeed@h': {tag: [1, 2]}\n"))
@example(case=("S3cr3t-feedfacefeed", "tag: [1, {a: 2}]\nurls:\n  - 'nope://u:S3cr3t-feedfacefeed@h'\n"))
@example(case=("S3cr3t-feedfacefeed", "urls:\n  - 'json://u:S3cr3t-feedfacefeed@h': {tag: 2024-02-30}\n"))
@example(case=("S3cr3t-feedfacefeed", "version: " + "9" * 5000 + "\nurls: []\n"))
@example(case=("S3cr3t-feedfacefeed", "urls: " + "[" * 20_000 + "]" * 20_000))
@example(case=("S3cr3t-feedfacefeed", ""))
@example(case=("S3cr3t-000000000000", "urls:\n- ''\ntag: json://u:S3cr3t-000000000000@h.example.org/x\n"))
def test_apprise_config_loads_or_fails_without_the_password(case):
    CASES["apprise"] += 1
    password, text = case
    try:
        hub = parse_apprise_yaml(text, "apprise.yaml")
    except ChannelConfigError as exc:
        message = str(exc)
        assert password not in message, message
        assert message.startswith("apprise.yaml: ") and "\n" not in message, message
        assert len(message) <= 2000, message[:2000]
    else:
        assert isinstance(hub, apprise.Apprise)


# ---------------------------------------------------------------------------------------------
# 5. Specific cases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\n\n", b"# only a comment\n", b"---\n", b"\xef\xbb\xbf"])
def test_an_empty_roadmap_file_is_rejected(tmp_path, content):
    path = tmp_path / "empty.yaml"
    path.write_bytes(content)
    with pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    _check_roadmap_error(info.value, path)
    assert "a roadmap file is a mapping of fields" in str(info.value)


def test_empty_rule_config_and_arguments_are_rejected(seeded, tmp_path):
    with pytest.raises(DeadlineRuleError, match="cannot read deadline rule ''"):
        parse_rule("")
    with pytest.raises(ChannelConfigError, match="needs a 'urls:' list"):
        parse_apprise_yaml("", "apprise.yaml")
    empty = tmp_path / "apprise.yaml"
    empty.write_bytes(b"")
    with pytest.raises(ChannelConfigError, match="apprise.yaml: an Apprise YAML config needs"):
        load_channels([], config_path=empty)
    result = _mark(["mark", "--", "", "", ""])
    assert result.exit_code == 2 and result.stderr.startswith("error: unknown state ''")


def test_a_billion_laughs_roadmap_is_refused_quickly_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_billion_laughs("slug: *a9\n"), encoding="utf-8")
    started = time.perf_counter()
    with _peak_memory() as memory, pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    assert time.perf_counter() - started < 5
    assert memory["peak"] < 50 * 2**20
    _check_roadmap_error(info.value, path)
    assert "aliases" in str(info.value) and str(info.value).startswith(f"{path}: line 2, column ")


def test_a_billion_laughs_apprise_config_is_refused_quickly_in_bounded_memory():
    started = time.perf_counter()
    with _peak_memory() as memory, pytest.raises(ChannelConfigError) as info:
        parse_apprise_yaml(_billion_laughs("tag: *a9\nurls:\n  - 'json://h.example.org/x'\n"), "apprise.yaml")
    assert time.perf_counter() - started < 5
    assert memory["peak"] < 50 * 2**20
    assert str(info.value).startswith("apprise.yaml: ") and "aliases" in str(info.value)


def test_deep_nesting_is_refused_clearly(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("slug: " + "[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    _check_roadmap_error(info.value, path)
    assert "nested deeper than" in str(info.value)
    with pytest.raises(ChannelConfigError, match="nested deeper than"):
        parse_apprise_yaml("urls: " + "[" * 100_000 + "]" * 100_000, "apprise.yaml")


def _write_big(path: Path, head: bytes, chunk: bytes, size: int) -> None:
    with path.open("wb") as out:
        out.write(head)
        written = len(head)
        while written < size:
            out.write(chunk)
            written += len(chunk)


@pytest.mark.parametrize(
    ("head", "chunk"),
    [
        (SEED_ROADMAP.read_bytes(), b"# " + b"x" * 1021 + b"\n"),
        (SEED_ROADMAP.read_bytes() + b"\nextra:\n", b"  - \xd8\xa7\xd9\x84\xd8\xac\xd8\xb2\xd8\xa7\xd8\xa6\xd8\xb1 Algeria\n" * 32),
    ],
    ids=["huge-comment", "huge-list"],
)
def test_a_10_mb_roadmap_file_is_refused_without_reading_it(tmp_path, head, chunk):
    path = tmp_path / "huge.yaml"
    _write_big(path, head, chunk, 10 * 2**20)
    size = path.stat().st_size
    started = time.perf_counter()
    with _peak_memory() as memory, pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    assert time.perf_counter() - started < 1
    assert memory["peak"] < 5 * 2**20
    _check_roadmap_error(info.value, path)
    assert f"larger than {MAX_FILE_BYTES} bytes" in str(info.value) and info.value.value == size


def test_a_10_mb_apprise_config_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "apprise.yaml"
    _write_big(path, b"urls:\n", b"  - 'outbox://archive'\n" * 64, 10 * 2**20)
    with _peak_memory() as memory, pytest.raises(ChannelConfigError) as info:
        load_channels([], config_path=path)
    assert memory["peak"] < 5 * 2**20
    assert str(info.value).startswith(f"{path}: ") and "larger than" in str(info.value)


@settings(max_examples=15, deadline=None, suppress_health_check=_FIXTURES_OK)
@given(name=arabic_latin(), title=arabic_latin(max_words=12), office=arabic_latin())
@example(name="Jordan \u0627\u0644\u0623\u0631\u062f\u0646", title="Invitations \u0627\u0644\u062f\u0639\u0648\u0627\u062a (NV 2024/051)", office="IOM \u0645\u0643\u062a\u0628 Amman")
def test_arabic_and_latin_names_round_trip_through_the_database(seeded, tmp_path, name, title, office):
    CASES[f"arabic_latin[{_backend(seeded)}]"] += 1
    data = copy.deepcopy(SEED_DATA)
    state = data["member_states"][0]
    state.update(name=name, name_ar=title)
    state["office"]["name"] = office
    milestone = data["milestones"][2]
    milestone.update(title=title, title_ar=name)
    path = tmp_path / "mixed.yaml"
    path.write_text(_dump(data), encoding="utf-8")
    spec = load_roadmap_file(path)
    assert (spec.member_states[0].name, spec.member_states[0].name_ar, spec.milestones[2].title) == (name, title, title)
    sync_roadmap_file(path)
    from models.db import get_engine

    with Session(get_engine(seeded)) as session:
        row = session.get(MemberState, state["code"])
        assert (row.name, row.name_ar, row.office_name) == (name, title, office)
        key_row = session.exec(select(Milestone).where(Milestone.key == milestone["key"])).one()
        assert (key_row.title, key_row.title_ar) == (title, name)
        assert session.exec(select(Roadmap)).one().slug == SEED_SPEC.slug


def test_a_2001_character_note_is_refused_and_2000_accepted(seeded):
    from models.db import session_scope
    from models.status import StatusError, record_status

    before = _snapshot(seeded)
    with pytest.raises(StatusError, match="note is 2001 characters long: at most 2000"):
        with session_scope() as session:
            record_status(session, milestone="invitations", member_state="JO", state="done", note="\u0645" * 2001)
    assert _snapshot(seeded) == before
    note = ("NV 2024/051 \u0645\u0630\u0643\u0631\u0629 " * 200)[:2000]
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="JO", state="done", note=note)
    assert _status_row(seeded, "invitations", "JO").note == note


def test_a_very_long_note_in_a_roadmap_file_is_refused_clearly(tmp_path):
    data = copy.deepcopy(SEED_DATA)
    data["milestones"][1]["note"] = "\u0645 note " * 20_000
    path = tmp_path / "long-note.yaml"
    path.write_text(_dump(data), encoding="utf-8")
    with pytest.raises(RoadmapFileError) as info:
        load_roadmap_file(path)
    _check_roadmap_error(info.value, path)
    assert info.value.field == "milestones[1].note" and "at most 2000 characters" in str(info.value)


def _roadmap(args: list[str], database_url: str, tmp_path: Path, **env_vars: str):
    """Run the ``roadmap`` console entry point (``flows.cli.main``) in a child process."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ROADMAP_DATABASE_URL": database_url, **env_vars}
    code = f"import sys; from flows.cli import main; sys.argv = ['roadmap', *{args!r}]; main()"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///{tmp}/no/such/folder/x.db",
     "error: ROADMAP_DATABASE_URL=sqlite:///{tmp}/no/such/folder/x.db: cannot use the database: unable to open database file"),
    ("postgresql+psycopg://focal:s3cret@127.0.0.1:1/test",
     "error: ROADMAP_DATABASE_URL=postgresql+psycopg://focal:***@127.0.0.1:1/test: cannot use the database: connection failed:"),
    ("postgres://127.0.0.1/test",
     "error: ROADMAP_DATABASE_URL=postgres://127.0.0.1/test: no database driver for it (NoSuchModuleError: "),
    ("not a url", "error: ROADMAP_DATABASE_URL is not a database URL (e.g. sqlite:///roadmap.db or "),
], ids=["sqlite-no-folder", "postgresql-closed-port", "no-dialect", "not-a-url"])
def test_an_unusable_database_is_one_error_line_without_the_password(tmp_path, url, expected):
    """Found by a bad-input review: every command printed a long traceback for these."""
    url, expected = url.format(tmp=tmp_path), expected.format(tmp=tmp_path)
    for args in (["status"], ["sync", str(SEED_ROADMAP.resolve())]):
        done = _roadmap(args, url, tmp_path)
        assert done.returncode == 2, done.stderr
        lines = error_lines(done.stderr)
        if args == ["status"] and url.startswith("sqlite"):  # a command that reads makes no database file
            assert lines == [f"error: no database file at ROADMAP_DATABASE_URL={url}: load one first with `roadmap "
                             "sync roadmaps/` (or set ROADMAP_DATABASE_URL to the database that has them)"]
            continue
        assert len(lines) == 1 and lines[0].startswith(expected), done.stderr
        assert "s3cret" not in done.stderr + done.stdout


def test_a_database_upgraded_by_a_newer_release_is_one_error_line_and_left_as_it_is(seeded, tmp_path):
    """Found by a review of the upgrade path: a database at a schema revision this release does
    not know (a coordinator rolling back) printed Alembic's "Can't locate revision" in a
    330-line traceback."""
    from sqlalchemy import text

    from models.db import get_engine
    from models.migrate import current_revision, head_revision

    with get_engine(seeded).begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    for args in (["status"], ["sync", str(SEED_ROADMAP.resolve())]):
        done = _roadmap(args, seeded, tmp_path)
        assert done.returncode == 2, done.stderr
        assert error_lines(done.stderr)[0].endswith(
            f": the database is at schema revision 0999, which this release of roadmap-tracker does not know (it "
            f"knows up to {head_revision()}): a newer release upgraded it; run that release, or a copy of the "
            "database from before the upgrade")
        assert len(error_lines(done.stderr)) == 1
    assert current_revision(seeded) == "0999"


def test_a_sync_outside_a_terminal_writes_its_report_and_nothing_on_stderr(tmp_path):
    """Found by a review of the docs: the progress bar, drawn only on a terminal, left two blank
    lines on stderr elsewhere (a cron job's mail, a log)."""
    done = _roadmap(["sync", str(SEED_ROADMAP)], f"sqlite:///{tmp_path}/r.db", tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == ("gcm-arab-2024: created 1 roadmap, 16 member_state, 6 milestone, 96 status, "
                           "11 agenda_session; updated nothing\n")


@pytest.mark.parametrize("lease", ["abc", "-5", "inf", "nan"])
def test_a_bad_claim_lease_setting_is_one_error_line(tmp_path, lease):
    done = _roadmap(["status"], f"sqlite:///{tmp_path}/r.db", tmp_path, ROADMAP_CLAIM_LEASE_S=lease)
    assert done.returncode == 2, done.stderr
    assert error_lines(done.stderr) == [
        f"error: ROADMAP_CLAIM_LEASE_S={lease!r}: expected a number of seconds, 0 or more (default 600)"]


def test_undecodable_bytes_on_the_command_line_are_one_error_line(seeded):
    """A Latin-1 terminal's bytes reach Python as surrogates; they were a UnicodeEncodeError."""
    before = _snapshot(seeded)
    for args, field in ((["mark", "invitations", "JO", "done", "--note", "r\udce9\udce7u"], "note 'r\\udce9\\udce7u'"),
                        (["mark", "invit\udce9", "JO", "done"], "milestone 'invit\\udce9'")):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"error: {field} is not valid text: it holds bytes that are not UTF-8" in result.stderr
    assert _snapshot(seeded) == before


def test_an_unreachable_prefect_server_is_one_error_line(seeded, tmp_path):
    """Found by a bad-input review: ``check`` and ``automations apply`` printed Prefect's long
    traceback when ``PREFECT_API_URL`` named a server that was not running, then echoed its
    password. Nothing is sent."""
    api = "http://focal:s3cret@127.0.0.1:1/api"  # a closed port on loopback
    for args in (["check", "--as-of", "2024-06-05T09:00:00+02:00"],
                 ["automations", "apply", "--url", "json://127.0.0.1:9/coordinators"]):
        done = _roadmap(args, seeded, tmp_path, PREFECT_API_URL=api, ROADMAP_OUTBOX_DIR=str(tmp_path / "outbox"))
        assert done.returncode == 2, done.stderr
        assert error_lines(done.stderr) == [
            "error: cannot reach the Prefect server at PREFECT_API_URL=http://focal:***@127.0.0.1:1/api: ConnectError: "
            "[Errno 111] Connection refused (start it with `prefect server start`, or unset PREFECT_API_URL to run "
            "on a temporary one)"], args
    assert not (tmp_path / "outbox").exists()
    done = _roadmap(["serve"], seeded, tmp_path, PREFECT_API_URL=api)  # it cannot run on a temporary server
    assert done.returncode == 2, done.stderr
    assert error_lines(done.stderr) == [
        "error: cannot reach the Prefect server at PREFECT_API_URL=http://focal:***@127.0.0.1:1/api: ConnectError: "
        "All connection attempts failed (start it with `prefect server start`)"]


@contextmanager
def _web_server(handler):
    """A web server on 127.0.0.1 answering with ``handler`` (an ``http.server`` handler class), in
    a thread; yields its port."""
    import threading

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        yield web.server_port
    finally:
        web.shutdown()


def test_a_prefect_url_without_its_api_path_is_one_error_line(seeded, tmp_path):
    """Found by a fault review: ``PREFECT_API_URL`` without its ``/api`` (or naming any other web
    server) was a 226-line traceback ending in "Failed to reach API"."""
    with _web_server(http.server.SimpleHTTPRequestHandler) as port:  # 404s
        api = f"http://focal:s3cret@127.0.0.1:{port}"
        done = _roadmap(["check", "--as-of", "2024-06-05T09:00:00+02:00"], seeded, tmp_path, PREFECT_API_URL=api,
                        ROADMAP_OUTBOX_DIR=str(tmp_path / "outbox"))
    assert done.returncode == 2, done.stderr
    assert error_lines(done.stderr) == [
        f"error: PREFECT_API_URL=http://focal:***@127.0.0.1:{port} is not a Prefect server's API: it "
        "answered 404 Not Found (the API's URL ends in /api, e.g. http://127.0.0.1:4200/api)"]
    assert not (tmp_path / "outbox").exists()


class _Refusing(http.server.BaseHTTPRequestHandler):
    """Answers 403 to every request, as a proxy in front of a Prefect server may."""

    def do_GET(self):
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("handler", "answer"), [
    ("SimpleHTTPRequestHandler", "is not a Prefect server's API: it answered 404 Not Found"),
    ("refusing", "answered 403 Forbidden"),
], ids=["404-under-api", "403"])
def test_a_prefect_api_url_that_answers_an_error_says_what_it_answered(seeded, tmp_path, handler, answer):
    """Found by a review: a URL already ending in /api got the hint to add /api, and a server that
    refused (403) or was unavailable was called "not a Prefect server's API"."""
    chosen = _Refusing if handler == "refusing" else http.server.SimpleHTTPRequestHandler
    with _web_server(chosen) as port:
        api = f"http://127.0.0.1:{port}/api"
        done = _roadmap(["check"], seeded, tmp_path, PREFECT_API_URL=api, ROADMAP_OUTBOX_DIR=str(tmp_path / "outbox"))
    assert done.returncode == 2, done.stderr
    start = ("error: PREFECT_API_URL" if handler != "refusing" else "error: the Prefect server at PREFECT_API_URL")
    assert error_lines(done.stderr) == [f"{start}=http://127.0.0.1:{port}/api {answer}"]


def test_a_file_that_is_not_a_database_is_one_error_line(tmp_path):
    """Found by a fault review: ``ROADMAP_DATABASE_URL`` naming a text file was a 250-line
    traceback ("file is not a database", SQLAlchemy's ``DatabaseError``); the file is left as it was."""
    notes = tmp_path / "notes.db"
    notes.write_text("minutes of the briefing\n", encoding="utf-8")
    for args in (["status"], ["mark", "invitations", "JO", "done"], ["sync", str(SEED_ROADMAP.resolve())]):
        done = _roadmap(args, f"sqlite:///{notes}", tmp_path)
        assert done.returncode == 2, done.stderr
        assert error_lines(done.stderr) == [
            f"error: ROADMAP_DATABASE_URL=sqlite:///{notes}: cannot use the database: file is not a database"], args
    assert notes.read_text(encoding="utf-8") == "minutes of the briefing\n"


@pytest.mark.parametrize(("variables", "expected"), [
    ({"PREFECT_API_URL": "http://focal:s3cret@[::1:4200/api"},
     ["error: PREFECT_API_URL=http://focal:***@[::1:4200/api is not a URL (Invalid IPv6 URL), e.g. "
      "http://127.0.0.1:4200/api"]),
    ({"PREFECT_API_URL": "http://127.0.0.1:42OO/api"},
     ["error: PREFECT_API_URL=http://127.0.0.1:42OO/api is not a URL (Port could not be cast to integer value as "
      "'42OO'), e.g. http://127.0.0.1:4200/api"]),
    # urllib ends the user information at a '/', '#' or '?' of the password, and quoted its start.
    ({"PREFECT_API_URL": "http://focal:s3/cret@127.0.0.1:1/api"},
     ["error: PREFECT_API_URL=http://focal:***@127.0.0.1:1/api is not a URL (write a '/', '#' or '?' of a password "
      "as %2F, %23, %3F), e.g. http://127.0.0.1:4200/api"]),
    # Prefect prints its own lines before ours when it refuses a setting while it is imported.
    ({"PREFECT_API_REQUEST_TIMEOUT": "soon", "PREFECT_SERVER_API_HOST": "soon"},
     ["error: Prefect refuses its setting PREFECT_API_REQUEST_TIMEOUT=soon: Input should be a valid number, "
      "unable to parse string as a number"]),
], ids=["unclosed-ipv6-bracket", "port-not-a-number", "slash-in-the-password", "prefect-refuses-a-setting"])
def test_a_malformed_prefect_setting_is_one_error_line(seeded, tmp_path, variables, expected):
    """Found by bad-input reviews: a malformed ``PREFECT_API_URL`` was a 60-line traceback, then
    echoed a password holding a '/'; of two variables holding a refused value, both were named."""
    done = _roadmap(["check", "--as-of", "2024-06-05T09:00:00+02:00"], seeded, tmp_path,
                    ROADMAP_OUTBOX_DIR=str(tmp_path / "outbox"), **variables)
    assert done.returncode == 2, done.stderr
    assert [line for line in error_lines(done.stderr) if line.startswith("error:")] == expected
    assert "Traceback" not in done.stderr and "s3" not in done.stderr and "cret" not in done.stderr
    assert not (tmp_path / "outbox").exists()


@pytest.mark.parametrize(("url", "shown"), [
    ("http://focal:s3cret@127.0.0.1:4200/api", "http://focal:***@127.0.0.1:4200/api"),
    ("http://focal:s3/cret@127.0.0.1:4200/api", "http://focal:***@127.0.0.1:4200/api"),
    ("http://focal:s3#cret@127.0.0.1:4200/api", "http://focal:***@127.0.0.1:4200/api"),
    ("focal:s3cret@127.0.0.1:4200", "focal:***@127.0.0.1:4200"),
    ("http://s3cret@127.0.0.1:4200/api", "http://***@127.0.0.1:4200/api"),
    ("http://focal:s3cret@127.0.0.1:4200/api?next=a@b", "http://focal:***@127.0.0.1:4200/api?next=a@b"),
    ("http://127.0.0.1:4200/api", "http://127.0.0.1:4200/api"),
    ("http://127.0.0.1:4200/api/@x", "http://127.0.0.1:***@x"),  # shows too little, never a password
])
def test_a_prefect_api_url_is_shown_without_its_password(url, shown):
    """Found by bad-input reviews: a password holding '/', '#' or '?', or a URL without
    ``http://``, was shown in full."""
    from flows.cli import _without_password

    assert _without_password(url) == shown


def test_an_output_path_that_cannot_be_written_is_one_error_line(seeded, tmp_path):
    """Found by a new user's walkthrough: ``calendar --out`` and ``report --out`` under a file
    printed a traceback."""
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    cases = {
        ("calendar", "--out", "afile/x.ics"):
            "error: --out afile/x.ics: cannot write the calendar there: a file stands where a folder must be, on that path",
        ("report", "--out", "afile/sub"):
            "error: --out afile/sub: cannot write the report there: a file stands where a folder must be, on that path",
        ("calendar", "--out", "."): "error: --out . is a folder: give the calendar's file name (e.g. deadlines.ics)",
    }
    for args, expected in cases.items():
        done = _roadmap(list(args), seeded, tmp_path)
        assert done.returncode == 2, done.stderr
        assert error_lines(done.stderr) == [expected], args
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]  # no partial file left
    done = _roadmap(["calendar", "--member-state", "JO", "--out", "feeds/jo.ics"], seeded, tmp_path)
    assert (done.returncode, done.stdout) == (0, "wrote feeds/jo.ics\n"), done.stderr
    assert sorted(p.name for p in (tmp_path / "feeds").iterdir()) == ["jo.ics"]
    # Written in place: through a link, keeping an existing file's mode (found by a review: a
    # rename replaced the link, /dev/stdout included, and the mode).
    (tmp_path / "feeds" / "jo.ics").chmod(0o600)
    (tmp_path / "link.ics").symlink_to(tmp_path / "feeds" / "jo.ics")
    done = _roadmap(["calendar", "--member-state", "TN", "--out", "link.ics"], seeded, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "link.ics").is_symlink()
    assert b"gcm-arab-2024.invitations.tn@roadmap-tracker" in (tmp_path / "feeds" / "jo.ics").read_bytes()
    assert (tmp_path / "feeds" / "jo.ics").stat().st_mode & 0o777 == 0o600


def test_serve_without_a_prefect_server_is_one_error_line(database_url, tmp_path):
    """Found by a new user's walkthrough: without ``PREFECT_API_URL`` (nor a profile that sets
    it), ``roadmap serve`` served the schedule to a temporary server no dashboard showed."""
    done = _roadmap(["serve"], database_url, tmp_path, PREFECT_API_URL="", PREFECT_HOME=str(tmp_path / "prefect-home"))
    assert done.returncode == 2, done.stderr
    assert error_lines(done.stderr) == [
        "error: roadmap serve needs a running Prefect server: start one with `prefect server start`, then set "
        "PREFECT_API_URL=http://127.0.0.1:4200/api"]


def test_a_malformed_prefect_api_url_does_not_stop_the_commands_that_do_not_use_prefect(database_url, tmp_path):
    """Found by a bad-input review: ``sync`` and ``--help`` refused to run."""
    bad = {"PREFECT_API_URL": "http://127.0.0.1:42OO/api"}
    done = _roadmap(["sync", str(SEED_ROADMAP.resolve())], database_url, tmp_path, **bad)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "gcm-arab-2024: created 1 roadmap, 16 member_state, 6 milestone, 96 status, 11 agenda_session; updated nothing\n"
    assert _roadmap(["--help"], database_url, tmp_path, **bad).returncode == 0
