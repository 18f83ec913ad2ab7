"""Python's cyclic garbage collector around the check's allocation-heavy, cycle-free steps.

Every collection of the oldest generation walks the whole heap (Prefect, SQLAlchemy, the
modules: about 0.5 s at 1M status rows), and the millions of short-lived objects a large check
makes (rows, views, cells, digest lines) trigger dozens. The steps paused here make no reference
cycles of their own, so reference counting frees what they drop as before; the collector runs
as usual everywhere else (publishing, reminders' channels, events), whose cycles it must collect:
with it paused for the whole check, the first night at 1M status rows peaked at 965 MB instead
of 585 MB (``benchmarks/nightly_check.py``).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block; restore the caller's setting after it (a
    caller that had it off keeps it off). Process-wide, as :func:`gc.disable` is."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
