"""Pure part planning: the write buffer, cutting parts, and the part-size schedule.

No I/O, no trio, no awaits: everything here is unit-tested directly.

The schedule: part N has size `base * 2 ** ((N - 1) // TIER_PARTS)`, capped at 5 GiB.
With the default 8 MiB base, files up to 512 MiB use 8 MiB parts, parts double every
64 parts, and the 10,000 parts S3 allows hold about 46.2 TiB, above S3's 50 TB object
limit. A fixed 8 MiB part would stop at 78 GiB.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from ..config import MAX_PART_SIZE
from ..errors import FileTooLarge, InvalidWrite

MAX_PARTS = 10_000
TIER_PARTS = 64  # the part size doubles every TIER_PARTS parts
S3_MAX_OBJECT_SIZE = 50 * 10**12  # 50 TB, S3's documented object size limit


def part_size_for(number: int, base: int) -> int:
    """Size of part `number` (1-based) in the schedule starting at `base`."""
    if not 1 <= number <= MAX_PARTS:
        raise ValueError(f"part number {number} outside 1..{MAX_PARTS}")
    return min(base << ((number - 1) // TIER_PARTS), MAX_PART_SIZE)


@functools.lru_cache(maxsize=16)
def max_file_size(base: int) -> int:
    """The largest file the schedule can hold in MAX_PARTS parts (a 10,000-term sum,
    computed once per base: every new file's planner asks for it)."""
    return sum(part_size_for(n, base) for n in range(1, MAX_PARTS + 1))


@functools.lru_cache(maxsize=16)
def _size_after(first: int, base: int) -> int:
    """Bytes the schedule holds in parts first..MAX_PARTS."""
    return sum(part_size_for(n, base) for n in range(first, MAX_PARTS + 1))


@dataclass(frozen=True)
class Part:
    number: int
    offset: int  # of the part's first byte in the file
    data: bytes = b""
    copy_length: int = 0  # > 0: copy this many bytes of the base object, data is empty

    def __len__(self) -> int:
        return len(self.data)


def copy_parts(size: int) -> list[Part]:
    """Parts that copy an existing object of `size` bytes (>= 5 MiB) server-side:
    as few as possible, of near-equal sizes, each within S3's 5 MiB..5 GiB."""
    count = -(-size // MAX_PART_SIZE)
    bounds = [size * i // count for i in range(count + 1)]
    return [Part(i + 1, bounds[i], copy_length=bounds[i + 1] - bounds[i])
            for i in range(count)]


class PartPlanner:
    """Turns sequential writes into numbered parts of the scheduled sizes.

    A part is cut only when the buffer holds *more* than the part size, so the last
    part is never empty and a file of exactly one part size stays a single PutObject.
    """

    def __init__(self, base_part_size: int) -> None:
        self.base_part_size = base_part_size
        self.max_size = max_file_size(base_part_size)
        self.size = 0  # bytes accepted so far (the file's current length)
        self.next_number = 1
        self.parts_cut = 0
        # The writes themselves, kept as they came (no copy per write); a part is joined
        # from them once, when it is cut.
        self._chunks: deque[bytes] = deque()
        self._buffered = 0

    @property
    def buffered(self) -> int:
        return self._buffered

    def current_part_size(self) -> int:
        return part_size_for(self.next_number, self.base_part_size)

    @property
    def sent_end(self) -> int:
        """Where the bytes not yet cut into parts begin: writes below it would change a
        part already handed to the upload."""
        return self.size - self._buffered

    def check_write(self, offset: int, length: int) -> None:
        """Raise what `write` would raise for this write, before any part is cut."""
        if offset < self.sent_end:
            raise InvalidWrite(f"write at {offset} into a part already uploaded (the bytes "
                               f"before {self.sent_end})")
        if offset + length > self.max_size:
            raise FileTooLarge(f"file would exceed {self.max_size} bytes")

    def write(self, offset: int, data: bytes) -> Iterator[Part]:
        """Accept a write at `offset`; yield every part that became full.

        A write past the end fills the gap with zeros; a write before the end patches
        the part being filled (in memory); a write into a part already cut is refused.
        """
        self.check_write(offset, len(data))
        if offset < self.size:
            overlap = min(len(data), self.size - offset)
            self._patch(offset, data[:overlap])
            offset, data = offset + overlap, data[overlap:]
            if not data:
                return
        while self.size < offset:  # hole: zeros, one part's worth at a time
            yield from self._append(bytes(min(offset - self.size, self.current_part_size())))
        yield from self._append(data)

    def _patch(self, offset: int, data: bytes) -> None:
        buffer = bytearray(b"".join(self._chunks))
        start = offset - self.sent_end
        buffer[start:start + len(data)] = data
        self._chunks = deque([bytes(buffer)])

    def read_buffered(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the buffer (sent_end <= start <= end <= size)."""
        out, position = [], self.sent_end
        for chunk in self._chunks:
            if position >= end:
                break
            if position + len(chunk) > start:
                out.append(chunk[max(0, start - position):end - position])
            position += len(chunk)
        return b"".join(out)

    def take_buffer(self) -> bytes:
        """Hand over everything buffered (nothing cut yet), leaving the planner empty."""
        assert not self.parts_cut
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return data

    def _append(self, data: bytes) -> Iterator[Part]:
        if data:
            self._chunks.append(bytes(data))  # bytes(bytes) is the same object: no copy
            self._buffered += len(data)
            self.size += len(data)
        while self._buffered > self.current_part_size():
            yield self._cut(self.current_part_size())

    def _cut(self, length: int) -> Part:
        taken: list[bytes] = []
        missing = length
        while missing:
            chunk = self._chunks.popleft()
            if len(chunk) > missing:  # the write that crosses the boundary is split
                chunk, rest = chunk[:missing], chunk[missing:]
                self._chunks.appendleft(rest)
            taken.append(chunk)
            missing -= len(chunk)
        self._buffered -= length
        part = Part(self.next_number, self.size - self._buffered - length, b"".join(taken))
        self.next_number += 1
        self.parts_cut += 1
        return part

    def finish(self) -> Part:
        """The last part: whatever is buffered (empty only for an empty file)."""
        return self._cut(self._buffered)

    def continue_after(self, parts: list[Part]) -> None:
        """Start after parts already planned elsewhere (server-side copies of a base)."""
        assert self.size == 0 and not self.parts_cut
        self.size = sum(p.copy_length for p in parts)
        self.next_number = len(parts) + 1
        self.parts_cut = len(parts)
        self.max_size = self.size + _size_after(self.next_number, self.base_part_size)

    def truncate_to_zero(self) -> None:
        """Forget everything written; only possible before any part was cut."""
        if self.parts_cut:
            raise InvalidWrite("cannot truncate a file whose parts are already uploading")
        self._chunks.clear()
        self._buffered = 0
        self.size = 0


@dataclass(frozen=True)
class Piece:
    """One part of a new version built from a base object and changed ranges:
    `copy` parts are copied server-side from the base, the others are uploaded."""

    number: int
    start: int
    end: int
    copy: bool


def rebuild_plan(size: int, base_size: int, changed: list[tuple[int, int]],
                 part_size: int) -> list[Piece]:
    """The parts of a file of `size` bytes whose bytes below `base_size` are the base
    object's except in the `changed` ranges (sorted, disjoint). Parts holding a change
    (or bytes past the base) are `part_size` cells, uploaded; runs of untouched cells are
    copied, as few parts as S3 allows (5 GiB each). Every part but the last is at least
    `part_size` >= 5 MiB. If fixed cells would need more than 10,000 parts, the cells
    follow the growing part-size schedule instead."""
    if size <= part_size:
        return [Piece(1, 0, size, copy=False)]  # one PutObject
    for bounds in (_fixed_cells(size, part_size), _scheduled_cells(size, part_size)):
        pieces = _merge(bounds, base_size, changed)
        if len(pieces) <= MAX_PARTS:
            return pieces
    raise FileTooLarge(f"file of {size} bytes needs more than {MAX_PARTS} parts")


def _fixed_cells(size: int, part_size: int) -> list[int]:
    return list(range(0, size, part_size)) + [size]


def _scheduled_cells(size: int, part_size: int) -> list[int]:
    bounds, number = [0], 1
    while bounds[-1] < size and number <= MAX_PARTS:
        bounds.append(min(bounds[-1] + part_size_for(number, part_size), size))
        number += 1
    return bounds


def _merge(bounds: list[int], base_size: int, changed: list[tuple[int, int]]) -> list[Piece]:
    pieces: list[Piece] = []
    run_start: int | None = None  # start of the current run of untouched cells
    starts = [s for s, _ in changed]

    def flush_run(end: int) -> None:
        nonlocal run_start
        if run_start is None:
            return
        length = end - run_start
        count = -(-length // MAX_PART_SIZE)
        for i in range(count):
            pieces.append(Piece(len(pieces) + 1, run_start + length * i // count,
                                run_start + length * (i + 1) // count, copy=True))
        run_start = None

    i = 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        while i < len(changed) and changed[i][1] <= a:
            i += 1
        touched = i < len(starts) and starts[i] < b
        if b <= base_size and not touched:
            if run_start is None:
                run_start = a
            continue
        flush_run(a)
        pieces.append(Piece(len(pieces) + 1, a, b, copy=False))
    flush_run(bounds[-1])
    return pieces
