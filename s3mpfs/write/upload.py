"""One file's upload, from its first write to CompleteMultipartUpload (or abort).

The writer (FUSE WRITE requests) feeds the planner; every full part is handed over an
unbuffered channel to the upload's driver task, which lives in the mount's nursery.
This module holds the upload's life cycle: writes, the switch to random mode, truncate,
close and its states. Its S3 side (the hand-over, the driver and its requests, the abort,
the sticky failure) is `Sending`, its base class, in write/sending.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import trio

from ..config import MIN_PART_SIZE
from ..errors import (
    FileTooLarge,
    InvalidWrite,
    S3mpfsError,
    SpoolFull,
    Unsupported,
    UploadFailed,
)
from ..objects import CompletedPart, ObjectInfo, ObjectStore
from .budget import MemoryBudget, Reservation
from .parts import PartPlanner, copy_parts
from .resend import SentParts
from .rewrite import RandomWrites
from .sending import Sending
from .spool import SpoolSpace

if TYPE_CHECKING:
    from ..s3.stats import MountStats
    from .registry import UploadRegistry

log = logging.getLogger(__name__)


@dataclass
class UploadShared:
    """What every upload of a mount shares."""

    store: ObjectStore
    nursery: trio.Nursery
    budget: MemoryBudget
    part_limiter: trio.CapacityLimiter  # parts in flight across the mount
    part_size: int
    registry: UploadRegistry | None = None  # records who started each multipart upload
    expected_sse: str | None = None  # what S3 must report for every object written
    spool: SpoolSpace = field(default_factory=lambda: SpoolSpace("", 0))  # random mode
    read_ahead: int = 8 * 1024 * 1024  # block size of base reads in random mode
    uploads: set[Upload] = field(default_factory=set)  # live ones, for shutdown
    part_copy: bool = True  # the server implements UploadPartCopy (s3/gaps.py)
    stats: MountStats | None = None  # told when each upload ends


class Upload(Sending):
    """Streams one file to one key. States: writing -> closing -> done | failed."""

    def __init__(self, shared: UploadShared, key: str,
                 metadata: Callable[[], dict[str, str]], base: ObjectInfo | None = None,
                 *, only_new: bool = False, replacing: ObjectInfo | None = None,
                 prefer_random: bool = False, empty_base: str = "") -> None:
        """`base`: an existing object this upload extends (appends go after its bytes).
        `only_new`: the key held no object when the file was created; committing must
        not replace one another client created since (where the server can tell).
        `replacing`: the version this one replaces (HEADed): its headers are kept.
        `prefer_random`: opened O_RDWR: spool from the first write (random mode) so that
        every byte stays at hand for reads and rewrites.
        `empty_base`: the ETag of the empty object the file was opened on (no `base`: it
        has no bytes to carry); committing must not replace any other version, as for a
        `base` (another host's append to it since)."""
        self.shared = shared
        self.key = key
        self.base = base
        self.only_new = only_new
        self.replacing = replacing
        self.copy_source: ObjectInfo | None = None  # what copy parts read (with its ETag)
        self.empty_base = empty_base
        self.bytes_written = 0
        self.truncated = False  # its length was changed (ftruncate) since it began
        self.must_commit = False  # a new or O_TRUNC file: an object even with no bytes
        self.abandoned = False  # its file was deleted while being written: not a failure
        self._metadata = metadata  # called when the object is created, so it is current
        self.planner = PartPlanner(shared.part_size)
        self.upload_id: str | None = None
        self.error: S3mpfsError | None = None
        self.result: dict | None = None
        self.parts: dict[int, CompletedPart] = {}
        self.prefer_random = prefer_random
        self.random: RandomWrites | None = None  # random mode (see write/rewrite.py)
        self.sent = SentParts(shared.spool, key)  # sent parts a write may still change
        self.filling = Reservation(shared.budget)  # the budget of the part being filled
        self._sending: dict[int, trio.Event] = {}  # part number -> its last upload ended
        # (typed in Sending: subscripting here builds a generic alias for every file)
        self._send, self._receive = trio.open_memory_channel(0)
        self._lock = trio.Lock()  # one write or close at a time, in arrival order
        self._done = trio.Event()
        self._closed = False
        self._closed_cleanly = False  # the last part was handed over: complete the upload
        self._cancel_scope = trio.CancelScope()
        shared.uploads.add(self)
        shared.nursery.start_soon(self._drive, name=f"upload {key}")

    @property
    def phase(self) -> str:
        """For `s3mpfs status`: writing (open), completing (closed, being committed), or
        failed (close() or the next write will fail with EIO)."""
        if self.error is not None:
            return "failed"
        return "completing" if self._closed else "writing"

    @property
    def size(self) -> int:
        """The file's length: the base object's until the first write extends it."""
        if self.random is not None:
            return self.random.size
        return self.base.size if self.base is not None else self.planner.size

    @property
    def changed(self) -> bool:
        """Whether the file differs from the version it began from (a commit is needed)."""
        return self.bytes_written > 0 or self.truncated

    @property
    def self_contained(self) -> bool:
        """Every byte of the file is here (spooled, or none written yet): it needs no
        object in S3, so its descriptors can go on with it after an unlink."""
        if self.random is not None:
            return self.copy_source is None
        return (self.base is None and self.copy_source is None and self.upload_id is None
                and not self.planner.parts_cut)  # every byte is in the part being filled

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # -- the writer's side ---------------------------------------------------------------

    async def write(self, offset: int, data: bytes) -> int:
        async with self._lock:
            self._raise_if_failed()
            if self._closed:
                raise UploadFailed(f"{self.key}: write after the upload was completed")
            if self.random is None and self._wants_random(offset):
                self._go_random(required=self.base is not None and offset < self.base.size)
            if self.random is not None:
                if offset + len(data) > self.planner.max_size:
                    raise FileTooLarge(f"file would exceed {self.planner.max_size} bytes")
                self.random.write(offset, data)  # SpoolFull: nothing was written
                self.bytes_written += len(data)
                return len(data)
            await self._start_from_base()
            await self._stream(offset, data)
            return len(data)

    async def _stream(self, offset: int, data: bytes) -> None:
        """A write to a streaming file: bytes of parts already sent are patched where
        they are kept (see write/resend.py), the rest goes through the planner."""
        sent_end = self.planner.sent_end
        patch, rest = b"", data
        if offset < sent_end:
            split = min(len(data), sent_end - offset)
            patch, rest = data[:split], data[split:]
            if not self.sent.covers(offset, offset + split):
                log.error("write to %s at %d refused: it lands in a part already uploaded "
                          "whose bytes are no longer at hand (a file opened write-only keeps "
                          "its first part, and the parts cut after it first went back while "
                          "the spool has room). Programs that rewrite files should open "
                          "them O_RDWR", self.key, offset)
                raise InvalidWrite(f"write at {offset} into a part already uploaded")
        if rest or not patch:
            self.planner.check_write(offset + len(patch), len(rest))
        if offset < self.planner.size:
            self.sent.went_back = True
        elif offset > self.planner.size:  # a hole: zeros up to offset
            self.sent.holes = True
            if not self.planner.parts_cut:  # written out of order from the start
                self.sent.went_back = True
        if patch:
            self.sent.patch(offset, patch)
            offset += len(patch)
        self.bytes_written += len(data)  # counted before a part reaches the driver
        if rest or not patch:
            await self._fill(offset, rest)

    async def _fill(self, offset: int, data: bytes) -> None:
        """Write through the planner. The part being filled holds a whole part's charge
        against the mount's memory budget, taken before its first byte (write() waits
        here) and handed to that part when it is cut: the buffers of any number of files
        stay within memory_limit, and a file holding one can always finish its part."""
        if data or offset > self.planner.size:
            await self._reserve()
        for part in self.planner.write(offset, data):
            self.sent.keep(part)
            await self._hand_over(part, last=False)
            del part  # sent: not held while this waits for room below
        if self.planner.buffered:
            await self._reserve()

    async def _reserve(self) -> None:
        await self.filling.take(self.planner.current_part_size())
        if self._done.is_set():  # failed meanwhile: nothing will hand it over
            self.filling.release()

    def _wants_random(self, offset: int) -> bool:
        if not self.can_go_random:
            return False  # parts are on their way: only streaming can go on
        if self.base is not None and offset < self.base.size:
            return True  # changing an existing object in place
        return self.prefer_random  # (a write-only file going back keeps streaming)

    @property
    def can_go_random(self) -> bool:
        """Nothing was handed to the driver yet: the file can still move to the spool."""
        return self.random is None and self.copy_source is None and not self.planner.parts_cut

    def prefer_reads(self) -> None:
        """A descriptor that reads (O_RDWR) joined: keep every byte at hand from now on
        (random mode) if nothing was sent yet, so that its reads see the writes."""
        self.prefer_random = True
        if self.can_go_random and self.error is None and not self._closed:
            self._go_random(required=False)

    def _go_random(self, *, required: bool) -> None:
        """Switch to random mode (nothing was handed to the driver yet): the bytes
        buffered so far move to the spool. When the spool has no room, a write that
        needs it fails (SpoolFull); one streaming can take goes on streaming."""
        if not required and self.shared.spool.limit == 0:
            return  # no spool: streaming patches the part being filled
        spool = self.shared.spool.open(self.key)
        buffered = self.planner.buffered
        try:
            if buffered:
                spool.write(0, b"".join(self.planner._chunks))
        except SpoolFull:
            spool.close()
            if required:
                raise
            return
        self.planner.take_buffer()
        self.filling.release()
        random = RandomWrites(self.shared.store, self.shared.nursery, spool, self.base,
                              self.shared.read_ahead)
        random.size = max(random.size, self.planner.size)
        self.copy_source, self.base, self.random = self.base, None, random

    async def read(self, offset: int, length: int) -> bytes:
        """Read what was written so far (random mode only: streamed bytes are gone)."""
        if self.random is None:
            raise Unsupported(f"{self.key}: reading a file being streamed")
        async with self._lock:
            self._raise_if_failed()
            return await self.random.read(offset, length)

    @property
    def retargetable(self) -> bool:
        """Whether the upload can still change its key (a rename of the file before
        close): nothing was sent under the key yet (no multipart upload, no part handed
        over). What it is built on (`built_on`) moves with it."""
        return self.upload_id is None and not self.planner.parts_cut and not self._closed

    @property
    def built_on(self) -> ObjectInfo | None:
        """The stored version whose bytes this one still needs (appends, random writes)."""
        return self.copy_source if self.copy_source is not None else self.base

    def retarget(self, key: str, *, only_new: bool, stored: ObjectInfo | None) -> None:
        """The file was renamed (`retargetable` said it can be): store it under `key`.
        `stored`: where the version it is built on is now (moved to `key` by the rename):
        its bytes are read and copied from there, and its ETag is the commit's condition.
        `only_new`: nothing is stored under `key` (the commit must not replace anything)."""
        assert self.retargetable
        self.key, self.only_new = key, only_new
        if only_new:  # (the empty version it was opened on was deleted by the rename)
            self.empty_base = ""
        if self.replacing is not None and stored is not None:
            self.replacing = replace(self.replacing, key=key, etag=stored.etag)
        else:
            self.replacing = None
        if stored is None:
            return
        stored = replace(stored, size=self.built_on.size) if self.built_on else stored
        if self.base is not None:
            self.base = stored
        if self.copy_source is not None:
            self.copy_source = stored
        if self.random is not None:
            self.random.rebase(stored)

    def read_at_hand(self, offset: int, length: int) -> bytes | None:
        """What a streaming file holds at [offset, offset + length), if those bytes are
        still here (the part being filled, kept parts); None if some were sent for good."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if self.base is not None:
            return None  # nothing written yet: the object is what it holds
        sent_end = self.planner.sent_end
        stop = min(end, sent_end)
        if offset < stop and not self.sent.covers(offset, stop):
            return None
        head = self.sent.read(offset, stop) if offset < stop else b""
        return head + (self.planner.read_buffered(max(offset, sent_end), end)
                       if end > sent_end else b"")

    async def truncate(self, size: int) -> None:
        """Change the length of the file being written (ftruncate, O_TRUNC): only this
        state changes; S3 changes when the file is committed."""
        async with self._lock:
            self._raise_if_failed()
            if self._closed:
                raise UploadFailed(f"{self.key}: truncate after the upload was completed")
            if size > self.planner.max_size:
                raise FileTooLarge(f"file would exceed {self.planner.max_size} bytes")
            shrinks = 0 < size < self.size
            if self.can_go_random and (self.prefer_random or shrinks):
                self._go_random(required=shrinks)
            if self.random is not None:
                self.random.truncate(size)
            elif size == 0 and self.planner.parts_cut:
                raise Unsupported(f"{self.key}: emptying a file whose parts are uploading")
            elif size == 0:
                self.planner.truncate_to_zero()
                self.base, self.empty_base = None, ""  # emptied: it replaces what is there
            elif size > self.size:
                await self._start_from_base()
                await self._stream(size, b"")  # a hole up to the new end
            elif size < self.size:
                raise Unsupported(f"{self.key}: shrinking a file whose parts are uploading")
            self.truncated = True

    async def close(self) -> dict:
        """Send the last part, wait for the upload to finish, return S3's answer."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    if self.error is None and self.random is not None:
                        async for part, alone in self.random.parts(
                                self.shared.part_size, copies=self.shared.part_copy):
                            await self._hand_over(part, last=alone)
                        self._closed_cleanly = True
                    elif self.error is None:
                        await self._start_from_base()  # an unchanged base is copied whole
                        if self.planner.buffered or not self.planner.parts_cut:
                            await self._hand_over(self.planner.finish(), last=True)
                        self.filling.release()  # (nothing buffered is left)
                        for part in self.sent.changed_parts():  # sent again, now changed
                            await self._hand_over(part, last=False)
                        self._closed_cleanly = True  # (no empty last part after full ones)
                except Exception as exc:
                    self._fail(exc)
                finally:
                    await self._send.aclose()  # the driver finishes, or aborts, either way
            await self._done.wait()
            self._raise_if_failed()
            assert self.result is not None
            return self.result

    async def _start_from_base(self) -> None:
        """Begin with the base object's bytes, once: copied server-side if large, so an
        append never downloads a big file; else (or without UploadPartCopy) read back."""
        base, self.base = self.base, None
        if base is None:
            return
        self.copy_source = base
        try:
            if base.size >= MIN_PART_SIZE and self.shared.part_copy:
                parts = copy_parts(base.size)
                self.planner.continue_after(parts)
                for part in parts:
                    await self._hand_over(part, last=False)
                return
            for start in range(0, base.size, step := self.shared.part_size):
                end = min(start + step, base.size)
                data = await self.shared.store.get_range(base.key, start, end, base.etag)
                await self._fill(start, data)
        except Exception as exc:  # sticky: later writes must not go on without the base
            self._fail(exc)
            raise self.error from None

    async def discard(self) -> None:
        """End an upload that received nothing worth committing: no request is made."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                await self._send.aclose()
        await self._done.wait()

    async def wait_done(self) -> None:
        """Until the upload is committed, failed or discarded."""
        await self._done.wait()

    async def abandon(self, reason: str) -> None:
        """End the upload because its file was deleted: nothing is stored, as the
        program asked; not a failure (no ERROR line, not counted as failed)."""
        self.abandoned = True
        await self.cancel(reason)

    async def cancel(self, reason: str) -> None:
        """Abort the upload (used at shutdown for files that cannot be finished)."""
        if self._done.is_set():
            return
        self._fail(UploadFailed(f"{self.key}: {reason}"))
        self._cancel_scope.cancel()
        await self._done.wait()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error
