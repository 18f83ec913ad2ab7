"""Python's cyclic garbage collector around the check's allocation-heavy, cycle-free steps.

Every collection of the oldest generation walks the whole heap (Prefect, SQLAlchemy, the
modules: about 0.5 s at 1M status rows), and the millions of short-lived objects a large check
makes (rows, views, cells, digest lines) trigger dozens. The nightly check pauses it for each
group of a large portfolio (classification and dashboards make no reference cycles, so
reference counting frees what they drop), then collects the group's young garbage once (Prefect's
task-run machinery does make cycles) and freezes what the night keeps; and while a digest is
rendered. Elsewhere (publishing, reminders' channels, events) it runs as usual: with it paused
for the whole check, the first night at 1M status rows peaked at 965 MB instead of 585 MB
(``benchmarks/nightly_check.py``).

And the C allocator under it: :func:`map_large_blocks` and :func:`release_free_memory`.
"""

from __future__ import annotations

import ctypes
import gc
import platform
import sys
from contextlib import contextmanager
from typing import Iterator

#: Blocks of at least this many bytes get a mapping of their own from glibc's ``malloc``, which
#: goes back to the system when the block is freed: 128 KiB, glibc's own starting threshold.
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>


def map_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's ``M_MMAP_THRESHOLD`` at ``threshold`` bytes for the whole process
    (``mallopt(3)``), so that every block that large is mapped on its own and unmapped when
    freed. Returns True when glibc's ``mallopt`` accepted it; False elsewhere (macOS, Windows,
    musl: nothing changes). The nightly check sets it for its process when it starts.

    glibc's threshold starts at 128 KiB but rises to the size of each mapped block freed: after
    a night's first large lists and strings are freed, the later ones come from the heap, whose
    freed space the process keeps. A first night at 1M status rows builds and frees many such
    blocks (a recipient's planned items, a group's row batches, JSON texts): fixed, its peak RSS
    was lower (``benchmarks/nightly_check.py``, docs/benchmarks-history.md). Python's own small objects
    (under 512 bytes) come from its arenas, which this does not change.
    """
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
    return mallopt is not None and mallopt(_M_MMAP_THRESHOLD, threshold) == 1


def release_free_memory() -> bool:
    """Give the pages glibc's ``malloc`` holds free, in every arena, back to the system
    (``malloc_trim(0)``, glibc 2.8 and later: free pages inside the heaps too, not only at their
    top). Returns True when glibc did; False where the C library is not glibc (nothing happens).

    glibc keeps a heap (an arena) per thread that allocates, and space freed in one arena is
    reused only by the threads of that arena: what the publishing thread freed (httpx bodies,
    JSON texts) does not serve the main thread's next group, nor the reminders, unless it goes
    back first. The nightly check calls this before a large portfolio's digests, and
    :func:`flows.reminders.send_planned` every few batches of digests. A call walks every
    arena's free chunks: 29 ms to 86 ms in a probe of 380 MB of scattered 1 KB blocks; in a
    steady night's check at 1M status rows, none of py-spy's 4,059 samples (50 a second).
    """
    malloc_trim = _glibc("malloc_trim", [ctypes.c_size_t])
    return malloc_trim is not None and malloc_trim(0) in (0, 1)


def _glibc(name: str, argtypes: list):
    """The C function ``name`` of the process's own C library when it is glibc on Linux, with
    ``argtypes`` and an int result; None elsewhere."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


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
    """Collect the young generations, then move every object alive to the permanent generation
    (:func:`gc.freeze`) until :func:`frozen_until_done` gives them back.

    For the end of each group of a large check, once its dashboards are rendered and its rows let
    go, with the collector still paused: what the check keeps for the rest of the night (the
    reminder plan) is then not walked again by every later collection, and the young collection
    frees the cycles that are garbage already (a finished Prefect task run's engine holds the
    task's result). Freezing right after the task run, before its dashboards, kept too much:
    +58 MB at 1M status rows, +200 MB on a first night without the young collection. Reference
    counting still frees frozen objects; a cycle that becomes garbage while frozen waits for
    :func:`frozen_until_done`.
    """
    gc.collect(1)
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
