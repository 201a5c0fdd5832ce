"""Parts a streaming file may still change after they were sent.

S3 keeps the last upload of each part number, so a part already sent can be sent again
with new bytes, as long as its bytes are still at hand. A streaming upload keeps:

- its first part, in the spool (in memory only where the spool is disabled or full:
  memory_limit must bound the parts of any number of files): muxers and archivers write a
  header first and fill in sizes at the end (MP4's `mdat` size, WAV and AVI's RIFF sizes,
  a zip entry's local header);
- once the file has gone back (a write before its end), every part cut from then on, in
  the spool: a file that goes back once tends to go back again (each zip entry). A file
  whose first write leaves a hole (`dd seek=`, a downloader writing pieces out of order)
  counts as having gone back;
- after a hole, parts that hold only zeros: their bytes are known without keeping any.

A write into a kept part patches it and marks it changed; the upload sends the changed
parts again before it completes. A file that never goes back (cp, rsync, tar) writes its
first part to the spool once and never reads it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator

from .parts import Part
from .spool import Spool, SpoolSpace

log = logging.getLogger(__name__)


class SentParts:
    """The kept parts of one streaming upload, and which of them changed."""

    def __init__(self, space: SpoolSpace, key: str) -> None:
        self._space = space
        self._key = key
        self.went_back = False  # from now on, parts cut are kept in the spool
        self.holes = False  # the file has a hole: look for parts of zeros
        self._head: bytes | bytearray = b""  # part 1's bytes, when part 1 holds data
        self._spool: Spool | None = None
        self._starts: list[int] = []  # kept parts, in file order: start, end, number
        self._ends: list[int] = []
        self._numbers: list[int] = []
        self._changed: set[int] = set()
        self._warned = False

    def keep(self, part: Part) -> None:
        """A part is being handed to the upload: keep its bytes if it may change."""
        if part.copy_length or not part.data:
            return  # a copy of a base object: its bytes were never here
        if part.number == 1:
            try:
                in_spool = self._spool_takes(part, quiet=True)
            except OSError:  # the spool's disk: keep it in memory rather than fail
                in_spool = False
            if not in_spool:
                self._head = part.data  # (where the spool is disabled or full)
        elif self.holes and part.data.count(0) == len(part.data):
            pass  # zeros: nothing to keep (their changes go to the spool)
        elif not self.went_back or not self._spool_takes(part):
            return
        self._starts.append(part.offset)
        self._ends.append(part.offset + len(part.data))
        self._numbers.append(part.number)

    def _spool_takes(self, part: Part, quiet: bool = False) -> bool:
        if self._space.limit and self._space.used + len(part.data) <= self._space.limit:
            if self._spool is None:
                self._spool = self._space.open(self._key)
            self._spool.write(part.offset, part.data)
            return True
        if not self._warned and not quiet:
            self._warned = True
            log.warning("%s goes back to change what it wrote, but the spool (cache_size) "
                        "has no room to keep its parts from %d on: writes into them will "
                        "be refused", self._key, part.offset)
        return False

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of [start, end) is in a kept part."""
        i = bisect.bisect_right(self._starts, start) - 1
        while start < end:
            if i < 0 or i >= len(self._starts) or not self._starts[i] <= start < self._ends[i]:
                return False
            start = self._ends[i]
            i += 1
        return True

    def patch(self, offset: int, data: bytes) -> None:
        """Change bytes of kept parts (`covers` said they all are)."""
        i = bisect.bisect_right(self._starts, offset) - 1
        done = 0
        while done < len(data):
            end, number = self._ends[i], self._numbers[i]
            here = offset + done
            piece = data[done:done + end - here]
            if number == 1 and self._head:
                head = self._head if isinstance(self._head, bytearray) \
                    else bytearray(self._head)
                head[here:here + len(piece)] = piece
                self._head = head
            else:  # (a part of zeros gets its spool now: SpoolFull when there is none)
                if self._spool is None:
                    self._spool = self._space.open(self._key)
                self._spool.write(here, piece)
            self._changed.add(number)
            done += len(piece)
            i += 1

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of kept parts (`covers` said they all are)."""
        out = []
        i = bisect.bisect_right(self._starts, start) - 1
        while start < end:
            stop = min(end, self._ends[i])
            out.append(self._content(self._numbers[i], start, stop))
            start = stop
            i += 1
        return b"".join(out)

    def changed_parts(self) -> Iterator[Part]:
        """The parts to send again, with their new bytes, read one at a time."""
        for i, number in enumerate(self._numbers):
            if number not in self._changed:
                continue
            self._changed.discard(number)
            start, end = self._starts[i], self._ends[i]
            yield Part(number, start, self._content(number, start, end))

    def _content(self, number: int, start: int, end: int) -> bytes:
        """Bytes [start, end) of kept part `number`: the first part's own, else the
        spooled ones over zeros (a part kept whole in the spool is one piece)."""
        if number == 1 and self._head:
            return bytes(self._head[start:end])
        pieces = self._spool.pieces(start, end) if self._spool is not None else []
        if len(pieces) == 1 and pieces[0][0] == start and len(pieces[0][1]) == end - start:
            return pieces[0][1]
        buffer = bytearray(end - start)
        for offset, data in pieces:
            buffer[offset - start:offset - start + len(data)] = data
        return bytes(buffer)

    def close(self) -> None:
        self._head = b""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._starts.clear()
        self._ends.clear()
        self._numbers.clear()
