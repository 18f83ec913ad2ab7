"""A/B benchmark of the steady night: one database state, the timed check run alternately by two checkouts.

    python benchmarks/steady_ab.py --rows 1000000 --db postgresql --other ../parent-checkout --trials 3

Single runs of ``nightly_check.py`` on a shared two-core machine differ by several seconds from
run to run, more than most changes gain. This script measures a change against its parent in
one run:

1. generates the portfolio (``synth_portfolio.py``) and runs the first and second nights with
   this checkout's code, against one temporary Prefect server and HTTP sink (as
   ``nightly_check.py`` does);
2. keeps the database as the second night left it (PostgreSQL: a template database; SQLite: a
   copy of the file);
3. ``--trials`` times: for this checkout and each ``--other`` (a checkout of the same
   repository, e.g. a git worktree at the parent commit; the option may be repeated), in turn,
   each trial starting one checkout later (no checkout always goes first), restores the
   database and runs the timed steady-night check in a fresh child process of that checkout
   (``nightly_check.py``'s child), against the same server and sink;
4. prints each run's check seconds and the seconds of its ``send-reminders`` task run (which
   the check's child reads from the Prefect API with its task runs; a checkout whose child
   does not report them shows none), then the median of each checkout.

The checkouts must share the database schema (Alembic head) and the child's options. The
figures are for comparing checkouts within one run: restored databases start with PostgreSQL's
buffer cache cold and the Prefect server holds every trial's artifacts, so a check here takes
longer than the timed check of ``nightly_check.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from nightly_check import (  # noqa: E402  (after the path set-up, as the benchmark itself does)
    DEFAULT_AS_OF,
    POSTGRES_ADMIN_URL,
    Sink,
    check_env,
    fresh_database,
    run_check,
    work_folder,
    write_apprise_config,
)


def snapshot(kind: str, url: str, workdir: Path) -> tuple[callable, callable]:
    """Keep the database as it stands; return (restore, forget): ``restore()`` puts it back as
    kept (same URL), ``forget()`` drops the kept copy."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from models.db import dispose_engines

    dispose_engines()
    if kind == "sqlite":
        path = Path(make_url(url).database)
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        kept = workdir / "kept.db"
        shutil.copyfile(path, kept)

        def restore() -> None:
            dispose_engines()
            for extra in ("-wal", "-shm"):
                Path(f"{path}{extra}").unlink(missing_ok=True)
            shutil.copyfile(kept, path)

        return restore, lambda: kept.unlink(missing_ok=True)
    name = make_url(url).database
    kept = f"{name}_kept"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{kept}" TEMPLATE "{name}"'))

    def restore() -> None:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{kept}"'))

    def forget() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{kept}" WITH (FORCE)'))
        admin.dispose()

    return restore, forget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--seed", type=int, default=20240605)
    parser.add_argument("--as-of", default=DEFAULT_AS_OF)
    parser.add_argument("--other", required=True, action="append",
                        help="another checkout (a folder holding flows/, models/, benchmarks/); may be repeated")
    parser.add_argument("--trials", type=int, default=3, help="runs of each checkout, alternating (default 3)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    checkouts = {"this": ROOT}
    for number, folder in enumerate(args.other, start=1):
        checkouts[f"other{number}" if len(args.other) > 1 else "other"] = Path(folder).resolve()
        if not (Path(folder) / "benchmarks" / "nightly_check.py").is_file():
            parser.error(f"--other {folder}: no benchmarks/nightly_check.py there")

    workdir = work_folder("roadmap-ab-")
    from models.deadlines import parse_instant
    from models.db import dispose_engines, get_engine
    from synth_portfolio import generate

    as_of = dt.datetime.fromtimestamp(parse_instant(args.as_of).timestamp(), tz=dt.timezone.utc)
    url, drop = fresh_database(args.db, workdir)
    sink, server, forget = Sink(), None, None
    runs: dict[str, list[dict]] = {side: [] for side in checkouts}
    try:
        stats = generate(get_engine(url), rows=args.rows, seed=args.seed, as_of=as_of)
        dispose_engines()
        config = workdir / "apprise.yaml"
        write_apprise_config(config, sorted(stats.member_states_used), sink.port)
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start(timeout=180)
        for night in (2, 1):
            prior = (as_of - dt.timedelta(days=night)).isoformat()
            result = run_check(check_env(server.api_url, url, config), prior, workdir, f"night-{night}", None, None)
            print(f"night as of {prior}: {result['check_s']:.1f} s", flush=True)
        restore, forget = snapshot(args.db, url, workdir)
        for trial in range(1, args.trials + 1):
            sides = list(checkouts.items())
            shift = (trial - 1) % len(sides)
            for side, checkout in sides[shift:] + sides[:shift]:
                restore()
                result = run_check(check_env(server.api_url, url, config, checkout), args.as_of, workdir,
                                   f"{side}-{trial}", None, None, script=checkout / "benchmarks" / "nightly_check.py")
                if result.get("error"):
                    raise RuntimeError(f"{side} trial {trial}: the check failed:\n{result['error']}")
                reminders = result.get("reminders_s")
                runs[side].append({"check_s": result["check_s"], "reminders_s": reminders, "cpu_s": result.get("cpu_s")})
                print(f"trial {trial} {side:6}: check {result['check_s']:6.2f} s, send-reminders "
                      f"{reminders if reminders is None else round(reminders, 2)} s", flush=True)
    finally:
        if forget:
            forget()
        if server is not None:
            server.stop()
        sink.stop()
        dispose_engines()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)
    for side in runs:
        checks = [r["check_s"] for r in runs[side]]
        reminders = [r["reminders_s"] for r in runs[side] if r["reminders_s"] is not None]
        print(f"{side:6} ({checkouts[side]}): median check {statistics.median(checks):.2f} s, "
              f"median send-reminders {statistics.median(reminders) if reminders else float('nan'):.2f} s "
              f"over {len(checks)} runs")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "db": args.db, "checkouts": {k: str(v) for k, v in checkouts.items()},
                                               "runs": runs}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f} s")
