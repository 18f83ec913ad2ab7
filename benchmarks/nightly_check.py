"""Benchmark of the nightly status check at portfolio scale (issue "Scale").

    python benchmarks/nightly_check.py --rows 100000 --db postgresql
    python benchmarks/nightly_check.py --rows 10000 --db sqlite --py-spy check.txt

One run:

1. generates a synthetic portfolio of ``--rows`` status rows (see ``synth_portfolio.py``) in a
   fresh SQLite file (temporary folder) or a fresh PostgreSQL database, schema from
   ``models.db.get_engine`` (Alembic);
2. starts a temporary Prefect server (the one Prefect starts itself when no ``PREFECT_API_URL``
   is set: ``SubprocessASGIServer``) in a temporary ``PREFECT_HOME``, on SQLite there (Prefect's
   default) or, with ``--prefect-db postgresql``, on a fresh PostgreSQL database (as
   ``docs/scaling.md`` deploys the server for scale), and a local HTTP sink that
   answers 200 to every Apprise ``json://`` channel (one per recipient tag, in a generated
   Apprise YAML config named by ``ROADMAP_APPRISE_CONFIG``);
3. with ``--prior-nights 2`` (default), runs the check at as-of minus two days, in its own
   child process (the "first night": every row changes classification, every due reminder is
   new, every dashboard is published), then at as-of minus one day (the "second night": every
   summary still changes once, as the first night's "newly overdue" lists empty); then runs the
   timed check at ``--as-of`` in a fresh child process (the steady night: only yesterday's
   changes, reminders of windows that started tonight, dashboards that changed). ``1`` runs the
   first night only before the timed check, ``0`` none. Each child warms up
   (imports, engine, one tiny flow) and times only the ``nightly_status_check`` call; it reports
   its own peak RSS (``VmHWM``) and counts the task runs of its flow run through the Prefect client.
   The check runs with ``publish=False`` (no timeline pictures or calendar files: about 0.3 s of
   matplotlib per roadmap, a report rather than the check) unless ``--publish`` is given;
4. measures the SQL floor: the best of 3 single streamed queries reading every active status row
   with its milestone and member state (the columns the check reads), fully fetched;
5. measures reminder delivery: ``flows.reminders.send_planned`` (claim, render, Apprise notify,
   mark sent) against a plain loop of ``Apprise.notify`` with the same rendered messages to the
   same tags and sink; best of 2 each;
6. prints a table, then as the last line:
   ``rows=N check_s=A floor_s=B check/floor=R1 delivery/apprise=R2 peak_rss_mb=M prefect_task_runs=T``
   (``peak_rss_mb`` and every RSS figure in MiB: the kernel's KiB / 1024).

``--py-spy FILE`` samples the timed child with py-spy (``--format raw``: collapsed stacks) and
prints the hottest functions within ``nightly_status_check``; ``--cprofile FILE`` dumps cProfile
stats of the timed call (main thread only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Measure this checkout's code, even where another one is installed in the environment (editable).
sys.path[:0] = [str(ROOT), str(HERE)]
DEFAULT_AS_OF = "2024-06-05T09:00:00+02:00"
POSTGRES_ADMIN_URL = os.environ.get("ROADMAP_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CHILD_MARK = "--child-run"
#: Names the process that serves the HTTP sink to a check's child (for its CPU figures).
SINK_PID_ENV = "ROADMAP_BENCH_SINK_PID"
#: Prefix of the PostgreSQL database a ``--prefect-db postgresql`` server keeps its state in (its
#: backends' command lines name it: :meth:`CpuClock.by_process_s` counts them apart).
PREFECT_DB_PREFIX = "rt_prefect_"


# --------------------------------------------------------------------------- helpers


def _proc_status_kb(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class CpuClock:
    """CPU seconds spent while it runs: by this process (all its threads), by the thread that
    made it, and by the whole machine (``/proc/stat``: every process, the database server's,
    the Prefect server's and the HTTP sink's included). ``stop()`` returns
    {"process": s, "this_thread": s, "machine": s, "others": machine - process, "others_by_role":
    {role: s}} (:meth:`by_process_s`; the rest of "others" is the machine's other services, its
    kernel threads and the processes that ended meanwhile), and what the thread that made it did
    when it was not running (:meth:`thread_sched`): "this_thread_runqueue_s", the seconds it was
    ready to run and waited for a core, and "this_thread_switches", {"voluntary": n (it blocked:
    I/O, a lock, the GIL), "involuntary": n (the kernel took its core)}."""

    def __init__(self, sink_pid: int | None = None) -> None:
        self.sink_pid = sink_pid
        self._process, self._thread, self._machine = time.process_time(), time.thread_time(), self.machine_busy_s()
        self._by_process = self.by_process_s(sink_pid)
        self._sched = self.thread_sched()

    @staticmethod
    def thread_sched() -> tuple[float, int, int] | None:
        """(seconds this thread waited on a run queue since it started, its voluntary and its
        involuntary context switches), from Linux's ``/proc/self/task/<tid>/schedstat`` (second
        field, nanoseconds) and ``status``; None where they cannot be read (then :meth:`stop`
        gives neither figure)."""
        folder = f"/proc/self/task/{threading.get_native_id()}"
        try:
            with open(f"{folder}/schedstat", encoding="ascii") as fh:
                waited_ns = int(fh.read().split()[1])
            with open(f"{folder}/status", encoding="ascii") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            return waited_ns / 1e9, int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])
        except (OSError, KeyError, ValueError, IndexError):
            return None

    @staticmethod
    def by_process_s(sink_pid: int | None = None) -> dict[int, tuple[str, float]]:
        """CPU seconds since they started of the processes the check talks to, {pid: (role,
        seconds)}, by role:
        "PostgreSQL" (every ``postgres`` process but those serving the Prefect server's
        database, "PostgreSQL for Prefect", with ``--prefect-db postgresql``), "Prefect server"
        (a process whose command line runs uvicorn with Prefect), "HTTP sink" (process
        ``sink_pid``: the benchmark's parent, seen from a check's child)."""
        found: dict[int, tuple[str, float]] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as fh:
                    stat = fh.read()
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    command = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            if name == "postgres":
                role = "PostgreSQL for Prefect" if f" {PREFECT_DB_PREFIX}" in command else "PostgreSQL"
            elif "prefect" in command and "uvicorn" in command:
                role = "Prefect server"
            elif int(entry.name) == sink_pid:
                role = "HTTP sink"
            else:
                continue
            found[int(entry.name)] = (role, (int(rest[11]) + int(rest[12])) / tick)  # utime, stime
        return found

    @staticmethod
    def machine_busy_s() -> float:
        """Seconds of CPU the machine spent busy since boot, all cores (``/proc/stat``: user,
        nice, system, irq, softirq, steal)."""
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] if len(fields) > 7 else 0)
        return busy / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict[str, object]:
        process = time.process_time() - self._process
        machine = self.machine_busy_s() - self._machine
        # A process that started in between counts whole; one that ended in between is not
        # counted (its last figures are gone: PostgreSQL backends of connections closed meanwhile).
        by_role: Counter = Counter()
        for pid, (role, seconds) in self.by_process_s(self.sink_pid).items():
            started_role, started = self._by_process.get(pid, (role, 0.0))
            by_role[role] += seconds - (started if started_role == role else 0.0)
        figures = {"process": round(process, 2), "this_thread": round(time.thread_time() - self._thread, 2),
                   "machine": round(machine, 2), "others": round(machine - process, 2),
                   "others_by_role": {role: round(seconds, 2) for role, seconds in by_role.items()}}
        sched = self.thread_sched()
        if sched is not None and self._sched is not None:
            waited, voluntary, involuntary = (now - then for now, then in zip(sched, self._sched))
            figures["this_thread_runqueue_s"] = round(waited, 2)
            figures["this_thread_switches"] = {"voluntary": voluntary, "involuntary": involuntary}
        return figures


class Sink:
    """An HTTP server on 127.0.0.1 that answers 200 to everything and counts requests per path."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.paths: Counter = Counter()
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with sink._lock:
                    sink.count += 1
                    sink.bytes += length
                    sink.paths[self.path] += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET = do_PUT = _answer  # noqa: N815 - http.server API

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.count, self.bytes

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_apprise_config(path: Path, codes: list[str], port: int) -> list[str]:
    """One ``json://`` channel per recipient tag (mission-<cc>, office-<cc>, coordinators); returns the tags."""
    tags = ["coordinators"] + [f"{kind}-{code.lower()}" for code in codes for kind in ("mission", "office")]
    lines = ["version: 1", "urls:"]
    for tag in tags:
        lines.append(f'  - "json://127.0.0.1:{port}/{tag}":')
        lines.append(f"      tag: {tag}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tags


def work_folder(prefix: str) -> Path:
    """A new temporary folder for one run of a benchmark script, whose ``prefect-home`` becomes
    this process's ``PREFECT_HOME`` (the temporary Prefect server's state), with no
    ``PREFECT_API_URL`` inherited and Prefect's analytics off."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["PREFECT_HOME"] = str(workdir / "prefect-home")
    return workdir


def check_env(api_url: str, database_url: str, apprise_config: Path, checkout: Path = ROOT) -> dict:
    """The environment of a check's child process: this one's, with the Prefect server, the
    database, the Apprise channels, this process as the HTTP sink's (:data:`SINK_PID_ENV`) and
    ``checkout``'s code on ``PYTHONPATH``."""
    return {**os.environ, "PREFECT_API_URL": api_url, "ROADMAP_DATABASE_URL": database_url,
            "ROADMAP_APPRISE_CONFIG": str(apprise_config), SINK_PID_ENV: str(os.getpid()),
            "PYTHONPATH": os.pathsep.join([str(checkout / "benchmarks"), str(checkout)])}


def fresh_database(kind: str, workdir: Path, prefix: str = "rt_bench_") -> tuple[str, callable]:
    """Create an empty database; return its URL and a function that drops it."""
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'roadmap-bench.db'}", lambda: None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        from models.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def code_state() -> dict:
    """HEAD commit and the product files that differ from it (other engineers edit the same tree)."""
    import models

    repo = Path(models.__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "flows", "models", "notifications").splitlines()]
    return {"head": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": dirty}


# --------------------------------------------------------------------------- the SQL floor


def sql_floor(url: str, repeats: int = 3) -> tuple[float, int, dict]:
    """Best time of one streamed query reading every active status row with milestone and member
    state: (seconds, rows, the :class:`CpuClock` figures of that run).

    Per-row columns only: the status columns and the member state's, plus the milestone's id, roadmap,
    key and owner (its JSON policy columns are per milestone, the check reads them once per milestone).
    """
    from sqlalchemy import select

    from models.db import get_engine
    from models.tables import MemberState, Milestone, Status

    query = (
        select(
            Status.id, Status.state, Status.deadline, Status.opens_at, Status.owner_timezone, Status.note,
            Status.last_classification,
            Milestone.id, Milestone.roadmap_id, Milestone.key, Milestone.owner,
            MemberState.code, MemberState.name, MemberState.name_ar, MemberState.mission_timezone,
            MemberState.office_timezone, MemberState.weekend_override, MemberState.weekend_source,
        )
        .join(Milestone, Status.milestone_id == Milestone.id)
        .join(MemberState, Status.member_state_code == MemberState.code)
        .where(Milestone.active, Status.active)
    )
    engine = get_engine(url)
    best, count, cpu = float("inf"), 0, {}
    for _ in range(repeats):
        clock = CpuClock()
        started = time.perf_counter()
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=10_000).execute(query)
            count = 0
            for partition in result.partitions():
                count += len(partition)
        seconds, used = time.perf_counter() - started, clock.stop()
        if seconds < best:
            best, cpu = seconds, used
    return best, count, cpu


# --------------------------------------------------------------------------- delivery


def delivery_benchmark(url: str, config_path: Path, tags: list[str], sink: Sink, as_of: dt.datetime,
                       per_message: int, repeats: int = 2) -> dict:
    """send_planned (claim + render + notify + mark sent) vs a plain Apprise.notify loop, same messages."""
    from sqlmodel import select

    from flows.reminders import send_planned
    from flows.tally import ACTIONABLE, PlannedReminder
    from models.db import session_scope
    from models.status import iter_milestone_views
    from models.tables import Milestone, Roadmap
    from notifications.channels import load_channels
    from notifications.digest import DigestItem, render_digest

    wanted = len(tags) * per_message
    views = []
    with session_scope(url) as session:
        for roadmap in session.exec(select(Roadmap).order_by(Roadmap.id)):
            for milestone in session.exec(select(Milestone).where(Milestone.roadmap_id == roadmap.id).order_by(Milestone.position)):
                views.extend(v for v in iter_milestone_views(session, roadmap, milestone, as_of) if v.classification in ACTIONABLE)
                if len(views) >= wanted:
                    break
            if len(views) >= wanted:
                break
    if not views:
        raise RuntimeError("no actionable status row to build reminders from")
    # a small portfolio has fewer actionable rows than messages: reuse rows (the claim key includes the recipient)
    views = [views[i % len(views)] for i in range(wanted)]
    per_tag = {tag: views[i * per_message:(i + 1) * per_message] for i, tag in enumerate(tags)}
    messages = []
    for tag, chunk in per_tag.items():
        items = [DigestItem(
            roadmap_title=v.roadmap_title, milestone_title=v.milestone_title, milestone_title_ar=v.milestone_title_ar,
            member_state=v.member_state, member_state_name=v.member_state_name, member_state_name_ar=v.member_state_name_ar,
            classification=v.classification.value, deadline=v.deadline, timezone=v.owner_timezone, days_left=v.days_left,
            working_days_left=v.working_days_left, window="bench", reason="") for v in chunk]
        subject, body = render_digest(tag, items, as_of)
        messages.append((tag, subject, body))

    stack_best = apprise_best = float("inf")
    stack_report = None
    for attempt in range(repeats):
        hub = load_channels(tags, config_path=config_path)
        sent_before = sink.snapshot()[0]
        started = time.perf_counter()
        for tag, subject, body in messages:
            if not hub.notify(body=body, title=subject, tag=tag):
                raise RuntimeError(f"plain Apprise notify to {tag} failed")
        apprise_best = min(apprise_best, time.perf_counter() - started)
        assert sink.snapshot()[0] - sent_before == len(messages)

        window = f"bench-{uuid.uuid4().hex[:8]}"
        plan = {tag: [PlannedReminder(v, tag, window) for v in chunk] for tag, chunk in per_tag.items()}
        hub = load_channels(tags, config_path=config_path)
        sent_before = sink.snapshot()[0]
        started = time.perf_counter()
        report = send_planned(plan, hub=hub, as_of=as_of, run_id=f"bench-delivery-{attempt}", database_url=url)
        elapsed = time.perf_counter() - started
        if report.messages != len(messages) or report.failed:
            raise RuntimeError(f"send_planned delivered {report.messages} of {len(messages)} messages: {report.failures[:3]}")
        assert sink.snapshot()[0] - sent_before == len(messages)
        if elapsed < stack_best:
            stack_best, stack_report = elapsed, report
    n = len(messages)
    return {
        "messages": n,
        "items": len(views),
        "stack_s": stack_best,
        "apprise_s": apprise_best,
        "stack_rate": n / stack_best,
        "apprise_rate": n / apprise_best,
        "ratio": apprise_best / stack_best,
        "items_sent": stack_report.sent,
    }


# --------------------------------------------------------------------------- the check, in a child process


def child_main(argv: list[str]) -> None:
    """Run one timed nightly check (the environment names the database, server and channels)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--as-of", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cprofile")
    parser.add_argument("--tracemalloc")
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args(argv)

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from flows.nightly import nightly_status_check
    from models.db import get_engine

    get_engine()  # the schema check (Alembic) runs once per process: not part of the nightly cost

    @flow(name="benchmark-warm-up")
    def warm_up() -> int:
        return 1

    warm_up()
    rss_before_kb = _proc_status_kb("VmRSS")
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    tracer = _PeakTracer(args.tracemalloc) if args.tracemalloc else None
    watch = _RssWatch()
    collector = _GcTimer()
    out_load = os.getloadavg()
    # The benchmark's process serves the HTTP sink: named by the parent, which is py-spy with --py-spy.
    clock = CpuClock(sink_pid=int(os.environ.get(SINK_PID_ENV) or os.getppid()))
    started = time.perf_counter()
    state = nightly_status_check(as_of=args.as_of, include_statuses=False, publish=args.publish, return_state=True)
    elapsed = time.perf_counter() - started
    cpu = clock.stop()
    watch.stop()
    collector.stop()
    if tracer:
        tracer.stop()
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    peak_kb = _proc_status_kb("VmHWM")
    out: dict = {"check_s": elapsed, "load_avg_before": out_load, "load_avg_after": os.getloadavg(), "peak_rss_kb": peak_kb, "rss_before_kb": rss_before_kb,
                 "cpu_s": cpu, "peak_rss_at": watch.peak_at, "peak_rss_by_phase_kb": watch.by_phase, "rss_timeline": watch.timeline, "gc": collector.figures(),
                 "state": state.type.value, "flow_run_id": str(state.state_details.flow_run_id)}
    try:
        out["result"] = state.result()
    except BaseException as exc:  # noqa: BLE001 - report, do not hide
        import traceback

        out["error"] = "".join(traceback.format_exception(exc))
    names: Counter = Counter()
    seen: set = set()
    reminders_s = None  # the send-reminders task run's seconds, start to end
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
                sort=TaskRunSort.ID_DESC, limit=200, offset=offset,
            )
            for run in page:
                if run.id not in seen:
                    seen.add(run.id)
                    task = run.task_key.rsplit("-", 1)[0] if run.task_key else run.name
                    names[task] += 1
                    if task == "send_reminders" and run.start_time and run.end_time:
                        reminders_s = (run.end_time - run.start_time).total_seconds()
            if len(page) < 200:
                break
            offset += 200
    out["task_runs"] = len(seen)
    out["task_runs_by_task"] = dict(names)
    out["reminders_s"] = reminders_s
    out["artifacts"] = _count_artifacts(state.state_details.flow_run_id)
    Path(args.out).write_text(json.dumps(out, default=str), encoding="utf-8")


def _count_artifacts(flow_run_id) -> dict[str, int]:
    """Artifacts the flow run created, per kind of key ("matrix", "summary", "portfolio-overview"...)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    kinds: Counter = Counter()
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
                limit=200, offset=offset)
            for artifact in page:
                key = artifact.key or "(no key)"
                kinds[key.rsplit("-", 1)[-1] if key.endswith(("-matrix", "-progress", "-summary")) else key] += 1
            if len(page) < 200:
                break
            offset += 200
    return dict(kinds)


class _GcTimer:
    """Time spent in Python's cyclic garbage collector during the check, per generation."""

    def __init__(self) -> None:
        import gc

        self._gc = gc
        self.seconds, self.collections, self._started = Counter(), Counter(), None
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds[info["generation"]] += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def stop(self) -> None:
        self._gc.callbacks.remove(self._callback)

    def figures(self) -> dict:
        return {f"gen{g}": {"collections": self.collections[g], "seconds": round(self.seconds[g], 2)} for g in range(3)}


def _phases(result: dict) -> str:
    """The highest RSS sample of each phase of a check run, as text ("check 290 MiB, ...")."""
    return ", ".join(f"{phase} {kb / 1024:.0f} MiB" for phase, kb in result.get("peak_rss_by_phase_kb", {}).items())


class _RssWatch:
    """Samples the process's RSS 5 times a second and remembers where the main thread was when it
    was highest: (seconds into the check, innermost roadmap-tracker function and line); and the
    highest sample of each phase of the check ``by_phase``: "reminders" while the main thread is
    in the ``send_reminders`` task, "check" before it, "after" once it is done (KB); and
    ``timeline``, one sample a second: [seconds into the check, RSS KB, where], for the JSON."""

    def __init__(self) -> None:
        self.peak_kb, self.peak_at = 0, None
        self.by_phase: dict[str, int] = {}
        self.timeline: list[list] = []
        self._main = threading.main_thread().ident
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            rss = _proc_status_kb("VmRSS")
            # One walk of the main thread's stack: its innermost project frame, and whether the
            # reminders task is on it.
            phase, where = "after" if "reminders" in self.by_phase else "check", None
            frame = sys._current_frames().get(self._main)
            while frame is not None:
                name = frame.f_code.co_filename
                if where is None and any(f"{os.sep}{d}{os.sep}" in name for d in ("flows", "models", "notifications")):
                    where = f"{Path(name).parent.name}/{Path(name).name}:{frame.f_lineno} {frame.f_code.co_name}"
                if frame.f_code.co_name == "send_reminders":
                    phase = "reminders"
                    break
                frame = frame.f_back
            self.by_phase[phase] = max(rss, self.by_phase.get(phase, 0))
            at = round(time.perf_counter() - self._started, 1)
            if rss > self.peak_kb:
                self.peak_kb, self.peak_at = rss, (at, where or "?")
            if not self.timeline or at - self.timeline[-1][0] >= 1.0:
                self.timeline.append([at, rss, where or "?"])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _PeakTracer:
    """Python allocations at the peak of the check (``tracemalloc``, one frame per allocation):
    polls the traced size and keeps a snapshot each time it grows by 5 %; at the end writes the
    40 largest allocation sites of the largest snapshot to ``path``. Slows the check about 3x."""

    def __init__(self, path: str) -> None:
        import tracemalloc

        self.path, self._tracemalloc = path, tracemalloc
        tracemalloc.start(1)
        self.peak, self.snapshot = 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            current, _ = self._tracemalloc.get_traced_memory()
            if current > self.peak * 1.05:
                self.peak, self.snapshot = current, self._tracemalloc.take_snapshot()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        _, traced_peak = self._tracemalloc.get_traced_memory()
        lines = [f"traced peak {traced_peak / 1e6:.1f} MB; largest snapshot {self.peak / 1e6:.1f} MB"]
        if self.snapshot is not None:
            for stat in self.snapshot.statistics("lineno")[:40]:
                lines.append(f"{stat.size / 1e6:8.1f} MB {stat.count:9d} blocks  {stat.traceback[0]}")
        Path(self.path).write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._tracemalloc.stop()


def run_check(env: dict, as_of: str, workdir: Path, label: str, py_spy: str | None, cprofile: str | None,
              publish: bool = False, trace_memory: str | None = None, script: Path | None = None) -> dict:
    """Run one check in a fresh child process of ``script`` (this file by default; another
    checkout's for ``steady_ab.py``, with that checkout's :func:`check_env`) and return the
    figures it wrote, with ``process_wall_s``.

    Raises:
        RuntimeError: the child wrote no result (the end of its log is in the message).
    """
    out = workdir / f"{label}.json"
    cmd = [sys.executable, str(script or Path(__file__).resolve()), CHILD_MARK, "--as-of", as_of, "--out", str(out)]
    if publish:
        cmd.append("--publish")
    if trace_memory:
        cmd += ["--tracemalloc", trace_memory]
    if cprofile:
        cmd += ["--cprofile", cprofile]
    if py_spy:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [spy, "record", "--format", "raw", "--rate", "50", "--idle", "--output", py_spy, "--"] + cmd
    with open(workdir / f"{label}.log", "w", encoding="utf-8") as log:
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))
        wall = time.perf_counter() - started
    if not out.exists():
        tail = (workdir / f"{label}.log").read_text(encoding="utf-8", errors="replace")[-6000:]
        raise RuntimeError(f"{label} check process exited with {proc.returncode} and no result; log tail:\n{tail}")
    result = json.loads(out.read_text(encoding="utf-8"))
    result["process_wall_s"] = wall
    return result


_PROJECT_DIRS = ("(flows/", "(models/", "(notifications/")
#: The function that holds the flow's body (``nightly_status_check`` wraps it).
_FLOW_BODY = "_check_portfolio ("


def _where(names: list[str]) -> str:
    """Part of the flow a sample belongs to: the first roadmap-tracker function under the flow
    (as a task body or a flow-body call), else Prefect's own work around task bodies or in the flow."""
    in_task = False
    for name in names[1:]:
        if name.startswith(_FLOW_BODY):
            continue  # the flow's body, not a part of it
        if name.startswith("run_task_sync (prefect/"):
            in_task = True
        if any(d in name for d in _PROJECT_DIRS):
            return f"{'task' if in_task else 'flow body'}: {name}"
    if in_task:
        return "Prefect task-run orchestration (around task bodies)"
    if any("_progress_artifact (prefect/" in n for n in names):
        return "flow body: progress artifacts (create/update_progress_artifact)"
    return "flow body: other Prefect calls"


#: What kind of work a sample does (first match wins, looked up from the innermost frame outwards).
_WHAT = [
    ("waiting on the Prefect API (HTTP)", ("(httpx/", "(httpcore/")),
    ("icalendar (ICS feeds)", ("(icalendar/",)),
    ("matplotlib (timeline images)", ("(matplotlib/", "(PIL/")),
    ("Prefect events (emit_event)", ("emit_event (prefect/events/",)),
    ("Apprise tag matching (Apprise.find)", ("Apprise.find (apprise/",)),
    ("Apprise sending (plugin, requests)", ("(apprise/plugins/", "(requests/", "(urllib3/")),
    ("digest rendering (Jinja2, hijri)", ("render_digest", "(jinja2/", "(hijridate/")),
    ("SQL (SQLAlchemy, driver)", ("(sqlalchemy/", "(sqlite3/", "(psycopg/", "(sqlmodel/")),
    ("pendulum time-zone lookups", ("timezone (pendulum/", "Timezone.__new__ (pendulum/")),
    ("pendulum arithmetic", ("(pendulum/",)),
    ("holidays library", ("(holidays/",)),
    ("Prefect parameter walking / hashing", ("visit_collection (prefect/", "hash_objects (prefect/", "(cloudpickle/")),
    ("other Prefect machinery", ("(prefect/", "(pydantic/", "(pydantic_core/")),
    ("roadmap-tracker code", ("(flows/", "(models/", "(notifications/")),
]


def _frame_name(frame: str) -> str:
    # py-spy raw frames read "function (path/file.py:line)": drop the line to aggregate per function
    return frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") and ":" in frame else frame


def summarize_py_spy(path: str, top: int = 15) -> dict[str, list[tuple[str, float, float]]]:
    """Read py-spy raw (collapsed) stacks and return, as % of the samples inside ``nightly_status_check``
    (main thread, idle samples included, so waiting counts): ``where`` (part of the flow), ``what``
    (kind of work), ``project`` (roadmap-tracker functions, inclusive and self %), ``self`` (top self time)."""
    where: Counter = Counter()
    what: Counter = Counter()
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if "nightly_status_check (" not in stack:
            continue
        n = int(count)
        frames = stack.split(";")
        start = next(i for i, f in enumerate(frames) if f.startswith("nightly_status_check ("))
        names = [_frame_name(f) for f in frames[start:]]
        total += n
        where[_where(names)] += n
        kind = "other"
        for name in reversed(names):
            kind = next((label for label, keys in _WHAT if any(k in name for k in keys)), None)
            if kind:
                break
        what[kind or "other"] += n
        for name in set(names):
            inclusive[name] += n
        own[names[-1]] += n
    if not total:
        return {}
    pct = lambda n: 100.0 * n / total  # noqa: E731
    project = [(name, pct(n), pct(own[name])) for name, n in inclusive.most_common()
               if any(d in name for d in _PROJECT_DIRS)][:top]
    return {
        "where": [(label, pct(n), 0.0) for label, n in where.most_common()],
        "what": [(label, pct(n), 0.0) for label, n in what.most_common()],
        "project": project,
        "self": [(name, pct(inclusive[name]), pct(n)) for name, n in own.most_common(top)],
        "samples": [("samples", float(total), 0.0)],
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="status rows to generate (default 10000)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=20240605)
    parser.add_argument("--as-of", default=DEFAULT_AS_OF, help=f"instant of the timed check (default {DEFAULT_AS_OF})")
    parser.add_argument("--keep", action="store_true", help="keep the generated database (and the work folder)")
    parser.add_argument("--prior-nights", type=int, choices=[0, 1, 2], default=2,
                        help="checks run before the timed one, on the nights before as-of (default 2: the timed night is a steady one); "
                             "0: the timed check is the first night")
    parser.add_argument("--per-message", type=int, default=1, help="reminder items per digest in the delivery benchmark")
    parser.add_argument("--py-spy", help="record the timed check with py-spy into this file (collapsed stacks)")
    parser.add_argument("--cprofile", help="dump cProfile stats of the timed check into this file")
    parser.add_argument("--tracemalloc", help="write the largest Python allocation sites at the timed check's peak "
                                              "into this file (tracemalloc: slows the check about 3x)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--publish", action="store_true",
                        help="also draw every roadmap's timeline and write its calendar feeds (the flow's publish=True); "
                             "off by default: the issue's check is classification, artifacts and reminder claims")
    parser.add_argument("--prefect-db", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the temporary Prefect server's own database: SQLite in its PREFECT_HOME (Prefect's default), or "
                             "a fresh PostgreSQL database (on ROADMAP_BENCH_POSTGRES_URL's server), as docs/scaling.md deploys it")
    parser.add_argument("--floor-only", action="store_true",
                        help="generate and measure the SQL floor only (no Prefect, no check): sizes the target where the check is too slow to run")
    args = parser.parse_args()

    workdir = work_folder("roadmap-bench-")
    from rich.console import Console
    from rich.table import Table

    from models.deadlines import parse_instant

    console = Console(stderr=False)
    as_of = dt.datetime.fromtimestamp(parse_instant(args.as_of).timestamp(), tz=dt.timezone.utc)
    url, drop = fresh_database(args.db, workdir)
    figures: dict = {"rows": args.rows, "db": args.db, "prefect_db": args.prefect_db, "seed": args.seed,
                     "as_of": args.as_of, "code": code_state()}
    sink = Sink()
    server = None
    drop_prefect_db = lambda: None  # noqa: E731
    try:
        from synth_portfolio import generate

        from models.db import dispose_engines, get_engine

        console.log(f"generating {args.rows} status rows into {args.db} ({url.split('@')[-1]})")
        stats = generate(get_engine(url), rows=args.rows, seed=args.seed, as_of=as_of)
        dispose_engines()
        figures.update(roadmaps=stats.roadmaps, milestones=stats.milestones, generate_s=stats.seconds,
                       recorded_states=dict(stats.states))
        console.log(f"generated {stats.rows} rows, {stats.roadmaps} roadmaps, {stats.milestones} milestones "
                    f"in {stats.seconds:.1f} s; states {dict(stats.states)}")

        if args.floor_only:
            floor_s, floor_rows, _ = sql_floor(url)
            console.log(f"SQL floor (best of 3): {floor_s:.3f} s for {floor_rows} rows")
            if args.json:
                Path(args.json).write_text(json.dumps({**figures, "floor_s": floor_s}, default=str, indent=2), encoding="utf-8")
            print(f"rows={args.rows} floor_s={floor_s:.3f} (floor only: the check was not run)")
            return

        config = workdir / "apprise.yaml"
        tags = write_apprise_config(config, sorted(stats.member_states_used), sink.port)

        from prefect.server.api.server import SubprocessASGIServer

        started = time.perf_counter()
        if args.prefect_db == "postgresql":
            from sqlalchemy.engine import make_url

            prefect_url, drop_prefect_db = fresh_database("postgresql", workdir, prefix=PREFECT_DB_PREFIX)
            os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = (
                make_url(prefect_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False))
        server = SubprocessASGIServer()
        server.start(timeout=180)
        console.log(f"temporary Prefect server at {server.api_url} ({args.prefect_db} database) in "
                    f"{time.perf_counter() - started:.1f} s")
        env = check_env(server.api_url, url, config)

        for night in range(args.prior_nights, 0, -1):
            label = "first_night" if night == args.prior_nights else "second_night"
            prior = (as_of - dt.timedelta(days=night)).isoformat()
            console.log(f"{label.replace('_', ' ')}: check as of {prior}")
            before = sink.snapshot()
            result = run_check(env, prior, workdir, label, None, None, args.publish)
            figures[label] = {**result, "sink_requests": sink.snapshot()[0] - before[0],
                              "sink_bytes": sink.snapshot()[1] - before[1]}
            console.log(f"{label.replace('_', ' ')}: {result['check_s']:.1f} s, {result['task_runs']} task runs, "
                        f"peak RSS {result['peak_rss_kb'] / 1024:.0f} MiB ({_phases(result)}), "
                        f"result {result.get('result', result.get('error'))}")

        console.log(f"timed check as of {args.as_of}")
        before = sink.snapshot()
        check = run_check(env, args.as_of, workdir, "check", args.py_spy, args.cprofile, args.publish, args.tracemalloc)
        figures["check"] = {**check, "sink_requests": sink.snapshot()[0] - before[0],
                            "sink_bytes": sink.snapshot()[1] - before[1]}
        if check.get("error"):
            console.print(f"[red]the check failed:[/red]\n{check['error']}")
        console.log(f"check: {check['check_s']:.1f} s, result {check.get('result')}")

        from sqlalchemy import func, select

        from models.tables import Status

        with get_engine(url).connect() as conn:
            figures["classifications"] = dict(conn.execute(
                select(Status.last_classification, func.count()).group_by(Status.last_classification)).all())

        console.log("SQL floor (best of 3)")
        floor_s, floor_rows, floor_cpu = sql_floor(url)
        figures.update(floor_s=floor_s, floor_rows=floor_rows, floor_cpu_s=floor_cpu)

        console.log("delivery: send_planned vs plain Apprise")
        figures["delivery"] = delivery_benchmark(url, config, tags, sink, as_of, args.per_message)
    finally:
        if server is not None:
            server.stop()
        drop_prefect_db()
        sink.stop()
        from models.db import dispose_engines

        dispose_engines()
        if args.keep:
            console.log(f"kept database {url} and work folder {workdir}")
        else:
            drop()
            shutil.rmtree(workdir, ignore_errors=True)

    check = figures["check"]
    delivery = figures["delivery"]
    ratio = check["check_s"] / floor_s
    peak_mb = check["peak_rss_kb"] / 1024
    table = Table(title=f"nightly check, {args.rows} rows on {args.db} (as of {args.as_of}, seed {args.seed})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row("code", figures["code"]["head"], "uncommitted: " + (", ".join(figures["code"]["uncommitted"]) or "none"))
    table.add_row("portfolio", f"{figures['roadmaps']} roadmaps", f"{figures['milestones']} milestones, generated in {figures['generate_s']:.1f} s")
    table.add_row("recorded states", "", ", ".join(f"{k} {v}" for k, v in sorted(figures["recorded_states"].items())))
    table.add_row("classifications", "", ", ".join(f"{k} {v}" for k, v in sorted(figures["classifications"].items(), key=str)))
    for label, night in (("first_night", args.prior_nights), ("second_night", 1)):
        if label in figures:
            prior = figures[label]
            table.add_row(f"{label.replace('_', ' ')} check (as of -{night} day)", f"{prior['check_s']:.2f} s",
                          f"{prior['task_runs']} task runs, {sum(prior['artifacts'].values())} artifacts, "
                          f"peak RSS {prior['peak_rss_kb'] / 1024:.0f} MiB, "
                          f"reminders {prior.get('result', {}).get('reminders')}, {prior['sink_requests']} HTTP messages")
    table.add_row("nightly check (timed)", f"{check['check_s']:.2f} s",
                  f"reminders {check.get('result', {}).get('reminders')}, {check['sink_requests']} HTTP messages "
                  f"({check['sink_bytes'] / 1e6:.1f} MB)")
    table.add_row("machine load (1-min average)", f"{check['load_avg_before'][0]:.1f} -> {check['load_avg_after'][0]:.1f}",
                  f"{os.cpu_count()} cores; other processes share them")
    table.add_row("CPU during the check", f"{check['cpu_s']['process']:.1f} s",
                  f"the check's process (its main thread {check['cpu_s']['this_thread']:.1f} s); "
                  f"other processes {check['cpu_s']['others']:.1f} s: "
                  + ", ".join(f"{role} {seconds:.1f} s" for role, seconds in check["cpu_s"]["others_by_role"].items()))
    cpu = check["cpu_s"]
    if "this_thread_runqueue_s" in cpu:
        blocked = check["check_s"] - cpu["this_thread"] - cpu["this_thread_runqueue_s"]
        table.add_row("the main thread's time", f"{check['check_s']:.1f} s",
                      f"running {cpu['this_thread']:.1f} s, ready and waiting for a core "
                      f"{cpu['this_thread_runqueue_s']:.1f} s, blocked {blocked:.1f} s (the database, HTTP, "
                      f"other threads, the GIL); {cpu['this_thread_switches']['voluntary']} voluntary and "
                      f"{cpu['this_thread_switches']['involuntary']} involuntary context switches")
    table.add_row("SQL floor (best of 3)", f"{floor_s:.3f} s", f"{floor_rows} rows streamed")
    table.add_row("CPU during the floor", f"{figures['floor_cpu_s']['process']:.1f} s",
                  f"this process; other processes {figures['floor_cpu_s']['others']:.1f} s")
    table.add_row("check / floor", f"{ratio:.1f}", "target <= 2 at 1M rows")
    table.add_row("send_planned", f"{delivery['stack_rate']:.0f} msg/s", f"{delivery['messages']} messages, {delivery['items']} items")
    table.add_row("plain Apprise.notify", f"{delivery['apprise_rate']:.0f} msg/s", "same messages, same sink")
    table.add_row("delivery / apprise", f"{delivery['ratio']:.2f}", "target >= 0.8")
    table.add_row("peak RSS of the check process", f"{peak_mb:.0f} MiB",
                  f"RSS before the flow call {check['rss_before_kb'] / 1024:.0f} MiB; target < 300 MB at 1M rows, read here as MiB; "
                  f"highest sample at {check['peak_rss_at']} (s into the check, innermost project frame); "
                  f"highest by phase: {_phases(check)}")
    table.add_row("Prefect task runs", str(check["task_runs"]), json.dumps(check["task_runs_by_task"]))
    table.add_row("garbage collector", f"{sum(g['seconds'] for g in check['gc'].values()):.2f} s", json.dumps(check["gc"]))
    table.add_row("artifacts created", str(sum(check["artifacts"].values())), json.dumps(check["artifacts"]))
    console.print(table)
    if args.py_spy:
        summary = summarize_py_spy(args.py_spy)
        figures["py_spy"] = summary
        titles = {"where": "where in the flow", "what": "kind of work", "project": "roadmap-tracker functions",
                  "self": "self time"}
        for part, title in titles.items():
            hot = Table(title=f"py-spy, % of the check's wall time: {title}")
            hot.add_column("function" if part in ("project", "self") else title)
            hot.add_column("inclusive %" if part in ("project", "self") else "%", justify="right")
            if part in ("project", "self"):
                hot.add_column("self %", justify="right")
            for name, value, own in summary.get(part, []):
                hot.add_row(name, f"{value:.1f}", *([f"{own:.1f}"] if part in ("project", "self") else []))
            console.print(hot)
    figures.update(check_floor=ratio, peak_rss_mb=peak_mb)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, default=str, indent=2), encoding="utf-8")
    print(f"rows={args.rows} check_s={check['check_s']:.2f} floor_s={floor_s:.3f} check/floor={ratio:.1f} "
          f"delivery/apprise={delivery['ratio']:.2f} peak_rss_mb={peak_mb:.0f} prefect_task_runs={check['task_runs']}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_MARK:
        child_main(sys.argv[2:])
    else:
        main()
