"""The S3 side of one file's upload: handing parts over, the driver and its requests.

`Upload` (write/upload.py) is a `Sending`. Every full part is handed over an unbuffered
channel to the upload's driver task, which lives in the mount's nursery. The driver
charges the part against the mount-wide `MemoryBudget` (this is where `write()` waits
when too much is in flight), creates the multipart upload on the first part, and starts
a worker per part in its own nursery. Worker concurrency is bounded by one mount-wide
CapacityLimiter. Any failure cancels the sibling workers, aborts the upload under a
shield, and sticks: later writes and the final close() raise EIO.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..errors import S3mpfsError, UploadFailed, describe, root_cause, s3_error_code
from ..objects import CompletedPart, ObjectInfo
from ..s3.integrity import multipart_etag
from .committed import check_committed, is_committed
from .parts import Part

if TYPE_CHECKING:
    from .budget import Reservation
    from .resend import SentParts
    from .rewrite import RandomWrites

log = logging.getLogger(__name__)

ABORT_TIMEOUT = 60.0  # seconds an abort may take before we give up and log it


class Sending:
    """The S3 side of an `Upload` (its base class): handing parts over, the driver, its
    requests, the abort, and the sticky failure. The state is the upload's, set up by
    `Upload.__init__`; what this side reads and sets is declared here, plus `shared`
    (write/upload.py's `UploadShared`: store, budget, part_limiter, registry,
    expected_sse, uploads, stats)."""

    key: str
    only_new: bool
    replacing: ObjectInfo | None
    copy_source: ObjectInfo | None
    empty_base: str
    abandoned: bool
    upload_id: str | None
    error: S3mpfsError | None
    result: dict | None
    parts: dict[int, CompletedPart]
    random: RandomWrites | None
    sent: SentParts
    filling: Reservation
    size: int  # (a property of Upload)
    _metadata: Callable[[], dict[str, str]]
    _sending: dict[int, trio.Event]
    _send: trio.MemorySendChannel[tuple[Part, bool, int]]
    _receive: trio.MemoryReceiveChannel[tuple[Part, bool, int]]
    _done: trio.Event
    _closed_cleanly: bool
    _cancel_scope: trio.CancelScope

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

    @property
    def _built_on(self) -> str:
        """The ETag of the version whose bytes this one carries (appends, random writes),
        or of the empty one it was opened on: committing must not replace any other
        (another host's write since)."""
        return self.copy_source.etag if self.copy_source is not None else self.empty_base

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
