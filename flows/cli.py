"""The ``roadmap`` command line (Typer).

Every command reads ``ROADMAP_DATABASE_URL`` (default ``sqlite:///roadmap.db``); reminders go
through the Apprise config in ``ROADMAP_APPRISE_CONFIG`` or, by default, the local outbox
(``ROADMAP_OUTBOX_DIR``, default ``./outbox``). Errors print one line naming what is wrong and
exit with status 2; nothing is half written.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import typer
from rich.console import Console

from models.roadmap_file import RoadmapFileError
from models.status import StatusError

DEFAULT_ROADMAP = Path("roadmaps/gcm-arab-2024.yaml")
#: The seed document's date (27 May 2024), 09:00 in Cairo, where the coordinators sit.
DEMO_AS_OF = "2024-05-27T09:00:00+03:00"
DEMO_DATABASE = "roadmap-demo.db"

app = typer.Typer(help="roadmap-tracker: the preparation roadmap of an intergovernmental conference.", no_args_is_help=True)


#: Help of every command's ``--color/--no-color`` (found by a review of the docs: two of the three had none).
COLOR_HELP = "Colour in the table (--no-color for plain text)."


def _console(color: bool) -> Console:
    """Console for tables: the terminal's width, or 160 columns when the output is a file or pipe."""
    probe = Console()
    return Console(no_color=not color, highlight=False, width=None if probe.is_terminal else 160)


def _fail(message: str) -> None:
    """Print one unwrapped line "error: ..." on stderr and exit with status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _require_roadmaps(retired_too: bool = False) -> list[str]:
    """The slugs of the database's active roadmaps (``retired_too``: and retired ones), sorted
    (``list[str]``); fail (exit 2) with a hint when there is none: most often
    ``ROADMAP_DATABASE_URL`` names another database than intended (``sqlite:///roadmap.db`` is
    relative to the working folder) or ``roadmap sync`` has not run yet."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    from sqlmodel import select

    from models.db import database_url, session_scope
    from models.tables import Roadmap

    hint = "load one first with `roadmap sync roadmaps/` (or set ROADMAP_DATABASE_URL to the database that has them)"
    try:
        url = make_url(database_url())
    except ArgumentError:
        url = None  # the session says so (flows.cli.database_error)
    if url is not None and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and url.query.get("uri") not in ("true", "1") and not Path(url.database).exists():
        # Found by a bad-input review: a mistyped file name made an empty database file there. A
        # SQLite URI (?uri=true: file:...?mode=ro) is left to SQLite.
        where = "" if Path(url.database).is_absolute() else f" (in the working folder {Path.cwd()})"
        _fail(f"no database file at ROADMAP_DATABASE_URL={url}{where}: {hint}")
    with session_scope() as session:
        roadmaps = session.exec(select(Roadmap.slug, Roadmap.active).order_by(Roadmap.slug)).all()
    slugs = [slug for slug, active in roadmaps if active or retired_too]
    if slugs:
        return slugs
    shown = url.render_as_string(hide_password=True) if url is not None else database_url()
    if roadmaps:
        _fail(f"every roadmap in the database ROADMAP_DATABASE_URL={shown} is retired "
              f"({', '.join(slug for slug, _ in roadmaps)}): `roadmap sync` a roadmap file to check one")
    _fail(f"no roadmap in the database ROADMAP_DATABASE_URL={shown}: {hint}")


def _check_prefect_api_url() -> None:
    """Fail (exit 2) when ``PREFECT_API_URL`` is set and is no URL (an unclosed IPv6 bracket, a
    port that is no number), its password hidden; called by the commands that import Prefect,
    before they do: Prefect's own check prints its error before ours (found by a bad-input
    review: it was a 60-line traceback)."""
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        return
    try:
        urlsplit(api_url).port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        shown = _without_password(api_url)
        try:  # the reason is told of the URL as shown: urllib's may quote a part of the password
            urlsplit(shown).port  # noqa: B018
            reason = "write a '/', '#' or '?' of a password as %2F, %23, %3F"
        except ValueError as exc:
            reason = str(exc)
        _fail(f"PREFECT_API_URL={shown} is not a URL ({reason}), e.g. http://127.0.0.1:4200/api")


def _progress_bar(description: str):
    """A Rich progress bar on stderr (drawn only on a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    # disable: elsewhere Rich printed the bar's blank lines (found by a review of the docs).
    return Progress(
        TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )


def _roadmap_files(paths: list[Path]) -> list[Path]:
    """The roadmap files ``paths`` name: files as given, and each folder's ``*.yaml``/``*.yml``."""
    from models.roadmap_file import roadmap_files_in

    files: list[Path] = []
    for path in paths:
        files += roadmap_files_in(path) if path.is_dir() else [path]
    return files


@app.command()
def sync(
    files: list[Path] = typer.Argument(None, help="Roadmap YAML files or folders of them (default: the seed roadmap)."),
) -> None:
    """Load roadmap files into the database (idempotent; keeps every recorded status).

    Every file is validated first; then all are written in one transaction: all or nothing.
    """
    from models.db import session_scope
    from models.roadmap_file import load_roadmap_file
    from models.sync import check_member_states_agree, upsert_roadmap

    paths = _roadmap_files(files or [DEFAULT_ROADMAP])
    if not paths:
        _fail(f"no roadmap file (*.yaml, *.yml) in {', '.join(map(str, files))}")
    with _progress_bar("validating") as bar:
        task = bar.add_task("validating", total=len(paths))
        specs = []
        for path in paths:
            try:
                specs.append((path, load_roadmap_file(path)))
            except RoadmapFileError as exc:
                _fail(str(exc))
            bar.advance(task)
    slugs = [spec.slug for _, spec in specs]
    duplicates = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicates:
        _fail(f"several files have the slug {duplicates[0]!r}: " + ", ".join(str(p) for p, s in specs if s.slug == duplicates[0]))
    try:
        check_member_states_agree(specs)
    except RoadmapFileError as exc:
        _fail(str(exc))
    def load() -> list:
        reports = []
        with _progress_bar("loading") as bar, session_scope() as session:
            task = bar.add_task("loading", total=len(specs))
            for path, spec in specs:
                try:
                    # A retired roadmap comes back when its file is named, not when its folder is.
                    revive = not files or path in files
                    reports.append(upsert_roadmap(session, spec, source_file=str(path), revive=revive))
                except RoadmapFileError as exc:  # checked against the database (a slug taken): all rolled back
                    _fail(str(exc))
                bar.advance(task)
        return reports

    from sqlalchemy.exc import IntegrityError

    # Syncs run at once write the same new rows: the one that commits second is refused by a
    # unique key, all rolled back, and loads again over what the first wrote (found by a review
    # of things happening at once: a 300-line traceback).
    try:
        reports = load()
    except IntegrityError:
        try:
            reports = load()
        except IntegrityError as exc:
            _fail(f"a unique key refused the sync twice; nothing was written (another sync writing the same rows "
                  f"at the same time? run it again): {str(exc.orig or exc).strip().splitlines()[0]}")
    for report in reports:
        created = ", ".join(f"{n} {t}" for t, n in report.created.items()) or "nothing"
        updated = ", ".join(f"{n} {t}" for t, n in report.updated.items()) or "nothing"
        removed = "".join(f"; removed {n} {t}" for t, n in report.removed.items())
        typer.echo(f"{report.roadmap}: created {created}; updated {updated}{removed}")
        for warning in report.warnings:
            typer.echo(f"warning: {report.roadmap}: {warning}", err=True)


@app.command()
def retire(
    slug: str = typer.Argument(..., help="Slug of the roadmap (as `roadmap check` titles it, normalised: a-z, 0-9, -)."),
) -> None:
    """Retire a roadmap: no more checks, reminders, dashboards, calendars or marks for it.

    Its statuses, notes, history and reminder log are kept; `roadmap sync` of its file brings
    it back. For a conference that was held, or a file whose slug was changed.
    """
    from models.db import session_scope
    from models.roadmap_file import normalise_slug
    from models.sync import BRING_BACK, RetireError, retire_roadmap

    _require_roadmaps(retired_too=True)  # found by a review: a mistyped SQLite file was made, empty
    slug = normalise_slug(slug) or slug  # as the file's slug is read: "GCM-ARAB-2024" is gcm-arab-2024
    try:
        with session_scope() as session:
            was_active = retire_roadmap(session, slug)
    except RetireError as exc:
        _fail(str(exc))
    typer.echo(f"{slug}: {'retired' if was_active else 'already retired'}; its statuses and history are kept "
               f"({BRING_BACK})")


@app.command()
def check(
    as_of: Optional[str] = typer.Option(None, "--as-of", help="ISO-8601 instant with offset; default now."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    color: bool = typer.Option(True, "--color/--no-color", help=COLOR_HELP),
) -> None:
    """Run the nightly status check now (classify, publish artifacts, send reminders)."""
    _check_prefect_api_url()
    from flows.nightly import nightly_status_check, resolve_as_of

    try:
        resolve_as_of(as_of)
    except ValueError as exc:
        _fail(f"--as-of: {exc}")
    from flows.publishing import ready_folders

    # Checked here too, so that a folder the check cannot publish into is one error line and no
    # failed flow run (which would fire the coordinators' "nightly check failed" automation).
    ready_folders(_require_roadmaps())
    _require_channels()  # the same: with no usable channel the run would send nothing and fail at its end
    from flows.progress import listening

    with _progress_bar("checking") as bar:
        task = bar.add_task("checking", total=None)
        with listening(lambda done, total: bar.update(task, completed=done, total=total)):
            result = nightly_status_check(as_of=as_of)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    from flows.terminal import print_check

    print_check(result, _console(color))


@app.command()
def mark(
    milestone: str = typer.Argument(..., help="Milestone key, e.g. invitations."),
    member_state: str = typer.Argument(..., help="ISO alpha-2 code, e.g. JO."),
    state: str = typer.Argument(..., help="pending, in_progress, done or waived."),
    note: Optional[str] = typer.Option(None, "--note", help="e.g. the note verbale number."),
    roadmap: Optional[str] = typer.Option(None, "--roadmap", help="Roadmap slug, when several have the milestone."),
    at: Optional[str] = typer.Option(None, "--at", help="When it happened, ISO-8601; no offset = the owner's zone."),
    by: str = typer.Option(os.environ.get("USER", "cli"), "--by", help="Who records the change."),
) -> None:
    """Record where a member state stands on a milestone."""
    from models.db import session_scope
    from models.status import record_status

    _require_roadmaps()
    try:
        with session_scope() as session:
            row = record_status(
                session, milestone=milestone, member_state=member_state, state=state, note=note,
                changed_by=f"cli:{by}", roadmap=roadmap, at=at,
            )
            typer.echo(f"{milestone} {row.member_state_code}: {row.state}" + (f" ({row.note})" if row.note else ""))
    except StatusError as exc:
        _fail(str(exc))


@app.command("import-statuses")
def import_statuses_command(
    file: Path = typer.Argument(..., help="CSV with columns milestone, member_state, state[, note, roadmap, at]."),
    by: str = typer.Option(os.environ.get("USER", "cli"), "--by", help="Who records the changes."),
) -> None:
    """Record many statuses from a CSV file: all rows or none (the first bad row is named by line)."""
    from models.db import session_scope
    from models.status_import import StatusImportError, import_statuses

    _require_roadmaps()
    try:
        with session_scope() as session:
            count = import_statuses(session, file, changed_by=f"csv:{by}")
    except StatusImportError as exc:
        _fail(str(exc))
    typer.echo(f"imported {count} {'status' if count == 1 else 'statuses'} from {file}")


@app.command()
def status(
    as_of: Optional[str] = typer.Option(None, "--as-of", help="ISO-8601 instant with offset; default now."),
    color: bool = typer.Option(True, "--color/--no-color", help=COLOR_HELP),
) -> None:
    """Print the matrix (member state x milestone) without sending anything."""
    _check_prefect_api_url()
    from zoneinfo import ZoneInfo

    from flows.nightly import resolve_as_of
    from flows.terminal import print_matrix
    from models.db import session_scope
    from models.status import iter_status_views
    from models.tables import Roadmap
    from sqlmodel import select

    try:
        moment = resolve_as_of(as_of)
    except ValueError as exc:
        _fail(f"--as-of: {exc}")
    _require_roadmaps()
    console = _console(color)
    with session_scope() as session:
        for roadmap in session.exec(select(Roadmap).where(Roadmap.active).order_by(Roadmap.slug)).all():
            # Titled in the coordinators' zone, as the report is (found by a coordinator's
            # walkthrough: the table said UTC, the report Cairo time).
            local = moment.astimezone(ZoneInfo(roadmap.coordinator_timezone))
            print_matrix(roadmap.title, list(iter_status_views(session, roadmap, moment)), local, console)


@app.command()
def serve() -> None:
    """Serve the four deployments to a Prefect server, the nightly check on its schedule.

    The four: the nightly check, record-status, the portfolio check and its per-group child.
    Start a server first (prefect server start) and set PREFECT_API_URL; see the README.
    """
    if not os.environ.get("PREFECT_API_URL"):
        # Found by a new user's walkthrough: without it, Prefect started a temporary server, which
        # the dashboard on port 4200 never shows and which ends with the command.
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():  # nor in the active Prefect profile
            _fail("roadmap serve needs a running Prefect server: start one with `prefect server start`, then set "
                  "PREFECT_API_URL=http://127.0.0.1:4200/api")
    _check_prefect_api_url()
    # Found by a new user's walkthrough: an exported ROADMAP_APPRISE_CONFIG naming a file not
    # made yet was served, and every scheduled check then failed.
    _require_channels()
    from flows.deployments import serve_all

    serve_all()


def _require_channels() -> None:
    """Stop with one ``error:`` line when the night's Apprise config (``ROADMAP_APPRISE_CONFIG``
    or ``ROADMAP_APPRISE_SECRET_BLOCK``) cannot be read or used (:func:`flows.nightly.night_channels`)."""
    from flows.nightly import night_channels
    from notifications.channels import ChannelConfigError

    try:
        night_channels()
    except (ChannelConfigError, ValueError) as exc:
        _fail(f"no reminder could be sent: {exc}")


@app.command()
def demo(
    database: Path = typer.Option(Path(DEMO_DATABASE), "--database", help="SQLite file made afresh for the demo."),
    color: bool = typer.Option(True, "--color/--no-color", help=COLOR_HELP),
) -> None:
    """A fresh database, the seed roadmap, a few statuses, the check as of 27 May 2024, a table.

    The reminders go to the local outbox (ROADMAP_OUTBOX_DIR, default ./outbox) whatever
    channels are configured: the demo's are for 2024, not for real missions. It runs on a
    temporary Prefect server, whatever PREFECT_API_URL says."""
    _check_prefect_api_url()
    for variable in ("ROADMAP_APPRISE_CONFIG", "ROADMAP_APPRISE_SECRET_BLOCK"):
        # Found by a new user's walkthrough: the demo sent its 2024 digests to the channels of an
        # exported production config, and said they were in the outbox.
        if os.environ.pop(variable, None):
            typer.echo(f"note: {variable} is ignored by the demo: its reminders go to the local outbox", err=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    os.environ["ROADMAP_DATABASE_URL"] = f"sqlite:///{database}"
    console = _console(color)
    from models.db import session_scope
    from models.status import record_status
    from models.sync import sync_roadmap_file

    # The working folder's seed file, else the checkout's (found by a review of the docs: run
    # elsewhere, the demo ended in a traceback).
    seed = DEFAULT_ROADMAP if DEFAULT_ROADMAP.exists() else Path(__file__).resolve().parent.parent / DEFAULT_ROADMAP
    try:
        report = sync_roadmap_file(seed)
    except RoadmapFileError as exc:
        _fail(str(exc))
    console.print(f"Loaded {seed}: {report.created.get('status', 0)} status rows into {database}")
    demo_statuses = [
        ("invitations", "JO", "done", "Note verbale 2024/051 received by the mission"),
        ("invitations", "TN", "done", "Note verbale 2024/047"),
        ("invitations", "MR", "in_progress", "Signed copy awaited from the League of Arab States"),
        ("nominations", "JO", "in_progress", "Two delegates proposed"),
    ]
    with session_scope() as session:
        for milestone, code, state, note in demo_statuses:
            record_status(session, milestone=milestone, member_state=code, state=state, note=note, changed_by="demo")
            console.print(f"Recorded {milestone} {code}: {state} ({note})")
    from flows.nightly import nightly_status_check
    from flows.terminal import print_check

    with _on_a_temporary_server():
        result = nightly_status_check(as_of=DEMO_AS_OF)
    print_check(result, console)
    from notifications.outbox import outbox_dir

    console.print(f"Reminders were written to {outbox_dir()}/ (one folder per recipient tag).")


@contextlib.contextmanager
def _on_a_temporary_server():
    """Inside, this process's flows run on a temporary Prefect server, whatever ``PREFECT_API_URL``
    Prefect's settings name (the environment, a ``.env`` or ``prefect.toml`` in the working
    folder, the active profile; read afresh, not from the settings context); said on stderr when
    they name one. Found by a review of the docs: the demo, run where the README exports
    ``PREFECT_API_URL``, replaced the real roadmap's dashboards on that server with its 2024
    ones, and its flow run counted as a night for the coordinators' automation. Prefect's
    ``temporary_settings`` restores the setting's default (none: a temporary server); a URL set
    only in the settings context (a test harness's) is kept."""
    from prefect.settings import PREFECT_API_URL, Settings, temporary_settings

    configured = Settings().api.url  # found by a review of this change: .env and prefect.toml were missed
    if not configured:
        yield
        return
    typer.echo(f"note: PREFECT_API_URL={_without_password(str(configured))} is ignored by the demo: it runs on a "
               "temporary Prefect server, so its 2024 dashboards leave that server's alone", err=True)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


@app.command()
def calendar(
    member_state: Optional[str] = typer.Option(None, "--member-state", help="ISO alpha-2 code; default all."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output .ics file; default stdout."),
    roadmap: Optional[str] = typer.Option(None, "--roadmap", help="Roadmap slug; default all."),
) -> None:
    """Write an RFC 5545 calendar of deadlines (with alarms) and the conference agenda."""
    from models.db import session_scope
    from flows.ics import IcsError, build_calendar

    _require_roadmaps()
    try:
        with session_scope() as session:
            data = build_calendar(session, member_state=member_state, roadmap=roadmap)
    except IcsError as exc:
        _fail(str(exc))
    if out is None:
        sys.stdout.buffer.write(data)
        return
    if out.is_dir():
        _fail(f"--out {out} is a folder: give the calendar's file name (e.g. {out / 'deadlines.ics'})")
    try:  # written in place (through a link, into a device such as /dev/stdout, keeping the file's mode)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    except OSError as exc:  # found by a new user's walkthrough: a traceback
        _fail(f"--out {out}: cannot write the calendar there: {_os_reason(exc)}")
    typer.echo(f"wrote {out}")


def _os_reason(exc: OSError) -> str:
    """The reason of a failed file operation, in words (no traceback)."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "a file stands where a folder must be, on that path"
    return exc.strerror or str(exc)


@app.command()
def report(
    out: Path = typer.Option(Path("reports"), "--out", help="Folder for <slug>/index.html and the timeline."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="ISO-8601 instant with offset; default now."),
) -> None:
    """Write a small static HTML page per roadmap: timeline, matrix (Arabic right-to-left), overdue list."""
    _check_prefect_api_url()
    from flows.nightly import resolve_as_of
    from flows.report import report_for_database

    try:
        moment = resolve_as_of(as_of)
    except ValueError as exc:
        _fail(f"--as-of: {exc}")
    _require_roadmaps()
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = report_for_database(out, moment)
    except OSError as exc:  # found by a new user's walkthrough: a traceback
        _fail(f"--out {out}: cannot write the report there: {_os_reason(exc)}")
    for path in written:
        typer.echo(f"wrote {path}")


automations_app = typer.Typer(help="Prefect automations that alert the coordinators.")
app.add_typer(automations_app, name="automations")


@automations_app.command("apply")
def automations_apply(
    url: Optional[str] = typer.Option(
        None, "--url", envvar="ROADMAP_COORDINATORS_APPRISE_URL", show_default=False,
        help="The coordinators' Apprise URL (or ROADMAP_COORDINATORS_APPRISE_URL).",
    ),
) -> None:
    """Create the automations (nightly check failed; no nightly check in 25 hours) on the Prefect
    server in PREFECT_API_URL, alerting the coordinators through Apprise."""
    _check_prefect_api_url()
    from flows.alerts import apply_automations

    if not url:
        _fail("give the coordinators' Apprise URL with --url or ROADMAP_COORDINATORS_APPRISE_URL")
    try:
        names = apply_automations(url)
    except ValueError as exc:
        _fail(str(exc))
    for name in names:
        typer.echo(f"automation ready: {name}")


def database_error(exc: BaseException) -> str | None:
    """The one-line message for an error that means the configured database cannot be used (its
    URL unparsable, its driver missing, the server or file unreachable, its schema newer than
    this release: :class:`models.migrate.UnknownRevisionError`), or None for any other
    error. Names ``ROADMAP_DATABASE_URL`` with its password hidden, and the driver's first line.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError

    from models.db import database_url
    from models.migrate import UnknownRevisionError

    url = database_url()
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return ("ROADMAP_DATABASE_URL is not a database URL "
                "(e.g. sqlite:///roadmap.db or postgresql+psycopg://user@127.0.0.1:5432/roadmap)")
    if isinstance(exc, NoSuchModuleError) or (isinstance(exc, ModuleNotFoundError) and _raised_in(exc, "create_engine")):
        return (f"ROADMAP_DATABASE_URL={shown}: no database driver for it ({type(exc).__name__}: {exc}); "
                "supported: sqlite:///FILE and postgresql+psycopg://...")
    if isinstance(exc, UnknownRevisionError):
        return f"ROADMAP_DATABASE_URL={shown}: {exc}"
    # DatabaseError itself, none of its subclasses: SQLite's "file is not a database" (found by a
    # fault review: a 250-line traceback); an IntegrityError is no fault of the URL.
    if isinstance(exc, OperationalError) or type(exc) is DatabaseError:
        first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
        return f"ROADMAP_DATABASE_URL={shown}: cannot use the database: {first}"
    return None


def prefect_server_error(exc: BaseException, serving: bool = False) -> str | None:
    """The one-line message for an error that means the Prefect server in ``PREFECT_API_URL``
    cannot be reached (refused, unknown host, timed out: an ``httpx.TransportError``, which
    only Prefect's client raises in this program, itself or as the cause of Prefect's
    "Failed to reach API" ``RuntimeError``), or None for any other error. ``serving``: the
    command is ``roadmap serve``, which cannot run on a temporary server. A server that answers
    an error (Prefect's "Failed to reach API" caused by an HTTP error status: a 404 for the URL
    without its ``/api``, found by a fault review) is said so too, by :func:`_answered_an_error`."""
    import httpx

    answered = _answered_an_error(exc)
    if answered is not None:
        return answered
    exc = next((e for e in _chain(exc) if isinstance(e, httpx.TransportError)), None)
    if exc is None:
        return None
    from prefect.settings import PREFECT_API_URL

    url = _without_password(PREFECT_API_URL.value() or "(unset)")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no reply"
    # roadmap serve needs the server itself (found by a review: it was told to unset the URL).
    other = "" if serving else ", or unset PREFECT_API_URL to run on a temporary one"
    return (f"cannot reach the Prefect server at PREFECT_API_URL={url}: {type(exc).__name__}: {reason} "
            f"(start it with `prefect server start`{other})")


def _chain(exc: BaseException | None):
    """``exc``, then what caused it (``__cause__``, else ``__context__``), and so on, each once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _answered_an_error(exc: BaseException) -> str | None:
    """The message for Prefect's "Failed to reach API" caused by an HTTP error status in
    ``exc``'s chain: a 404 or 405 is no Prefect API there; any other status is told as
    answered. None when the chain has no such error."""
    import httpx

    for exc in _chain(exc):
        cause = exc.__cause__
        if (isinstance(exc, RuntimeError) and str(exc).startswith("Failed to reach API")
                and isinstance(cause, httpx.HTTPStatusError)):
            from prefect.settings import PREFECT_API_URL

            value = PREFECT_API_URL.value() or "(unset)"
            url = _without_password(value)
            status = cause.response.status_code
            answer = f"{status} {cause.response.reason_phrase}".strip()
            # Only a 404 or 405 says there is no API there; a 403 or 503 (a proxy, a server
            # starting) is the server's answer (found by a review: all of them were "not an API").
            if status in (404, 405):
                hint = ("" if value.rstrip("/").endswith("/api")
                        else " (the API's URL ends in /api, e.g. http://127.0.0.1:4200/api)")
                return f"PREFECT_API_URL={url} is not a Prefect server's API: it answered {answer}{hint}"
            return f"the Prefect server at PREFECT_API_URL={url} answered {answer}"
    return None


def prefect_setting_error(exc: BaseException) -> str | None:
    """The one-line message for Prefect refusing one of its own settings (a pydantic
    ``ValidationError`` of one of its ``*Settings`` models, raised when ``prefect`` is first
    imported: ``PREFECT_API_REQUEST_TIMEOUT=abc``), or None for any other error. Names the
    ``PREFECT_*`` variable holding the refused value, the one named after the refused field
    when several hold it (else Prefect's own field path), and hides a URL's password. Found by
    a bad-input review: it was a 60-line traceback. Prefect prints its own account of the
    error on stderr before this line.
    """
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or not exc.title.endswith("Settings"):
        return None
    first = exc.errors()[0]
    refused = first.get("input")
    holding = [k for k, v in os.environ.items() if k.startswith("PREFECT_") and isinstance(refused, str) and v == refused]
    # Prefect's variable ends with the field's name (PREFECT_API_REQUEST_TIMEOUT: request_timeout).
    field = "_".join(str(part) for part in first.get("loc", ())).upper()
    variables = sorted(k for k in holding if field and k.endswith("_" + field)) or sorted(holding)
    if variables:
        where = ", ".join(f"{k}={_without_password(refused)}" for k in variables)
    else:
        where = f"{exc.title}." + ".".join(str(part) for part in first.get("loc", ()))
    return f"Prefect refuses its setting {where}: {first['msg']}"


def _without_password(url: str) -> str:
    """``url`` with its user information hidden but the user's name: ``http://user:***@host/api``,
    ``http://***@host/api`` for a token, ``user:***@host:4200`` without a scheme.

    The user information ends at the last ``@`` of the host part (``urllib``'s rule), or, when
    that part has none but the rest has, at the last ``@`` of the rest: ``urllib`` ends the host
    part at a ``/``, ``#`` or ``?`` of a password and so finds no password (found by a bad-input
    review). A URL with an ``@`` in its path and no password may so show too little, never a
    password.
    """
    scheme, separator, rest = url.partition("://")
    scheme, rest = (scheme + separator, rest) if separator else ("", url)
    if "@" not in rest:
        return url
    host_part = re.split(r"[/?#]", rest, maxsplit=1)[0]
    cut = host_part.rindex("@") if "@" in host_part else rest.rindex("@")
    userinfo, after = rest[:cut], rest[cut + 1:]
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{user}:***@{after}" if colon and not re.search(r"[/?#]", user) else f"{scheme}***@{after}"


def _raised_in(exc: BaseException, function: str) -> bool:
    """True when ``function`` (a name) is on ``exc``'s traceback."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False


def main() -> None:  # the ``roadmap`` console script
    """Run the command line; an unusable database (:func:`database_error`), an unreachable
    Prefect server (:func:`prefect_server_error`), a Prefect setting Prefect refuses
    (:func:`prefect_setting_error`, after Prefect's own lines) or a bad setting
    (:class:`models.db.SettingError`) is one ``error:`` line on stderr and exit status 2, as
    every other error, not a traceback."""
    from models.db import SettingError

    try:
        app()
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is the database's, the server's or a setting's
        message = (str(exc) if isinstance(exc, SettingError)
                   else database_error(exc) or prefect_server_error(exc, serving=sys.argv[1:2] == ["serve"])
                   or prefect_setting_error(exc))
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(2) from None
