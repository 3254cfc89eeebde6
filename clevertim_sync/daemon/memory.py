"""Memory a long-lived daemon gives back to the system after a job (`release`).

Why: CPython frees a pull's objects, but glibc's malloc keeps the freed pages in its arenas (each
thread that allocated gets its own) for reuse, so without this the daemon's RSS stays near its
peak between pulls. `malloc_trim(0)` returns the free pages at the top of every arena and, since
glibc 2.8, the free pages inside them too. A no-op where the C library is not glibc.

Must not import: the pull, the mirror (it knows nothing about what was freed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl and others: no malloc_trim
        return None
    return trim


def release() -> bool:
    """Collect cycles, then hand the allocator's free memory back; True if it was trimmed."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def rss_bytes() -> int | None:
    """This process's resident set size now (Linux), for the daemon's log and the benchmark."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")
