"""Reads: ranged GetObject in fixed blocks with sequential read-ahead.

The object is read in blocks of `block_size`. A read fetches the blocks it needs;
when reads are sequential, the next blocks are fetched in the background so that
`cat`/`cmp`/`sha256sum` stream without waiting on every block. At most a few blocks
are kept per open file.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from ..errors import ObjectArchived, ReadFailed, S3mpfsError, describe, s3_error_code
from ..objects import ObjectStore

log = logging.getLogger(__name__)

KEEP_BLOCKS = 4  # blocks kept per open file, the read-ahead included
READ_AHEAD_BLOCKS = 2  # on loopback 1 is as fast; real S3 has latency to hide


class _Block:
    def __init__(self) -> None:
        self.ready = trio.Event()
        self.data: bytes | memoryview = b""
        self.error: BaseException | None = None
        self.fetching = trio.CancelScope()  # cancelled when no read can want it any more
        self.waiting = 0  # reads waiting for it


# Looks the object up again: its (size, ETag) now, or None if it is gone.
Refresh = Callable[[], Awaitable[tuple[int, str] | None]]


class ObjectReader:
    def __init__(self, store: ObjectStore, nursery: trio.Nursery, key: str, size: int,
                 block_size: int, etag: str = "", refresh: Refresh | None = None, *,
                 cached: bool = False) -> None:
        """`refresh`: called when the version opened turns out to be gone before a byte
        was read (another client replaced it after the listing this open relied on).
        `cached`: the kernel may serve this descriptor pages of this version it kept from
        an earlier open, so no other version may ever be read through it."""
        self.store = store
        self.nursery = nursery
        self.key = key
        self.etag = etag  # the version opened: reads never mix in a newer one
        self.size = size
        self.block_size = block_size
        self.refresh = refresh
        self._blocks: dict[int, _Block] = {}
        self._last_block = -1
        self._served = cached  # bytes of this version were (or may have been) returned
        self._gone: S3mpfsError | None = None  # the version read is gone: every read fails
        self._logged = ""  # the last failure logged (the kernel asks again and again)

    def retarget(self, key: str, etag: str) -> None:
        """The version read was moved (a rename): the same bytes, read from `key` now,
        as version `etag` (a copy in parts has an ETag of its own). Blocks fetched are
        kept; those in flight may have asked the old key as it went: fetched again."""
        self.key, self.etag = key, etag
        for index, block in list(self._blocks.items()):
            if not block.ready.is_set() or block.error is not None:
                self._drop(index)

    @property
    def served(self) -> bool:
        """Whether bytes of this version were (or may have been) returned."""
        return self._served

    async def read(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes [offset, offset + length) of the version read (fewer at its end); a read
        within one block is a view of it, not a copy."""
        if self._gone is not None:
            raise self._gone
        try:
            try:
                data = await self._read(offset, length)
            except Exception as exc:
                if self._served or self.refresh is None or not _replaced(exc):
                    raise
                current = await self.refresh()  # nothing read yet: read what is there now
                if current is None:
                    raise
                self.size, self.etag = current
                self._drop_all()
                data = await self._read(offset, length)
        except Exception as exc:
            raise self._read_error(exc) from None
        self._served = True
        return data

    async def _read(self, offset: int, length: int) -> bytes | memoryview:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        first, last = offset // self.block_size, (end - 1) // self.block_size
        sequential = first in (self._last_block, self._last_block + 1)
        self._last_block = last
        if sequential:  # read-ahead: keep the next blocks in flight
            for ahead in range(last + 1, last + 1 + READ_AHEAD_BLOCKS):
                if ahead * self.block_size < self.size:
                    self._start(ahead)
        chunks = []
        for index in range(first, last + 1):
            block = self._start(index)
            block.waiting += 1
            try:
                await block.ready.wait()
            finally:
                block.waiting -= 1
            if block.error is not None:
                if self._blocks.get(index) is block:  # (fetched again on the next read)
                    del self._blocks[index]
                raise block.error
            start = index * self.block_size
            chunks.append(memoryview(block.data)[max(offset - start, 0):end - start])
        self._evict(first)
        # One block: its view goes to the kernel as it is (pyfuse3 writes the reply from
        # the buffer); across two, the join is the one copy.
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _start(self, index: int) -> _Block:
        block = self._blocks.get(index)
        if block is None:
            block = self._blocks[index] = _Block()
            self.nursery.start_soon(self._fetch, index, block)
        return block

    async def _fetch(self, index: int, block: _Block) -> None:
        start = index * self.block_size
        block.error = ReadFailed(f"read of {self.key} was closed")  # until data came
        try:
            with block.fetching:
                block.data = await self.store.get_range(
                    self.key, start, min(start + self.block_size, self.size), self.etag)
                block.error = None
        except Exception as exc:
            block.error = exc
        finally:
            block.ready.set()

    def _evict(self, current: int) -> None:
        """Blocks outside the window around `current` go once fetched. One still being
        fetched stays (read-ahead overtaken by a later block that came first, while its
        own GET is retried): the next read of it waits for that fetch rather than start
        another, and every fetch stays where close() finds it."""
        for index in [i for i, block in self._blocks.items() if block.ready.is_set()
                      and (i < current - 1 or i > current + KEEP_BLOCKS)]:
            del self._blocks[index]

    def _drop(self, index: int) -> None:
        """Forget a block: its fetch is cancelled unless a read waits for it (that read
        gets it)."""
        block = self._blocks.pop(index)
        if not block.waiting:
            block.fetching.cancel()

    def _drop_all(self) -> None:
        for index in list(self._blocks):
            self._drop(index)

    def _read_error(self, exc: BaseException) -> S3mpfsError | BaseException:
        """The error a failed read gives (EIO), after one log line naming the file."""
        if isinstance(exc, S3mpfsError):
            return exc
        code = s3_error_code(exc)
        if code == "InvalidObjectState":
            self._log(f"cannot read {self.key}: it is archived (GLACIER/DEEP_ARCHIVE); "
                      "restore it first (aws s3api restore-object)")
            return ObjectArchived(self.key)
        if _replaced(exc) or code in ("NoSuchKey", "404", "NotFound"):
            how = "replaced" if _replaced(exc) else "deleted"
            self._log(f"read of {self.key} failed: the file was {how} while open" + (
                "; open it again to read the new version" if how == "replaced" else ""))
            self._gone = ReadFailed(f"{self.key} was {how} while open")
            return self._gone
        self._log(f"read of {self.key} failed: {describe(exc)}")
        return ReadFailed(f"read of {self.key} failed: {describe(exc)}")

    def _log(self, message: str) -> None:
        if message != self._logged:
            self._logged = message
            log.error("%s", message)

    def close(self) -> None:
        """No new read comes through this reader: blocks still being fetched that no read
        waits for (read-ahead never reached) are cancelled rather than paid for, retries
        and all. A read still waiting (the descriptor's reader was just renewed beside
        it) gets its block."""
        self._drop_all()


def _replaced(exc: BaseException) -> bool:
    """Whether a read failed because the version it asked for is no longer there."""
    return s3_error_code(exc) in ("PreconditionFailed", "412")
