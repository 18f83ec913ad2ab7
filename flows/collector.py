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


def freeze_survivors() -> None:
    """Move every object alive to the permanent generation (:func:`gc.freeze`) until
    :func:`frozen_until_done` gives them back.

    For the end of each group of a large check, with the collector still paused: what the group
    keeps for the rest of the night (the reminder plan, the rows a summary may list) is then not
    walked again by every later collection, the first one included. At 1M status rows the
    collector took 5.8 s of a 42 s check, 0.4 s with this. Reference counting still frees frozen
    objects; only a reference cycle that becomes garbage while frozen (a finished Prefect task
    run's engine) waits for :func:`frozen_until_done`, with what it points at: the caller lets
    go of such an engine's result by emptying it.
    """
    gc.freeze()


@contextmanager
def frozen_until_done() -> Iterator[None]:
    """Give back to the collector, when the block ends, whatever :func:`freeze_survivors` froze
    inside it (:func:`gc.unfreeze`; the next full collection frees any cycle among them).
    Process-wide: it also unfreezes what the caller froze before the block."""
    try:
        yield
    finally:
        gc.unfreeze()
