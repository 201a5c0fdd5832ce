"""Random mode: a file written at any offset, as changes spooled over a base object.

A file switches to random mode on a write its streaming upload cannot take (before the
end of an existing object it continues, or when opened O_RDWR). From then on its
content is the base object (the version it was opened on, pinned by its ETag; bytes
past `base_limit`, where a truncate cut it, read as zeros) with the spooled writes on
top. Nothing is sent until the file is committed (close or fsync): then the new version
is built part by part (parts.rebuild_plan): runs of untouched parts are copied
server-side from the base (UploadPartCopy, CopySourceIfMatch its ETag), and each part
holding a change is uploaded from the spool plus ranged GETs of the base for the rest of
that part. A 10 GiB object with a 4 KiB change costs one part of transfer. On a server
without UploadPartCopy every part is uploaded that way, one at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from ..objects import ObjectInfo, ObjectStore
from ..s3.reader import ObjectReader
from .parts import Part, rebuild_plan
from .spool import Spool


class RandomWrites:
    """One file's content in random mode: a base object, and spooled writes over it."""

    def __init__(self, store: ObjectStore, nursery: trio.Nursery, spool: Spool,
                 base: ObjectInfo | None, block_size: int) -> None:
        self.spool = spool
        self.base = base
        self.base_limit = base.size if base is not None else 0
        self.size = self.base_limit
        self._reader = ObjectReader(store, nursery, base.key, base.size, block_size,
                                    base.etag) if base is not None and base.size else None

    def rebase(self, stored: ObjectInfo) -> None:
        """The base object was moved (a rename): the same bytes, under another key and
        maybe another ETag; its unchanged bytes are read and copied from there."""
        if self.base is None:
            return
        self.base = stored
        if self._reader is not None:
            self._reader.retarget(stored.key, stored.etag)

    def write(self, offset: int, data: bytes) -> None:
        """Spool a write (SpoolFull, and nothing changes, when the spool has no room)."""
        self.spool.write(offset, data)
        self.size = max(self.size, offset + len(data))

    def truncate(self, size: int) -> None:
        self.spool.truncate(size)
        self.base_limit = min(self.base_limit, size)
        self.size = size

    async def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        return await self._content(offset, end)

    async def _content(self, start: int, end: int) -> bytes:
        """Bytes [start, end): the base's (zeros past base_limit) under the spool's."""
        pieces = self.spool.pieces(start, end)
        if len(pieces) == 1 and pieces[0][0] == start and len(pieces[0][1]) == end - start:
            return pieces[0][1]  # all spooled: no GET
        buffer = bytearray(end - start)
        base_end = min(end, self.base_limit)
        if self._reader is not None and start < base_end:
            data = await self._reader.read(start, base_end - start)
            buffer[:len(data)] = data
        for offset, data in pieces:
            buffer[offset - start:offset - start + len(data)] = data
        return bytes(buffer)

    async def parts(self, part_size: int, *, copies: bool = True
                    ) -> AsyncIterator[tuple[Part, bool]]:
        """The new version's parts, in order, each with whether it may be the only one
        (a small file: one PutObject). Uploaded parts are read one at a time. Without
        `copies` (a server without UploadPartCopy) every part is uploaded, the base's
        bytes read back with ranged GETs."""
        changed = self.spool.ranges if copies else [(0, self.size)]
        plan = rebuild_plan(self.size, self.base_limit, changed, part_size)
        for piece in plan:
            if piece.copy:
                yield Part(piece.number, piece.start, copy_length=piece.end - piece.start), False
            else:
                data = await self._content(piece.start, piece.end)
                yield Part(piece.number, piece.start, data), len(plan) == 1

    def close(self) -> None:
        self.spool.close()
        if self._reader is not None:
            self._reader.close()
