"""Classification alone: the nightly check's groups classified and tallied in this process,
without Prefect (the body of ``flows.nightly.check_milestones`` for each group of the plan).

The whole check (``benchmarks/nightly_check.py``) takes minutes per run at 1M status rows; this
takes seconds, for measuring a change to the per-row work before measuring the check. The
database is kept between runs: the first run generates the synthetic portfolio into it
(``benchmarks/synth_portfolio.py``, same seed and as-of instant as the check's benchmark), and
its first pass records every row's classification, so that later passes see a steady night.

    .venv/bin/python benchmarks/classification.py --url sqlite:///classification.db --rows 1000000 --repeat 2

Prints, per pass, the seconds, the status rows classified and the reminder items planned.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

DEFAULT_AS_OF = "2024-06-05T09:00:00+02:00"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="database URL (SQLite file or PostgreSQL database), kept between runs")
    parser.add_argument("--rows", type=int, default=1_000_000, help="status rows to generate into an empty database")
    parser.add_argument("--seed", type=int, default=20240605)
    parser.add_argument("--as-of", default=DEFAULT_AS_OF)
    parser.add_argument("--repeat", type=int, default=2, help="passes over the whole portfolio")
    args = parser.parse_args()
    os.environ["ROADMAP_DATABASE_URL"] = args.url

    from sqlalchemy import func, select

    from flows.nightly import check_milestones, list_roadmaps, plan_units
    from models.db import get_engine
    from models.deadlines import parse_instant
    from models.migrate import upgrade
    from models.tables import Status

    as_of = dt.datetime.fromtimestamp(parse_instant(args.as_of).timestamp(), tz=dt.timezone.utc)
    upgrade(args.url)
    engine = get_engine(args.url)
    with engine.connect() as connection:
        existing = connection.execute(select(func.count()).select_from(Status)).scalar_one()
    if not existing:
        from synth_portfolio import generate

        stats = generate(engine, rows=args.rows, seed=args.seed, as_of=as_of)
        print(f"generated {stats.rows} status rows, {stats.roadmaps} roadmaps in {stats.seconds:.1f} s", flush=True)
    units = plan_units(list_roadmaps())
    for number in range(1, args.repeat + 1):
        started, rows, planned = time.perf_counter(), 0, 0
        for unit in units:
            gc.disable()  # as the flow does for a group (flows.collector)
            results = check_milestones.fn(unit.label, unit.work, as_of, False)
            rows += sum(t.rows for tallies in results.values() for t in tallies)
            planned += sum(len(t.reminders) for tallies in results.values() for t in tallies)
            del results
            gc.enable()
            gc.collect(1)
        print(f"pass {number}: {time.perf_counter() - started:.2f} s, {rows} status rows in {len(units)} groups, "
              f"{planned} reminder items planned", flush=True)


if __name__ == "__main__":
    main()
