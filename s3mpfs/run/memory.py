"""How the daemon's malloc (glibc) holds the big buffers of the data path: 8 MiB parts
being cut and sent, 8 MiB read blocks, 1 MiB FUSE requests.

Over plain http they are recycled on one heap (`tune`), not mapped and unmapped per
buffer: a fresh 8 MiB mapping is faulted in and zeroed by the kernel every time.
Measured on the null server (2026-12-07, 1 GiB, fresh mount each): a `cat` took 1.0 to
1.15 s against 1.16 to 1.49, with 20 % less daemon CPU; a `cp` 2.26 to 2.40 CPU-s
against 2.45 to 2.71. One arena: buffers freed by the worker threads are reused by the
trio thread and back.

Over https blocks and parts go through awscrt's S3 client (s3/bulk.py), whose C threads
allocate their own part buffers and the blocks' bytes: on one heap with ours, a 1 GiB
`cat` was faster (1.4 to 1.7 s against 1.7 to 2.3) but peaked at 205 MiB against 175
(fragmentation), past the 200 MiB the benchmark holds every step to. There the buffers
stay mapped: glibc's threshold sits just above the 1 MiB FUSE requests (recycled on the
heap), and parts and blocks are mapped and returned at once.

What a heap keeps after a burst is free but resident: `return_freed_memory` gives it
back once it exceeds IDLE_FREE_MAX, so an idle mount does not sit on its peak
(tests/mount/test_memory.py).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import trio

from ..s3 import routing

MiB = 1 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
REUSED_MMAP_THRESHOLD = 32 * MiB  # glibc's largest: bigger parts (the schedule grows) are mapped
REUSED_TRIM_THRESHOLD = 256 * MiB  # free() does not trim the top; return_freed_memory does
MAPPED_MMAP_THRESHOLD = 2 * MiB  # fixed (glibc raises its own after the first big free)
MAPPED_TRIM_THRESHOLD = 16 * MiB  # the heap's top is not returned and re-faulted per request
IDLE_FREE_MAX = 32 * MiB  # free bytes the heap may keep
CHECK_EVERY = 5.0  # seconds


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _libc() -> ctypes.CDLL | None:
    """glibc, or None (another libc: its defaults stay)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def _mallinfo2(libc: ctypes.CDLL) -> Callable[[], _MallInfo2] | None:
    """glibc's mallinfo2 (2.33 and later), which says how much of the heap is free."""
    function = getattr(libc, "mallinfo2", None)
    if function is not None:
        function.restype = _MallInfo2
    return function


def tune(endpoint_url: str | None) -> None:
    """Before any thread starts (the arena limit applies to threads made after it)."""
    libc = _libc()
    if libc is None:
        return
    if not routing.carries_bodies(endpoint_url) and _mallinfo2(libc) is not None:
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, REUSED_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, REUSED_TRIM_THRESHOLD)
    else:
        libc.mallopt(M_MMAP_THRESHOLD, MAPPED_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, MAPPED_TRIM_THRESHOLD)


async def return_freed_memory() -> None:
    """Every CHECK_EVERY seconds: past IDLE_FREE_MAX free bytes in the heap, give the
    free pages back (malloc_trim, in a worker thread: it walks the heap)."""
    libc = _libc()
    mallinfo2 = _mallinfo2(libc) if libc is not None else None
    if libc is None or mallinfo2 is None:
        return  # (and tune() left the buffers mapped)
    while True:
        await trio.sleep(CHECK_EVERY)
        if mallinfo2().fordblks > IDLE_FREE_MAX:
            await trio.to_thread.run_sync(libc.malloc_trim, 0)
