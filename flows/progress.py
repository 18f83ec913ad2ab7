"""Progress of a long run, reported to whoever listens (the terminal's progress bar).

The ``roadmap`` command sets a listener for the duration of one call; flows report rows done.
A context variable, not a parameter: Prefect records flow parameters, and a callback is not data.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

#: Called with (rows done so far, rows in all) by the nightly check after each milestone.
_listener: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar(
    "roadmap_progress_listener", default=None
)


def report(done: int, total: int) -> None:
    """Tell the current listener, if any, that ``done`` of ``total`` rows are through."""
    listener = _listener.get()
    if listener is not None:
        listener(done, total)


@contextlib.contextmanager
def listening(listener: Callable[[int, int], None]) -> Iterator[None]:
    """Route :func:`report` calls made inside the block to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
