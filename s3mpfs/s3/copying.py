"""Server-side copies that keep what an object carries, and degrade instead of failing.

A copy (a rename, or chmod/chown/touch storing a closed file's new attributes) must keep
every header s3mpfs does not own: content headers, other tools' user metadata, storage
class, encryption and tags. So the source is HEADed first; that also gives the ETag that
pins the copy to that very version (a source replaced meanwhile fails the copy rather
than mixing versions). Objects up to ONE_REQUEST_LIMIT are copied with one CopyObject;
larger ones, and any object whose CopyObject the server refuses (Ceph RGW answers 501
NotImplemented for SSE-KMS and SSE-C sources), with a multipart upload of UploadPartCopy
parts, which such servers do support. Where UploadPartCopy is missing too (learnt at mount
by s3/gaps.py, or from its first refusal), the copy goes through this host: ranged GETs
of the source, pinned to its ETag, each uploaded as a part, one part at a time.
"""

from __future__ import annotations

import logging

import trio

from ..errors import describe, root_cause
from ..objects import CompletedPart, ObjectInfo
from .gaps import not_implemented as refused
from .params import content_type_for, tagging
from .store import S3Store

log = logging.getLogger(__name__)

ONE_REQUEST_LIMIT = 256 * 1024 * 1024  # larger objects are copied in parallel parts
MAX_PARTS = 10_000
ABORT_TIMEOUT = 60.0


class Copier:
    def __init__(self, store: S3Store, concurrency: int, *, copies_parts: bool = True) -> None:
        self.store = store
        self.concurrency = concurrency
        self.copies_parts = copies_parts  # the server implements UploadPartCopy
        self._one_request_refused: set[str] = set()  # encryption kinds CopyObject refused

    async def move(self, src: str, dst: str,
                   metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Server-side copy, then delete: the bytes never leave S3 (a rename)."""
        return (await self.move_version(src, dst, metadata))[1]

    async def move_version(self, src: str, dst: str, metadata: dict[str, str] | None = None
                           ) -> tuple[ObjectInfo, ObjectInfo]:
        """`move`, returning the version moved (its HEAD) with the copy: whoever holds
        that version (open files) follows it to the copy."""
        source, copied = await self._head_and_copy(src, dst, metadata)
        await self.store.delete(src)
        return source, copied

    async def copy(self, src: str, dst: str,
                   metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Copy `src` to `dst` (possibly the same key); `metadata` entries replace the
        source's of the same name, the others are kept (all of s3mpfs's own are
        replaced when `metadata` is a full set of them). Returns the new object (its
        LastModified is 0 when the server did not say)."""
        return (await self._head_and_copy(src, dst, metadata))[1]

    async def _head_and_copy(self, src: str, dst: str, metadata: dict[str, str] | None
                             ) -> tuple[ObjectInfo, ObjectInfo]:
        source = await self.store.head(src)
        tags = await self.store.tags_of(source)
        params = self.store.copy_params(source, metadata or {})
        if params.get("ContentType") == content_type_for(src):  # a type named after the key
            params["ContentType"] = content_type_for(dst)  # follows it, as with s3fs
        copied = await self._copy(source, dst, params, tags)
        await self.store.put_tags(dst, tags)  # copies drop them on some servers
        return source, copied

    async def _copy(self, source: ObjectInfo, dst: str, params: dict,
                    tags: list[dict[str, str]]) -> ObjectInfo:
        src = source.key
        kind = source.headers.get("SSECustomerAlgorithm") and "SSE-C" or source.sse or ""
        if source.size <= ONE_REQUEST_LIMIT and kind not in self._one_request_refused:
            try:
                return await self.store.copy_once(source, dst, params)
            except Exception as exc:
                if not refused(exc):
                    raise
                self._one_request_refused.add(kind)
                log.warning("%s; copying %s objects part by part instead", describe(exc),
                            kind or "unencrypted")
        params = {**params, **tagging(tags)}
        if self.copies_parts:
            try:
                return await self._copy_in_parts(source, dst, params)
            except Exception as exc:
                if not refused(exc):
                    raise
                self.copies_parts = False
                log.warning("%s; copying %s to %s (and any later copy) by reading it back "
                            "and uploading it, one part at a time", describe(exc), src, dst)
        return await self._copy_by_reading(source, dst, params)

    async def _copy_by_reading(self, source: ObjectInfo, dst: str, params: dict
                               ) -> ObjectInfo:
        """A copy through this host, for servers without UploadPartCopy: ranged GETs of
        that very version of the source, each uploaded as a part before the next is read,
        so one part is in memory at a time."""
        step = max(self.store.config.part_size, -(-source.size // MAX_PARTS))
        if source.size <= step:
            data = await self.store.get_range(source.key, 0, source.size, source.etag) \
                if source.size else b""
            resp = await self.store.put_with(dst, data, params)
            return ObjectInfo(dst, source.size, 0, resp.get("ETag", ""))
        if self.store.integrity.algorithm:
            params = {**params, "ChecksumAlgorithm": self.store.integrity.algorithm}
        upload_id = await self.store.create_multipart_with(dst, params)
        parts: list[CompletedPart] = []
        try:
            for number, start in enumerate(range(0, source.size, step), 1):
                data = await self.store.get_range(
                    source.key, start, min(start + step, source.size), source.etag)
                parts.append(await self.store.upload_part(dst, upload_id, number, data))
                del data  # before the next GET
            resp = await self.store.complete_multipart(dst, upload_id, parts)
        except BaseException:
            await self._abort(source, dst, upload_id)
            raise
        return ObjectInfo(dst, source.size, 0, resp.get("ETag", ""))

    async def _copy_in_parts(self, source: ObjectInfo, dst: str, params: dict) -> ObjectInfo:
        if source.size == 0:  # a range cannot name zero bytes: write the empty object
            resp = await self.store.put_with(dst, b"", params)
            return ObjectInfo(dst, 0, 0, resp.get("ETag", ""))
        part_size = max(ONE_REQUEST_LIMIT, -(-source.size // MAX_PARTS))
        if source.size <= ONE_REQUEST_LIMIT:
            part_size = source.size  # one part, whatever its size (it is the last)
        upload_id = await self.store.create_multipart_with(dst, params)
        parts: dict[int, CompletedPart] = {}
        limiter = trio.CapacityLimiter(self.concurrency)

        async def copy_part(number: int, start: int) -> None:
            async with limiter:
                end = min(start + part_size, source.size)
                parts[number] = await self.store.upload_part_copy(
                    dst, upload_id, number, source, start, end)

        try:
            async with trio.open_nursery() as nursery:
                for number, start in enumerate(range(0, source.size, part_size), 1):
                    nursery.start_soon(copy_part, number, start)
            resp = await self.store.complete_multipart(  # onto itself: that version only
                dst, upload_id, [parts[n] for n in sorted(parts)],
                base_etag=source.etag if dst == source.key else "")
        except BaseException as exc:
            await self._abort(source, dst, upload_id)
            cause = root_cause(exc)
            if cause is not exc and isinstance(cause, Exception):
                raise cause from None  # the part's error, not trio's group around it
            raise
        return ObjectInfo(dst, source.size, 0, resp.get("ETag", ""))

    async def _abort(self, source: ObjectInfo, dst: str, upload_id: str) -> None:
        with trio.move_on_after(ABORT_TIMEOUT, shield=True):
            try:
                await self.store.abort_multipart(dst, upload_id)
            except Exception as abort_error:
                log.error("could not abort the copy of %s to %s: %s", source.key, dst,
                          describe(abort_error))
