"""What a call that lets go of Python's GIL costs a thread while another thread is busy.

The nightly check's main thread shares its process with threads that run Python (dashboards
being published, Prefect's event loop, the rows read ahead). A C call that releases the GIL
(``hashlib`` on 2,048 bytes or more, ``zlib``, a driver waiting for its server) gives the GIL to
such a thread, and takes it back only when that thread's turn ends: ``sys.getswitchinterval()``,
5 ms by default. This script hashes the same buffers as :func:`flows.dashboard.content_digest`
does (pieces of :data:`flows.dashboard.HASH_PIECE` bytes, which keep the GIL) and in one call
(which releases it). It does so beside 0, 1 and 2 threads that spin in Python, and prints the
seconds of each.

    .venv/bin/python benchmarks/gil_handoff.py [--buffers 3000] [--kb 60]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.dashboard import content_digest  # noqa: E402


def _spin(stop: threading.Event) -> None:
    total = 0
    while not stop.is_set():
        for i in range(1000):
            total += i


def _one_call(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buffers", type=int, default=3000, help="buffers hashed per measure (default 3000)")
    parser.add_argument("--kb", type=int, default=60, help="size of each buffer in KB (default 60)")
    args = parser.parse_args(argv)
    buffers = [bytes([i % 251]) * (args.kb * 1024) for i in range(args.buffers)]
    assert all(content_digest(b) == _one_call(b) for b in buffers[:3])  # same digest either way
    print(f"{args.buffers} buffers of {args.kb} KB, switch interval {sys.getswitchinterval() * 1000:.0f} ms")
    print(f"{'busy threads':>12} {'pieces (GIL kept) s':>20} {'one call (GIL let go) s':>24}")
    for busy in (0, 1, 2):
        stop = threading.Event()
        spinners = [threading.Thread(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for spinner in spinners:
            spinner.start()
        seconds = []
        for hash_one in (content_digest, _one_call):
            started = time.perf_counter()
            for b in buffers:
                hash_one(b)
            seconds.append(time.perf_counter() - started)
        stop.set()
        for spinner in spinners:
            spinner.join()
        print(f"{busy:>12} {seconds[0]:>20.3f} {seconds[1]:>24.3f}")


if __name__ == "__main__":
    main()
