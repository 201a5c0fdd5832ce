"""An in-memory S3 for driving `s3mpfs.write.upload.Upload` without a network.

`FakeStore` implements the `ObjectStore` calls an upload makes (create_multipart,
upload_part, upload_part_copy, complete_multipart, abort_multipart, put_object, head,
get_range) and enforces the S3 rules that matter to an uploader: part numbers 1..10,000,
every part but the last at least 5 MiB, Complete lists the parts in ascending order with
their ETags, a copy source must still have the ETag the copy names. It also lets a test

- see what happened: `calls` (method, detail) in arrival order, `calls_to(method)`;
- count parts in flight: `parts_in_flight` now, `max_parts_in_flight`, and the same in
  bytes (`part_bytes_in_flight`, `max_part_bytes_in_flight`);
- hold calls: `hold("upload_part")` returns a `trio.Event`; calls of that method wait
  (counted as in flight) until the event is set;
- make calls fail: `fail_on[(method, n)] = exception or zero-argument factory`, where n
  is the part number for upload_part and upload_part_copy, and for every other method
  which call it is (1 = the first). The failure happens after the hold, so a failing
  part is "in flight" like any other until then;
- check encryption: `sse` is the encryption S3 reports for objects it stores;
- lose Complete's answer: with `commit_then_lose_complete = True`, Complete commits the
  object and then raises NoSuchUpload, as a retried Complete does after a first attempt
  that succeeded but whose response was lost.

Every call passes a trio checkpoint (and sleeps `delay` seconds when set), so the caller's
concurrency really happens.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio
from botocore.exceptions import ClientError

from s3mpfs.objects import CompletedPart, ObjectInfo
from s3mpfs.write.parts import MAX_PARTS

MIN_PART = 5 * 1024 * 1024  # S3's minimum size of every part but the last

Failure = BaseException | Callable[[], BaseException]


def client_error(code: str, operation: str, status: int = 400, message: str = "") -> ClientError:
    """A botocore ClientError as boto3 raises it for an S3 error answer."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": message or code},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324 - S3's ETag of a plain object


def multipart_etag_of(etags: Sequence[str]) -> str:
    """S3's ETag of a multipart object, computed independently of s3mpfs.write.upload."""
    digests = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(etags)}"'  # noqa: S324


@dataclass
class StoredObject:
    data: bytes
    metadata: dict[str, str]
    etag: str
    mtime: float = 0.0


@dataclass
class PendingUpload:
    key: str
    metadata: dict[str, str]
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # number: data, ETag


class FakeStore:
    def __init__(self, *, delay: float = 0.0) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.pending: dict[str, PendingUpload] = {}  # upload id -> upload
        self.calls: list[tuple[str, object]] = []
        self.fail_on: dict[tuple[str, int], Failure] = {}
        self.commit_then_lose_complete = False
        self.sse: str | None = None
        self.delay = delay
        self.parts_in_flight = 0
        self.max_parts_in_flight = 0
        self.part_bytes_in_flight = 0
        self.max_part_bytes_in_flight = 0
        self._holds: dict[str, trio.Event] = {}
        self._call_counts: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._clock = itertools.count(1_700_000_000)

    # -- test helpers -----------------------------------------------------------------

    def hold(self, method: str) -> trio.Event:
        """Make calls of `method` wait until the returned event is set."""
        event = self._holds[method] = trio.Event()
        return event

    def calls_to(self, method: str) -> list[object]:
        return [detail for name, detail in self.calls if name == method]

    def add_object(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self.objects[key] = StoredObject(data, dict(metadata or {}), md5_etag(data),
                                         next(self._clock))

    def info(self, key: str) -> ObjectInfo:
        obj = self.objects[key]
        return ObjectInfo(key, len(obj.data), obj.mtime, etag=obj.etag,
                          metadata=dict(obj.metadata), sse=self.sse)

    # -- plumbing ---------------------------------------------------------------------

    async def _enter(self, method: str, detail: object, failure_index: int | None = None) -> None:
        """Record the call, pass a checkpoint, wait for a hold, fail if asked to."""
        self.calls.append((method, detail))
        self._call_counts[method] += 1
        index = self._call_counts[method] if failure_index is None else failure_index
        if self.delay:
            await trio.sleep(self.delay)
        else:
            await trio.sleep(0)
        hold = self._holds.get(method)
        if hold is not None:
            await hold.wait()
        failure = self.fail_on.get((method, index))
        if failure is not None:
            raise failure if isinstance(failure, BaseException) else failure()

    def _upload(self, upload_id: str, key: str, operation: str) -> PendingUpload:
        upload = self.pending.get(upload_id)
        if upload is None or upload.key != key:
            raise client_error("NoSuchUpload", operation, 404)
        return upload

    def _track_part(self, size: int, delta: int) -> None:
        self.parts_in_flight += delta
        self.part_bytes_in_flight += delta * size
        self.max_parts_in_flight = max(self.max_parts_in_flight, self.parts_in_flight)
        self.max_part_bytes_in_flight = max(self.max_part_bytes_in_flight,
                                            self.part_bytes_in_flight)

    # -- ObjectStore ------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo:
        await self._enter("head", key)
        if key not in self.objects:
            raise client_error("404", "HeadObject", 404, "Not Found")
        return self.info(key)

    async def get_range(self, key: str, start: int, end: int, etag: str = "") -> bytes:
        await self._enter("get_range", (key, start, end))
        if key not in self.objects:
            raise client_error("NoSuchKey", "GetObject", 404)
        if etag and etag != self.objects[key].etag:  # If-Match, as S3 checks it
            raise client_error("PreconditionFailed", "GetObject", 412)
        return self.objects[key].data[start:end]

    async def put_object(self, key: str, data: bytes, metadata: dict[str, str], *,
                         only_new: bool = False, replacing: ObjectInfo | None = None,
                         content_type: str | None = None, base_etag: str = "") -> dict:
        await self._enter("put_object", (key, len(data)))
        self._check_conditions(key, "PutObject", only_new, base_etag)
        self.add_object(key, bytes(data), metadata)
        answer = {"ETag": self.objects[key].etag}
        if self.sse:
            answer["ServerSideEncryption"] = self.sse
        return answer

    def _check_conditions(self, key: str, request: str, only_new: bool,
                          base_etag: str) -> None:
        """If-None-Match: * and If-Match, as S3 checks them."""
        if only_new and key in self.objects:
            raise client_error("PreconditionFailed", request, 412)
        if base_etag and (key not in self.objects or self.objects[key].etag != base_etag):
            raise client_error("PreconditionFailed", request, 412)

    async def create_multipart(self, key: str, metadata: dict[str, str],
                               replacing: ObjectInfo | None = None) -> str:
        await self._enter("create_multipart", key)
        upload_id = f"upload-{next(self._ids)}"
        self.pending[upload_id] = PendingUpload(key, dict(metadata))
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int,
                          data: bytes) -> CompletedPart:
        self._track_part(len(data), +1)
        try:
            await self._enter("upload_part", number, failure_index=number)
        finally:
            self._track_part(len(data), -1)
        upload = self._upload(upload_id, key, "UploadPart")
        if not 1 <= number <= MAX_PARTS:
            raise client_error("InvalidArgument", "UploadPart", 400, "bad part number")
        etag = md5_etag(bytes(data))
        upload.parts[number] = (bytes(data), etag)
        return CompletedPart(number, etag)

    async def upload_part_copy(self, key: str, upload_id: str, number: int,
                               source: ObjectInfo, start: int, end: int) -> CompletedPart:
        self._track_part(0, +1)
        try:
            await self._enter("upload_part_copy", (number, source.key, start, end),
                              failure_index=number)
        finally:
            self._track_part(0, -1)
        upload = self._upload(upload_id, key, "UploadPartCopy")
        obj = self.objects.get(source.key)
        if obj is None:
            raise client_error("NoSuchKey", "UploadPartCopy", 404)
        if source.etag and source.etag != obj.etag:
            raise client_error("PreconditionFailed", "UploadPartCopy", 412)
        if not 0 <= start < end <= len(obj.data):
            raise client_error("InvalidRange", "UploadPartCopy", 416)
        data = obj.data[start:end]
        etag = md5_etag(data)
        upload.parts[number] = (data, etag)
        return CompletedPart(number, etag)

    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: Sequence[CompletedPart], *,
                                 only_new: bool = False, base_etag: str = "") -> dict:
        await self._enter("complete_multipart", [p.number for p in parts])
        self._check_conditions(key, "CompleteMultipartUpload", only_new, base_etag)
        upload = self._upload(upload_id, key, "CompleteMultipartUpload")
        numbers = [p.number for p in parts]
        if not numbers or numbers != sorted(set(numbers)):
            raise client_error("InvalidPartOrder", "CompleteMultipartUpload")
        for part in parts:
            stored = upload.parts.get(part.number)
            if stored is None or stored[1] != part.etag:
                raise client_error("InvalidPart", "CompleteMultipartUpload")
        if any(len(upload.parts[n][0]) < MIN_PART for n in numbers[:-1]):
            raise client_error("EntityTooSmall", "CompleteMultipartUpload")
        data = b"".join(upload.parts[n][0] for n in numbers)
        etag = multipart_etag_of([upload.parts[n][1] for n in numbers])
        self.objects[key] = StoredObject(data, upload.metadata, etag, next(self._clock))
        del self.pending[upload_id]
        if self.commit_then_lose_complete:
            raise client_error("NoSuchUpload", "CompleteMultipartUpload", 404)
        return {"ETag": etag, "Key": key}

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._enter("abort_multipart", upload_id)
        self._upload(upload_id, key, "AbortMultipartUpload")
        del self.pending[upload_id]

    async def delete(self, key: str) -> None:
        await self._enter("delete", key)
        self.objects.pop(key, None)
