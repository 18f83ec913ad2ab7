"""How SQLite reads of status rows fare next to a busy thread (why classification reads SQLite
rows as one JSON array per roadmap; see ``models.status.read_status_rows``).

    python benchmarks/sqlite_reads.py --rows 100000

Generates a synthetic portfolio (``synth_portfolio.py``) into a temporary SQLite file, then reads
the status rows of every roadmap, one query per roadmap, in two ways: the plain query (rows
stepped one by one by Python's ``sqlite3``), and the query classification uses. Each first with
the process otherwise idle, then while another thread of the process runs Python code (as the
thread publishing artifacts, or Prefect's event and log workers, do during a check). Prints the
seconds of each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20240605)
    args = parser.parse_args()

    from sqlalchemy import select

    from models.db import dispose_engines, get_engine
    from models.status import STATUS_COLUMNS, read_status_rows
    from models.tables import Milestone, Status
    from synth_portfolio import generate

    with tempfile.TemporaryDirectory(prefix="roadmap-sqlite-reads-") as folder:
        engine = get_engine(f"sqlite:///{folder}/reads.db")
        generate(engine, rows=args.rows, seed=args.seed, as_of=dt.datetime(2024, 6, 5, 7, tzinfo=dt.timezone.utc))
        with engine.connect() as conn:
            roadmaps: dict[int, set[int]] = {}
            for milestone_id, roadmap_id in conn.execute(select(Milestone.id, Milestone.roadmap_id)):
                roadmaps.setdefault(roadmap_id, set()).add(milestone_id)

            def plain() -> int:
                return sum(len(conn.execute(
                    select(*STATUS_COLUMNS).where(Status.milestone_id.in_(ids))
                    .order_by(Status.milestone_id, Status.member_state_code)).all()) for ids in roadmaps.values())

            def classification() -> int:
                return sum(len(read_status_rows(conn, ids)) for ids in roadmaps.values())

            stop = threading.Event()

            def busy() -> None:
                payload = {"table": [{"cell": "🟡 due soon · 2024-06-07"}] * 200}
                while not stop.is_set():
                    json.dumps(payload)

            print(f"{len(roadmaps)} roadmaps, {args.rows} status rows")
            for neighbour in ("idle", "busy thread"):
                worker = None
                if neighbour == "busy thread":
                    worker = threading.Thread(target=busy, daemon=True)
                    worker.start()
                for name, read in (("plain rows", plain), ("JSON array per roadmap", classification)):
                    started = time.perf_counter()
                    count = read()
                    print(f"{neighbour:12} {name:24} {time.perf_counter() - started:8.2f} s  ({count} rows)")
                if worker:
                    stop.set()
                    worker.join()
        dispose_engines()


if __name__ == "__main__":
    main()
