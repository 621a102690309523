"""Keep a long-running process's heap from growing with fragmentation (glibc only).

glibc serves blocks of at least its *mmap threshold* (128 KiB at start) with
``mmap`` and returns them to the kernel when they are freed. Each time such a
block is freed, glibc raises the threshold to that block's size (up to 32 MiB),
so later blocks of that size come from the heap instead. In ``serve`` that
happens to every short-lived large buffer (asyncio's TLS read buffers, the
pieces of a ``/metrics`` scrape): once the threshold has moved they land in
the heap between long-lived objects, and the heap cannot shrink around them.
Measured at 10,000 targets x 3 vantages (docs/performance.md), a fixed
threshold was worth about 20-30 MB of resident memory.

Setting ``MALLOC_MMAP_THRESHOLD_`` in the environment does the same before
the process starts, and wins: an operator's setting is left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["MMAP_THRESHOLD", "steady_heap"]

#: The threshold kept (glibc's own starting value).
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def steady_heap() -> bool:
    """Fix glibc's mmap threshold for this process; whether it was done.

    False where there is nothing to do: not Linux, not glibc (musl has no such
    threshold), or the operator set ``MALLOC_MMAP_THRESHOLD_`` already.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl's mallopt is a no-op)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
