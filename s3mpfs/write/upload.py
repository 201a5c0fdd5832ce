"""One file's upload, from its first write to CompleteMultipartUpload (or abort).

The writer (FUSE WRITE requests) feeds the planner; every full part is handed over an
unbuffered channel to the upload's driver task, which lives in the mount's nursery.
The driver charges the part against the mount-wide `MemoryBudget` (this is where
`write()` waits when too much is in flight), creates the multipart upload on the first
part, and starts a worker per part in its own nursery. Worker concurrency is bounded by
one mount-wide CapacityLimiter. Any failure cancels the sibling workers, aborts the
upload under a shield, and sticks: later writes and the final close() raise EIO.
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
    describe,
    root_cause,
    s3_error_code,
)
from ..objects import CompletedPart, ObjectInfo, ObjectStore
from ..s3.integrity import multipart_etag
from .budget import MemoryBudget, Reservation
from .committed import check_committed, is_committed
from .parts import Part, PartPlanner, copy_parts
from .resend import SentParts
from .rewrite import RandomWrites
from .spool import SpoolSpace

if TYPE_CHECKING:
    from ..s3.stats import MountStats
    from .registry import UploadRegistry

log = logging.getLogger(__name__)

ABORT_TIMEOUT = 60.0  # seconds an abort may take before we give up and log it


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


class Upload:
    """Streams one file to one key. States: writing -> closing -> done | failed."""

    def __init__(self, shared: UploadShared, key: str,
                 metadata: Callable[[], dict[str, str]], base: ObjectInfo | None = None,
                 *, only_new: bool = False, replacing: ObjectInfo | None = None,
                 prefer_random: bool = False) -> None:
        """`base`: an existing object this upload extends (appends go after its bytes).
        `only_new`: the key held no object when the file was created; committing must
        not replace one another client created since (where the server can tell).
        `replacing`: the version this one replaces (HEADed): its headers are kept.
        `prefer_random`: opened O_RDWR: spool from the first write (random mode) so that
        every byte stays at hand for reads and rewrites."""
        self.shared = shared
        self.key = key
        self.base = base
        self.only_new = only_new
        self.replacing = replacing
        self.copy_source: ObjectInfo | None = None  # what copy parts read (with its ETag)
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
        self._send, self._receive = trio.open_memory_channel[tuple[Part, bool, int]](0)
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
                self.base = None
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

    async def _hand_over(self, part: Part, last: bool) -> None:
        """Give a part to the driver with its charge against the mount's memory budget:
        the reservation of the part being filled, or (parts not filled here) one taken
        now, waiting for room: the backpressure that makes write() block."""
        charge = self.filling.hand(len(part)) if part.data else 0
        charge = charge or await self.shared.budget.acquire(len(part))
        try:
            await self._send.send((part, last, charge))
        except BaseException:
            self.shared.budget.release(charge)
            if isinstance(self.error, UploadFailed):
                raise self.error from None
            raise

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    @property
    def _built_on(self) -> str:
        """The ETag of the version whose bytes this one carries (appends, random writes):
        committing must not replace any other (another host's write since)."""
        return self.copy_source.etag if self.copy_source is not None else ""

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            exc = root_cause(exc)
            changed = s3_error_code(exc) in ("PreconditionFailed", "412", "NoSuchKey")
            if self.only_new and changed:
                exc = UploadFailed(f"{self.key}: another client created this object while "
                                   "the file was being written; it was not replaced")
            elif self._built_on and changed:
                exc = UploadFailed(f"{self.key}: another client changed or deleted this "
                                   "object while the file was being written; this version, "
                                   "built on the one before, was not stored (it would have "
                                   "dropped their change)")
            self.error = exc if isinstance(exc, UploadFailed) else UploadFailed(
                f"{self.key}: {describe(exc)}")

    # -- the driver, a task in the mount's nursery ------------------------------------

    async def _drive(self) -> None:
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as workers:
                    async for part, last, charge in self._receive:
                        if last and self.upload_id is None:
                            workers.start_soon(self._put_whole, part, charge)
                            break
                        if self.upload_id is None:
                            try:
                                await self._create()
                            except BaseException:  # (cancelled: abandoned, shutdown)
                                self.shared.budget.release(charge)  # no worker has it
                                raise
                        # A part sent again starts once its earlier upload has ended, so
                        # that S3 keeps the new bytes.
                        earlier = self._sending.get(part.number)
                        ended = self._sending[part.number] = trio.Event()
                        workers.start_soon(self._upload_part, part, charge, earlier, ended)
                        del part  # the worker holds it: not this loop while it waits
                if self.upload_id is not None and self.error is None and self._closed_cleanly:
                    await self._complete()
        except Exception as exc:  # any failure of this one file; the mount goes on
            self._fail(exc)
        finally:
            self._receive.close()
            if self.random is not None:
                self.random.close()
            self.sent.close()
            if self.upload_id is not None and self.error is None:  # cancelled from outside
                self._fail(UploadFailed(f"{self.key}: interrupted before completion"))
            if self.error is not None:
                await self._abort()
            self.shared.uploads.discard(self)
            if self.shared.stats is not None:
                self.shared.stats.upload_ended(self)
            self.filling.release()  # (no await between this and done: see _reserve)
            self._done.set()

    async def _create(self) -> None:
        self.upload_id = await self.shared.store.create_multipart(
            self.key, self._metadata(), self.replacing)
        if self.shared.registry is not None:
            try:
                await self.shared.registry.register(self.key, self.upload_id)
            except Exception as exc:  # the upload itself is fine; only a crash would orphan it
                log.warning("could not register upload of %s: %s", self.key, describe(exc))

    async def _put_whole(self, part: Part, charge: int) -> None:
        try:
            self.result = await self.shared.store.put_object(
                self.key, part.data, self._metadata(), only_new=self.only_new,
                replacing=self.replacing, base_etag=self._built_on)
        finally:
            self.shared.budget.release(charge)
        expected, reported = self.shared.expected_sse, self.result.get("ServerSideEncryption")
        if expected is not None and reported is not None and reported != expected:
            with trio.CancelScope(shield=True):
                await self.shared.store.delete(self.key)  # just written by this PUT
            raise UploadFailed(f"{self.key}: S3 reports encryption {reported}, not "
                               f"{expected}; the object was deleted")

    async def _upload_part(self, part: Part, charge: int, earlier: trio.Event | None,
                           ended: trio.Event) -> None:
        try:
            if earlier is not None:
                await earlier.wait()
            async with self.shared.part_limiter:
                assert self.upload_id is not None
                if part.copy_length:
                    assert self.copy_source is not None
                    done = await self.shared.store.upload_part_copy(
                        self.key, self.upload_id, part.number, self.copy_source,
                        part.offset, part.offset + part.copy_length)
                else:
                    done = await self.shared.store.upload_part(
                        self.key, self.upload_id, part.number, part.data)
            if not done.etag:
                raise UploadFailed(f"{self.key}: part {part.number} came back without an ETag")
            self.parts[part.number] = done
        finally:
            ended.set()
            self.shared.budget.release(charge)

    async def _complete(self) -> None:
        assert self.upload_id is not None
        parts = [self.parts[n] for n in sorted(self.parts)]
        if [p.number for p in parts] != list(range(1, len(parts) + 1)):
            raise UploadFailed(f"{self.key}: parts missing before completion")
        try:
            self.result = await self.shared.store.complete_multipart(
                self.key, self.upload_id, parts, only_new=self.only_new,
                base_etag=self._built_on)
        except Exception as exc:
            # A retried Complete whose first attempt committed answers NoSuchUpload (or,
            # being conditional, PreconditionFailed): the object tells whether it is ours.
            if s3_error_code(exc) not in ("NoSuchUpload", "PreconditionFailed", "412") \
                    or not await is_committed(self.shared.store, self.key, parts):
                raise
            self.result = {"ETag": multipart_etag(parts)}
        upload_id, self.upload_id = self.upload_id, None  # completed: nothing to abort
        await self._unregister(upload_id)
        await check_committed(self.shared.store, self.key, self.result, parts, self.size,
                              self.shared.expected_sse)

    async def _unregister(self, upload_id: str) -> None:
        if self.shared.registry is not None:
            await self.shared.registry.unregister(upload_id)

    async def _abort(self) -> None:
        """Abort the multipart upload, if any, shielded from cancellation and bounded.
        A failure leaves one ERROR line; an abandoned upload (its file was deleted) is
        what the program asked for, and only an INFO line."""
        report = log.info if self.abandoned else log.error
        what = ("%s was deleted while being written: nothing stored" if self.abandoned
                else "upload of %s failed: %s")
        args = (self.key,) if self.abandoned else (self.key, self.error)
        if self.upload_id is None:
            report(what, *args)
            return
        upload_id, self.upload_id = self.upload_id, None
        with trio.move_on_after(ABORT_TIMEOUT, shield=True) as scope:
            try:
                await self.shared.store.abort_multipart(self.key, upload_id)
                await self._unregister(upload_id)
                report(what + "; multipart upload aborted", *args)
                return
            except Exception as exc:
                log.error(what + "; abort failed too (%s): the next mount's sweep or "
                          "`s3mpfs cleanup` will remove it", *args, describe(exc))
                return
        if scope.cancelled_caught:
            log.error(what + "; abort timed out", *args)
