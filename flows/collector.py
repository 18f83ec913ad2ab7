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
def collector_paused(freeze: bool = False) -> Iterator[None]:
    """Pause the cyclic collector for the block; restore the caller's setting after it (a
    caller that had it off keeps it off). Process-wide, as :func:`gc.disable` is.

    With ``freeze``, what is alive when the block ends goes to the permanent generation
    (:func:`gc.freeze`) before the collector resumes: what a check keeps for the rest of the
    night (the reminder plan, the rows a summary may list) is then not walked again by every
    later collection (at 1M status rows, the first collection after a paused group walked
    hundreds of thousands of them, and each full collection all of them). Reference counting
    still frees frozen objects; only a reference cycle frozen as garbage waits for
    :func:`frozen_until_done`.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


@contextmanager
def frozen_until_done() -> Iterator[None]:
    """Give back to the collector, when the block ends, whatever ``collector_paused(freeze=True)``
    froze inside it (:func:`gc.unfreeze`; the next full collection frees any cycle among them).
    Process-wide: it also unfreezes what the caller froze before the block."""
    try:
        yield
    finally:
        gc.unfreeze()
