"""The local spool: bytes written out of order, kept on disk until the file is committed.

A file that is written sequentially streams to S3 and keeps only its first part in the
spool (write/resend.py: a header written last may still change it). A file
written at random offsets ("random mode", see write/rewrite.py) keeps what it wrote in one
sparse, already-unlinked file under `cache_dir` (nothing is left behind by a crash),
with the ranges written. `SpoolSpace` charges those bytes against the mount-wide
`cache_size`; a write that does not fit fails with ENOSPC before anything changes.
"""

from __future__ import annotations

import bisect
import logging
import os
import tempfile

from ..errors import SpoolFull

log = logging.getLogger(__name__)


class SpoolSpace:
    """The mount's spool directory and its size limit (0: no spool)."""

    def __init__(self, directory: str, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.used = 0

    def prepare(self) -> None:
        """Create the directory (at mount time) so that a bad one is reported early."""
        if self.limit:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def charge(self, size: int, key: str) -> None:
        if self.limit == 0:
            log.error("write out of order to %s refused: the spool is disabled (cache_size=0)",
                      key)
            raise SpoolFull(f"{key}: writes out of order need the spool (cache_size=0)")
        if self.used + size > self.limit:
            log.error("write out of order to %s refused: the spool in %s is full "
                      "(cache_size=%d bytes in use by files being rewritten)", key,
                      self.directory, self.used)
            raise SpoolFull(f"{key}: spool full ({self.used} of {self.limit} bytes)")
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size

    def open(self, key: str) -> Spool:
        return Spool(self, key)


class Spool:
    """One file's written ranges, in a sparse unlinked local file at their own offsets."""

    def __init__(self, space: SpoolSpace, key: str) -> None:
        self.space = space
        self.key = key
        self._file: tempfile._TemporaryFileWrapper | None = None  # type: ignore[type-arg]
        self._starts: list[int] = []  # sorted, disjoint, non-adjacent ranges written
        self._ends: list[int] = []
        self.charged = 0

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def _fd(self) -> int:
        if self._file is None:
            self.space.prepare()
            self._file = tempfile.TemporaryFile(dir=self.space.directory, prefix="spool-")
        return self._file.fileno()

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if not data:
            return
        new = len(data) - self._covered_in(offset, end)
        if new:
            self.space.charge(new, self.key)
        try:
            fd = self._fd()
            view = memoryview(data)
            done = 0
            while done < len(data):
                done += os.pwrite(fd, view[done:], offset + done)
        except BaseException:
            if new:
                self.space.release(new)
            raise
        self.charged += new
        self._add(offset, end)

    def _covered_in(self, start: int, end: int) -> int:
        return sum(min(e, end) - max(s, start) for s, e in self._overlapping(start, end))

    def _overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        i = bisect.bisect_right(self._ends, start)
        found = []
        while i < len(self._starts) and self._starts[i] < end:
            found.append((self._starts[i], self._ends[i]))
            i += 1
        return found

    def _add(self, start: int, end: int) -> None:
        lo = bisect.bisect_left(self._ends, start)  # first range ending at or after start
        hi = bisect.bisect_right(self._starts, end)  # ranges starting at or before end
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def pieces(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """The written bytes within [start, end), as (offset, bytes) in order."""
        out = []
        for s, e in self._overlapping(start, end):
            s, e = max(s, start), min(e, end)
            out.append((s, os.pread(self._fd(), e - s, s)))
        return out

    def touches(self, start: int, end: int) -> bool:
        return bool(self._overlapping(start, end))

    def truncate(self, size: int) -> None:
        """Forget everything at or beyond `size`."""
        freed = self._covered_in(size, max(self._ends, default=size))
        i = bisect.bisect_left(self._ends, size + 1)
        if i < len(self._starts) and self._starts[i] < size:
            self._ends[i] = size
            i += 1
        del self._starts[i:], self._ends[i:]
        if self._file is not None:
            os.ftruncate(self._file.fileno(), size)
        self.charged -= freed
        self.space.release(freed)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.space.release(self.charged)
        self.charged = 0
        self._starts.clear()
        self._ends.clear()
