"""Many machines (docs/scaling.md): the Prefect server on PostgreSQL, a process work pool, two
workers and a portfolio of 50 roadmaps checked by ``nightly-portfolio-check``.

Everything runs as separate processes on 127.0.0.1, each worker standing for one machine with
its own ``PREFECT_HOME``; they share only what machines would share: the Prefect API, the
roadmap-tracker PostgreSQL database, the code checkout and the Apprise config. The deployments
are registered from the repository's prefect.yaml with ``prefect deploy --all``, the commands of
docs/scaling.md. Slow (minutes): marked ``scaling``; ``-m "not scaling"`` leaves it out.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import POSTGRES_URL, ROOT, SEED_ROADMAP, _postgres_admin
from tests.sinks import HttpSink, free_port
from tests.test_exactly_once import apprise_config

pytestmark = [pytest.mark.scaling, pytest.mark.postgres]

ROADMAPS = 50
STATES_PER_ROADMAP = 4
GROUP_SIZE = 5
AS_OF = "2024-06-05T09:00:00+02:00"
WORKERS = ("worker-a", "worker-b")
#: Flow runs at once per worker ("machine"). With the parent run holding one slot, neither
#: worker can take every child, so both machines work.
WORKER_LIMIT = 2
CODES = ["ae", "bh", "dj", "dz", "iq", "jo", "kw", "lb", "ly", "mr", "qa", "sa", "sd", "so", "tn", "ye"]
ALL_TAGS = [f"mission-{c}" for c in CODES] + [f"office-{c}" for c in CODES] + ["coordinators"]
SERVER_START_S = 180
RUN_TIMEOUT_S = 15 * 60
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

PREFECT = [sys.executable, "-m", "prefect"]


def slug_of(i: int) -> str:
    return f"gcm-arab-2024-r{i:02d}"


def title_of(i: int) -> str:
    return f"GCM Arab region review, portfolio roadmap r{i:02d}"


# -- processes ------------------------------------------------------------------------------


class Processes:
    """Subprocesses in their own process groups, logging to files; all stopped at teardown.

    Every process started here carries ``ROADMAP_SCALING_RUN=<token>`` in its environment, and so
    does every flow-run process a worker starts from it: teardown ends exactly those processes
    (found by that token, never by name), including flow runs a worker left behind."""

    def __init__(self, logs: Path, token: str):
        self.logs = logs
        self.token = token
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed when the process ends
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.started.append((name, proc))
        return proc

    def log(self, name: str, tail: int = 6000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-tail:] if path.exists() else ""

    def logs_tail(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {name} ---\n{self.log(name, tail)}" for name, _ in self.started)

    def assert_alive(self) -> None:
        for name, proc in self.started:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def _tagged_pids(self) -> list[int]:
        marker = f"ROADMAP_SCALING_RUN={self.token}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for _, proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, proc in self.started:
            _signal_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if Path("/proc").is_dir():  # flow runs a worker started in their own sessions
            for pid in self._tagged_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """Run a ``prefect`` command to completion; return its output, or fail with it."""
    done = subprocess.run(PREFECT + args, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"prefect {' '.join(args)} exited with {done.returncode}:\n{output[-6000:]}"
    return output


# -- databases ------------------------------------------------------------------------------


@pytest.fixture
def databases():
    """Two fresh PostgreSQL databases: (Prefect server URL for asyncpg, roadmap-tracker URL).
    Unreachable PostgreSQL fails in CI, skips elsewhere (tests.conftest._postgres_admin)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    admin = _postgres_admin()
    suffix = uuid.uuid4().hex[:10]
    names = (f"rt_scale_prefect_{suffix}", f"rt_scale_app_{suffix}")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = make_url(POSTGRES_URL)
    prefect_url = base.set(drivername="postgresql+asyncpg", database=names[0]).render_as_string(hide_password=False)
    app_url = base.set(drivername="postgresql+psycopg", database=names[1]).render_as_string(hide_password=False)
    try:
        yield prefect_url, app_url
    finally:
        from models.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- the portfolio --------------------------------------------------------------------------


def write_portfolio(folder: Path) -> list[Path]:
    """50 roadmap files made from the seed: own slug and title, 4 of its 16 member states each
    (consecutive, wrapping, so every state appears in 12 or 13 roadmaps)."""
    seed = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
    states = seed["member_states"]
    folder.mkdir()
    paths = []
    for i in range(1, ROADMAPS + 1):
        spec = dict(seed)
        spec["slug"] = slug_of(i)
        spec["title"] = title_of(i)
        spec["title_ar"] = f"{seed['title_ar']} r{i:02d}"
        start = (i - 1) * STATES_PER_ROADMAP
        spec["member_states"] = [states[(start + k) % len(states)] for k in range(STATES_PER_ROADMAP)]
        path = folder / f"{slug_of(i)}.yaml"
        path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


_ITEM = re.compile(r"^- (?P<name>.+) \((?P<cc>[A-Z]{2})\): (?P<milestone>.+)$")
_DEADLINE = re.compile(r"^\s+deadline .+ - (?P<roadmap>.+)$")


def digest_items(request: dict) -> list[tuple[str, str, str, str]]:
    """(recipient, roadmap title, member state code, milestone title) of every item of one digest
    (its English part)."""
    message = request["message"]
    recipient = message.rsplit("Recipient tag | وسم المستلم: ", 1)[1].strip()
    english = message.split("\n---\n", 1)[0].splitlines()
    items = []
    for n, line in enumerate(english):
        item = _ITEM.match(line)
        if not item:
            continue
        roadmap = next((m.group("roadmap") for m in map(_DEADLINE.match, english[n + 1 : n + 6]) if m), None)
        assert roadmap, f"no roadmap line after {line!r} in:\n{message}"
        items.append((recipient, roadmap, item.group("cc"), item.group("milestone")))
    count = int(re.search(r"\((\d+) items?\)", english[0]).group(1))
    assert len(items) == count, f"parsed {len(items)} items, the digest says {count}:\n{message}"
    return items


# -- the Prefect API ------------------------------------------------------------------------


class Api:
    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, timeout=60)

    def post(self, path: str, body: dict) -> list | dict:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> dict:
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

    def flow_runs(self, **filters) -> list[dict]:
        return self.post("/flow_runs/filter", {"flow_runs": filters, "limit": 200})

    def flow_runs_of(self, flow_name: str) -> list[dict]:
        return self.post("/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}}, "limit": 200})


def wait_for_health(api_url: str, procs: Processes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        procs.assert_alive()
        try:
            if httpx.get(f"{api_url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"Prefect server not healthy after {timeout} s ({last}):\n{procs.logs_tail()}")


def wait_for_workers(api: Api, procs: Processes, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.assert_alive()
        online = {w["name"] for w in api.post("/work_pools/roadmap/workers/filter", {}) if w.get("status") == "ONLINE"}
        if online >= set(WORKERS):
            return
        time.sleep(2)
    raise AssertionError(f"workers not online after {timeout} s:\n{procs.logs_tail()}")


def wait_for_run(api: Api, run_id: str, procs: Processes, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/flow_runs/{run_id}")
        if run["state_type"] in FINAL:
            return run
        procs.assert_alive()
        time.sleep(5)
    children = [(r["name"], r["state_name"], r.get("labels", {}).get("prefect.worker.name")) for r in api.flow_runs_of("nightly-status-check")]
    raise AssertionError(f"portfolio run not finished after {timeout} s; children {children}\n{procs.logs_tail()}")


# -- the test -------------------------------------------------------------------------------


def test_fifty_roadmaps_on_two_workers_each_checked_once_each_reminder_delivered_once(databases, tmp_path):
    from sqlalchemy import create_engine, text

    from models.db import dispose_engines
    from models.sync import sync_roadmap_file

    prefect_db, app_db = databases
    started = time.monotonic()

    # The portfolio, loaded into the shared roadmap-tracker database.
    for path in write_portfolio(tmp_path / "roadmaps"):
        sync_roadmap_file(path, app_db)
    dispose_engines()

    sink = HttpSink().start()
    token = uuid.uuid4().hex
    procs = Processes(tmp_path, token)
    try:
        config = apprise_config(tmp_path / "apprise.yaml", {tag: sink.port for tag in ALL_TAGS})
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"

        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ROADMAP_"))}
        base.update(
            ROADMAP_SCALING_RUN=token,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_API_URL=api_url,
            PREFECT_LOGGING_TO_API_ENABLED="false",
            PYTHONUNBUFFERED="1",
        )

        def env_for(machine: str, **extra: str) -> dict[str, str]:
            home = tmp_path / f"home-{machine}"
            home.mkdir(exist_ok=True)
            return {**base, "PREFECT_HOME": str(home), **extra}

        # The Prefect server on PostgreSQL.
        server_env = env_for("server", PREFECT_API_DATABASE_CONNECTION_URL=prefect_db, PREFECT_UI_ENABLED="false")
        server_env.pop("PREFECT_API_URL")
        procs.start("server", PREFECT + ["server", "start", "--host", "127.0.0.1", "--port", str(port)], server_env)
        wait_for_health(api_url, procs, SERVER_START_S)
        api = Api(api_url)

        # The work pool and the deployments, from the repository's prefect.yaml.
        admin_env = env_for("admin")  # ROADMAP_HOME is read on each worker, when a run starts
        run_cli(["work-pool", "create", "roadmap", "--type", "process"], admin_env)
        run_cli(["--no-prompt", "deploy", "--all"], admin_env, timeout=600)
        run_cli(["deployment", "schedule", "clear", "nightly-status-check/nightly-status-check", "-y"], admin_env)
        # Inactive here, so 05:00 in Cairo cannot start a second portfolio run during the test.
        run_cli(["deployment", "schedule", "create", "nightly-portfolio-check/nightly-portfolio-check",
                 "--cron", "0 5 * * *", "--timezone", "Africa/Cairo", "--replace", "-y", "--no-active"], admin_env)
        portfolio = api.get("/deployments/name/nightly-portfolio-check/nightly-portfolio-check")
        assert [s["schedule"].get("cron") for s in portfolio["schedules"]] == ["0 5 * * *"]
        assert portfolio["global_concurrency_limit"]["limit"] == 1  # two nights never overlap
        # The checkout is found on each machine when a run starts, not fixed at deploy time.
        assert portfolio["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $ROADMAP_HOME }}"}}
        ]
        child_deployment = api.get("/deployments/name/nightly-status-check/portfolio-group")
        assert child_deployment["schedules"] == []
        assert child_deployment["global_concurrency_limit"] is None  # the groups run side by side

        # Two workers, one per "machine": same checkout, same database, same Apprise config.
        for name in WORKERS:
            worker_env = env_for(
                name, ROADMAP_HOME=str(ROOT), ROADMAP_DATABASE_URL=app_db, ROADMAP_APPRISE_CONFIG=str(config),
                PREFECT_WORKER_QUERY_SECONDS="5",
            )
            procs.start(name, PREFECT + ["worker", "start", "--pool", "roadmap", "--name", name,
                                         "--limit", str(WORKER_LIMIT)], worker_env)
        wait_for_workers(api, procs)

        # The night: one portfolio run, fanned out in groups of 5.
        out = run_cli(["deployment", "run", "nightly-portfolio-check/nightly-portfolio-check",
                       "--param", f"as_of={AS_OF}", "--param", f"group_size={GROUP_SIZE}"], admin_env)
        parent_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
        parent = wait_for_run(api, parent_id, procs, RUN_TIMEOUT_S)
        elapsed = time.monotonic() - started
        assert parent["state_type"] == "COMPLETED", f"{parent['state']}\n{procs.logs_tail()}"

        # Every roadmap checked exactly once, by 10 child runs spread over both workers.
        children = api.flow_runs(parent_flow_run_id={"any_": [parent_id]})
        all_checks = api.flow_runs_of("nightly-status-check")
        assert len(children) == ROADMAPS // GROUP_SIZE
        assert {r["id"] for r in all_checks} == {r["id"] for r in children}
        assert all(r["state_type"] == "COMPLETED" for r in children), [(r["name"], r["state"]) for r in children]
        assert all(len(r["parameters"]["roadmaps"]) == GROUP_SIZE for r in children)
        assert all(r["parameters"]["as_of"] == "2024-06-05T07:00:00+00:00" for r in children)
        checked = Counter(slug for r in children for slug in r["parameters"]["roadmaps"])
        assert checked == Counter({slug_of(i): 1 for i in range(1, ROADMAPS + 1)})
        worker_of = {r["id"]: r["labels"].get("prefect.worker.name") for r in children}
        assert set(Counter(worker_of.values())) == set(WORKERS), f"child runs per worker: {Counter(worker_of.values())}"
        group_of = {slug: r["id"] for r in children for slug in r["parameters"]["roadmaps"]}
        # ... at the same time: some child runs on the two workers overlapped.
        spans = {r["id"]: (dt.datetime.fromisoformat(r["start_time"]), dt.datetime.fromisoformat(r["end_time"])) for r in children}
        overlapping = [
            (a, b) for a in spans for b in spans
            if worker_of[a] < worker_of[b] and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
        ]
        assert overlapping, f"the child runs never overlapped across workers: {spans}"

        # One matrix artifact per roadmap, published by the child run that checked it.
        keys = [f"{slug_of(i)}-matrix" for i in range(1, ROADMAPS + 1)]
        artifacts = api.post("/artifacts/filter", {"artifacts": {"key": {"any_": keys}}, "limit": 200})
        assert Counter(a["key"] for a in artifacts) == Counter({k: 1 for k in keys})
        assert all(a["flow_run_id"] == group_of[a["key"].removesuffix("-matrix")] for a in artifacts)

        engine = create_engine(app_db)
        try:
            with engine.connect() as conn:
                statuses = conn.execute(text(
                    "SELECT r.slug, s.last_classification FROM status s JOIN milestone m ON m.id = s.milestone_id "
                    "JOIN roadmap r ON r.id = m.roadmap_id WHERE m.active"
                )).all()
                log = conn.execute(text(
                    "SELECT l.recipient, r.title, s.member_state_code, m.title, l.state, l.claimed_by, r.slug "
                    "FROM reminder_log l JOIN status s ON s.id = l.status_id JOIN milestone m ON m.id = s.milestone_id "
                    "JOIN roadmap r ON r.id = m.roadmap_id"
                )).all()
        finally:
            engine.dispose()

        # Every status row of every roadmap was classified (checked).
        assert len(statuses) == ROADMAPS * 6 * STATES_PER_ROADMAP
        assert {slug for slug, _ in statuses} == set(checked)
        assert [row for row in statuses if row[1] is None] == []

        # Every due reminder delivered exactly once; nothing left claimed or failed.
        assert Counter(row[4] for row in log) == Counter({"sent": len(log)})
        delivered = Counter(item for request in sink.requests for item in digest_items(request))
        assert [item for item, n in delivered.items() if n > 1] == []
        assert delivered == Counter(tuple(row[:4]) for row in log)
        # The seed's one overdue item per member state (invitations, due end of May) in each roadmap.
        assert len(log) == ROADMAPS * STATES_PER_ROADMAP
        assert {(row[0], row[2]) for row in log} == {(f"mission-{row[2].lower()}", row[2]) for row in log}
        # Each reminder was claimed by the child run that checked its roadmap.
        assert all(row[5] == group_of[row[6]] for row in log)

        print(
            f"\nscaling: {ROADMAPS} roadmaps, {len(children)} child runs "
            f"({dict(Counter(worker_of.values()))}), {len(log)} reminders in {len(sink.requests)} digests, "
            f"{elapsed:.0f} s from setup to the parent's end"
        )
    finally:
        procs.stop_all()
        sink.stop()
