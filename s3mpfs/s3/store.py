"""The only module that calls boto3 (s3/client.py makes its client; s3/routing.py sends
some requests through awscrt).

`ObjectStore` is what the rest of s3mpfs needs from S3; `S3Store` implements it with
one shared boto3 client. Every blocking call runs in `trio.to_thread.run_sync` under
one CapacityLimiter, never abandoned on cancel (they all have side effects or hold a
pooled connection). Encryption, storage class, ACL, object lock and tag parameters are
built by `params.RequestParams`, checksums by `integrity.Integrity`, and nowhere else.
"""

from __future__ import annotations

import functools
import io
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio
from botocore.exceptions import ClientError

from ..config import MountConfig
from ..errors import UploadFailed, s3_error_code
from ..objects import CompletedPart, Listing, ObjectInfo, PendingUpload
from . import conditions
from .client import make_client
from .conditions import Conditions
from .integrity import ATTEMPTS, ChecksumIgnored, Corrupted, Integrity, Sent
from .params import COPIED_HEADERS, RequestParams, content_type_for, tagging
from .ranged import RangedGets
from .recent import RecentBodies
from .routing import CrtRoute
from .stats import MountStats

log = logging.getLogger(__name__)
T = TypeVar("T")

# Error codes of a server that verified a body's checksum and found it wrong.
_BAD_DIGEST = {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch",
               "XAmzContentSHA256Mismatch"}
PROBE_DIR = ".s3mpfs/"  # under the mount's prefix, hidden from the mount
DIRECTORY_TYPE = "application/x-directory"  # the Content-Type of `dir/` markers, as s3fs


class S3Store:
    """ObjectStore on boto3. One client, shared by all worker threads."""

    def __init__(self, config: MountConfig, *, check_mode: bool = False,
                 stats: MountStats | None = None, session: Any = None) -> None:
        self.config = config
        self.stats = stats or MountStats()  # every request is counted here
        self.bucket = config.bucket
        self.params = RequestParams(config)  # every request parameter is built there
        threads = config.upload_concurrency + 8  # parts in flight plus reads and metadata
        self._limiter = trio.CapacityLimiter(threads)
        self._client = make_client(config, pool=threads, check_mode=check_mode,
                                   session=session)
        self.integrity = Integrity(config.checksum)
        self.conditions = Conditions()  # what the server honours, per request (probed)
        self._tags_at_completion: dict[str, list[dict[str, str]]] = {}  # by upload id
        # HEAD, listings and small GETs and PUTs go through awscrt (s3/routing.py), and
        # bodies over https under this same limiter; None: everything through boto3.
        self._crt = CrtRoute.create(self._client, config, self.stats, self._limiter,
                                    check_mode=check_mode)
        self._ranged = RangedGets(self._client, self.bucket, self._limiter, self.stats,
                                  self._crt, config.retries, self.params.sse_c)
        self.recent = RecentBodies()  # small bodies stored through this mount, by ETag

    @property
    def conditional_create(self) -> bool:
        """Whether the server alone keeps a new file from replacing an object created
        meanwhile, whatever its size (If-None-Match: * on PutObject and Complete)."""
        return self.conditions.put_if_none_match and self.conditions.complete_if_none_match

    async def check_before(self, key: str, request: str, *, only_new: bool = False,
                           base_etag: str = "") -> None:
        """The fallback for a condition the server ignores: HEAD the key right before the
        request and refuse it (PreconditionFailed, as the server would) if an object
        appeared (`only_new`) or the version it is built on changed (`base_etag`)."""
        try:
            now: str | None = (await self.head(key)).etag
        except Exception as exc:
            if not is_not_found(exc):
                raise
            now = None
        if (only_new and now is not None) or (base_etag and now != base_etag):
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message":
                               "checked by a HEAD right before the request"},
                               "ResponseMetadata": {"HTTPStatusCode": 412}}, request)

    async def _conditions(self, key: str, request: str, if_none_match: bool, if_match: bool,
                          only_new: bool, base_etag: str) -> dict[str, str]:
        """The condition parameters of a request that creates a version of `key`, after
        the check that stands in for those the server ignores."""
        params: dict[str, str] = {}
        if only_new and if_none_match:
            params["IfNoneMatch"] = "*"
        base = base_etag if base_etag.startswith('"') else ""
        if base and if_match:
            params["IfMatch"] = base
        check_new, check_base = only_new and not if_none_match, "" if if_match else base
        if check_new or check_base:
            await self.check_before(key, request, only_new=check_new, base_etag=check_base)
        return params

    async def tags_of(self, source: ObjectInfo | None) -> list[dict[str, str]]:
        """`source`'s tags (one request, only if its HEAD counted some)."""
        if source is None or not source.headers.get("TagCount"):
            return []
        resp = await self._call(self._client.get_object_tagging, Key=source.key)
        return resp.get("TagSet", [])

    async def put_tags(self, key: str, tags: list[dict[str, str]]) -> None:
        """Set an object's tags again once it exists. New versions and copies carry them
        from the start where the server keeps them (the Tagging parameter, CopyObject's
        default); some servers (Ceph RGW) drop them on copies and ignore Tagging on
        multipart uploads, hence this second request, for tagged objects only."""
        if tags:
            await self._call(self._client.put_object_tagging, Key=key,
                             Tagging={"TagSet": tags})

    # -- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        _log_request(fn, kwargs)
        return await trio.to_thread.run_sync(
            functools.partial(self.stats.counted(fn), Bucket=self.bucket, **kwargs),
            limiter=self._limiter)

    async def _send(self, fn: Callable[..., dict], data: bytes, what: str, /,
                    **kwargs: Any) -> dict:
        """A request carrying `data` with its checksum, sent again (at most ATTEMPTS times)
        while the answer shows the bytes were not stored as sent. The body is a file
        object, not bytes: botocore would concatenate bytes with the headers, copying
        every part in flight; BytesIO shares the bytes and can be rewound for retries."""
        _log_request(fn, kwargs)

        def send() -> tuple[dict, Sent]:
            sent = self.integrity.prepare(data)
            resp = self.stats.counted(fn, len(data))(
                Bucket=self.bucket, Body=io.BytesIO(data), **kwargs, **sent.params)
            return resp, sent

        for attempt in range(1, ATTEMPTS + 1):
            try:
                answer = None
                if self._crt is not None and self._crt.sends(fn.__name__, len(data)):
                    answer = await self._crt.send(fn.__name__, data, kwargs, self.integrity)
                if answer is None:
                    answer = await trio.to_thread.run_sync(send, limiter=self._limiter)
                resp, sent = answer
                self.integrity.check(resp, resp.get("ETag", ""), sent, what)
                return resp
            except ChecksumIgnored:
                if not self.integrity.fall_back(f"{what} came back without its checksum"):
                    raise
                if fn.__name__ == "put_object":
                    return resp  # stored; checked by ETag from now on (if MD5s)
            except Corrupted as exc:
                log.warning("%s (attempt %d of %d)", exc, attempt, ATTEMPTS)
                if fn.__name__ == "put_object":
                    kwargs.pop("IfNoneMatch", None)  # replace our own bad object only
                    kwargs["IfMatch"] = resp.get("ETag", "")
            except ClientError as exc:
                if s3_error_code(exc) not in _BAD_DIGEST:
                    raise
                log.warning("%s: the server found the bytes damaged in transit (%s); "
                            "sending them again (attempt %d of %d)", what,
                            s3_error_code(exc), attempt, ATTEMPTS)
        raise UploadFailed(f"{what}: the bytes reached the server damaged {ATTEMPTS} times")

    # -- ObjectStore --------------------------------------------------------------------

    async def check_bucket(self) -> None:
        await self._call(self._client.head_bucket)

    async def list(self, prefix: str, delimiter: str | None = "/",
                   max_keys: int | None = None, start_after: str | None = None) -> Listing:
        listing = Listing()
        kwargs: dict[str, Any] = {"Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if max_keys:
            kwargs["MaxKeys"] = max_keys
        while True:
            page = None
            if self._crt is not None:
                page = await self._crt.list_page(kwargs)
            if page is None:
                page = await self._call(self._client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                listing.objects.append(ObjectInfo(
                    key=item["Key"], size=item["Size"],
                    mtime=item["LastModified"].timestamp(), etag=item.get("ETag", ""),
                    # one string per class, not per key: cached entries keep it
                    storage_class=sys.intern(item.get("StorageClass", "STANDARD"))))
            listing.prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
            token = page.get("NextContinuationToken")
            if not token or max_keys:
                listing.truncated = bool(token)
                return listing
            kwargs["ContinuationToken"] = token

    async def head(self, key: str) -> ObjectInfo:
        resp = None
        if self._crt is not None:
            resp = await self._crt.call("HeadObject", "HEAD", key, self.params.sse_c())
        if resp is None:
            resp = await self._call(self._client.head_object, Key=key, **self.params.sse_c())
        headers = {name: resp[name] for name in (*COPIED_HEADERS, "SSEKMSKeyId",
                                                  "BucketKeyEnabled", "SSECustomerAlgorithm",
                                                  "TagCount") if resp.get(name)}
        return ObjectInfo(
            key=key, size=resp["ContentLength"], mtime=resp["LastModified"].timestamp(),
            etag=resp.get("ETag", ""), storage_class=resp.get("StorageClass", "STANDARD"),
            metadata=resp.get("Metadata", {}), sse=resp.get("ServerSideEncryption"),
            restore=resp.get("Restore"), headers=headers)

    async def get_range(self, key: str, start: int, end: int, etag: str = "") -> bytes:
        """Bytes [start, end) of an object, all of one version: `etag`'s when given (a
        replaced object then fails with PreconditionFailed, never mixes versions), else
        the first answer's. A body that breaks off is resumed (s3/ranged.py). A version
        this mount stored a moment ago is read from what it sent (s3/recent.py).
        With `etag`, all of [start, end) is returned or nothing: who names a version
        knows its size, so a version that ends before `end` is not the one believed (a
        stale size beside a newer ETag) and fails with PreconditionFailed too, rather
        than come back short and be taken for the whole."""
        data = self.recent.get(key, start, end, etag)
        if data is None:
            data = await self._ranged.get(key, start, end, etag)
        if etag and len(data) < end - start:
            raise ClientError({"Error": {"Code": "PreconditionFailed", "Message":
                                         f"version {etag} ends at byte {start + len(data)}, "
                                         f"not {end}"},
                               "ResponseMetadata": {"HTTPStatusCode": 412}}, "GetObject")
        return data

    async def put_object(self, key: str, data: bytes, metadata: dict[str, str], *,
                         only_new: bool = False, replacing: ObjectInfo | None = None,
                         content_type: str | None = None, base_etag: str = "") -> dict:
        """Store a whole object. `only_new`: fail with PreconditionFailed rather than
        replace an object someone else created meanwhile. `base_etag`: the version this
        one is built on (an append): fail rather than replace any other.
        `replacing`: the version it replaces, whose headers and tags it keeps.
        `content_type`: unless the replaced version has one."""
        c = self.conditions
        condition = await self._conditions(key, "PutObject", c.put_if_none_match,
                                           c.put_if_match, only_new, base_etag)
        params = self.params.new_object(metadata, replacing)
        params.setdefault("ContentType", content_type or content_type_for(key))
        tags = await self.tags_of(replacing)
        resp = await self._send(self._client.put_object, data, f"PutObject of {key}",
                                Key=key, **params, **tagging(tags), **condition)
        self.recent.stored(key, resp.get("ETag", ""), data)
        await self.put_tags(key, tags)
        return resp

    async def put_plain(self, key: str, data: bytes) -> None:
        await self._send(self._client.put_object, data, f"PutObject of {key}", Key=key,
                         **self.params.plain())

    async def probe(self, prefix: str,
                    alongside: Callable[[], Awaitable[None]] | None = None) -> None:
        """Learn, with a small object of our own under PREFIX.s3mpfs/, what the server
        verifies (flexible checksums, ETags that are MD5s) and which conditions each
        request honours (s3/conditions.py). Raises ChecksumIgnored if the server ignores
        a checksum the user chose explicitly. `alongside` (another probe, which needs
        the checksum settled) runs at the same time as the conditions'."""
        key = f"{prefix}{PROBE_DIR}probe-{uuid.uuid4().hex}"
        body = uuid.uuid4().bytes * 4
        try:
            resp = await self._probe_put(key, body)
        except ClientError as exc:
            # A server that refuses the flexible checksum `auto` chose (400 or 501, not
            # just ignores it) gets Content-MD5, which every server takes.
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status not in (400, 501) or not self.integrity.algorithm or \
                    not self.integrity.fall_back(f"a test upload with its checksum was "
                                                 f"refused ({s3_error_code(exc)})"):
                raise
            resp = await self._probe_put(key, body)
        try:
            wanted = self.integrity.response_key
            self.integrity.learn(echoes=wanted is None or wanted in resp,
                                 etag=resp.get("ETag", ""), body=body)
            async with trio.open_nursery() as nursery:
                if alongside is not None:
                    nursery.start_soon(alongside)
                self.conditions = await conditions.probe(self, key, body)
            self.conditions.log_fallbacks()
        finally:
            with trio.CancelScope(shield=True):
                await self._call(self._client.delete_object, Key=key)

    async def _probe_put(self, key: str, body: bytes) -> dict:
        sent = self.integrity.prepare(body)
        return await self._call(self._client.put_object, Key=key, Body=body,
                                **self.params.plain(), **sent.params)

    async def get_object(self, key: str) -> bytes:
        def fetch() -> bytes:
            resp = self._client.get_object(Bucket=self.bucket, Key=key, **self.params.sse_c())
            return resp["Body"].read()

        return await trio.to_thread.run_sync(fetch, limiter=self._limiter)

    async def uploaded_so_far(self, key: str, upload_id: str) -> tuple[int, int]:
        """(parts, bytes) already uploaded to a pending multipart upload."""
        parts = size = 0
        kwargs: dict[str, Any] = {"Key": key, "UploadId": upload_id}
        while True:
            page = await self._call(self._client.list_parts, **kwargs)
            for part in page.get("Parts", []):
                parts += 1
                size += part["Size"]
            if not page.get("IsTruncated"):
                return parts, size
            kwargs["PartNumberMarker"] = page["NextPartNumberMarker"]

    async def create_multipart(self, key: str, metadata: dict[str, str],
                               replacing: ObjectInfo | None = None) -> str:
        params = self.params.new_object(metadata, replacing)
        params.setdefault("ContentType", content_type_for(key))
        if self.integrity.algorithm:
            params["ChecksumAlgorithm"] = self.integrity.algorithm
        tags = await self.tags_of(replacing)
        upload_id = await self.create_multipart_with(key, {**params, **tagging(tags)})
        if tags:
            self._tags_at_completion[upload_id] = tags
        return upload_id

    async def create_multipart_with(self, key: str, params: dict[str, Any]) -> str:
        """CreateMultipartUpload with parameters built by the caller (copies)."""
        resp = await self._call(self._client.create_multipart_upload, Key=key, **params)
        return resp["UploadId"]

    async def upload_part(self, key: str, upload_id: str, number: int,
                          data: bytes) -> CompletedPart:
        resp = await self._send(self._client.upload_part, data, f"part {number} of {key}",
                                Key=key, UploadId=upload_id, PartNumber=number,
                                **self.params.sse_c())
        checksum = {k: v for k, v in resp.items()
                    if k.startswith("Checksum") and k != "ChecksumType"}
        return CompletedPart(number, resp["ETag"], checksum)

    async def upload_part_copy(self, key: str, upload_id: str, number: int,
                               source: ObjectInfo, start: int, end: int) -> CompletedPart:
        """Copy bytes [start, end) of `source` as a part; fails if the source changed."""
        extra: dict[str, Any] = {**self.params.sse_c(), **self.params.sse_c("CopySource")}
        if source.etag:
            extra["CopySourceIfMatch"] = source.etag
        resp = await self._call(
            self._client.upload_part_copy, Key=key, UploadId=upload_id, PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": source.key},
            CopySourceRange=f"bytes={start}-{end - 1}", **extra)
        result = resp["CopyPartResult"]
        checksum = {k: v for k, v in result.items()
                    if k.startswith("Checksum") and k != "ChecksumType"}
        return CompletedPart(number, result["ETag"], checksum)

    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: Sequence[CompletedPart], *,
                                 only_new: bool = False, base_etag: str = "") -> dict:
        """Complete an upload; `only_new` and `base_etag` as for put_object."""
        listed = [{"PartNumber": p.number, "ETag": p.etag, **p.checksum} for p in parts]
        c = self.conditions
        condition = await self._conditions(key, "CompleteMultipartUpload",
                                           c.complete_if_none_match, c.complete_if_match,
                                           only_new, base_etag)
        resp = await self._call(
            self._client.complete_multipart_upload, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": listed}, **self.params.sse_c(), **condition)
        self.recent.forget(key)  # a new version, not kept: free the one before
        await self.put_tags(key, self._tags_at_completion.pop(upload_id, []))
        return resp

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self._tags_at_completion.pop(upload_id, None)
        await self._call(self._client.abort_multipart_upload, Key=key, UploadId=upload_id)

    async def delete(self, key: str) -> None:
        self.recent.forget(key)
        await self._call(self._client.delete_object, Key=key)

    def copy_params(self, source: ObjectInfo, metadata: dict[str, str]) -> dict[str, Any]:
        """Parameters for a copy of `source` (HEADed) whose user metadata gets the
        entries of `metadata` (see params.RequestParams.copy)."""
        return self.params.copy(source, metadata)

    async def copy_once(self, source: ObjectInfo, dst: str,
                        params: dict[str, Any]) -> ObjectInfo:
        """One CopyObject of that very version of `source` (up to 5 GiB)."""
        resp = await self._call(
            self._client.copy_object, Key=dst,
            CopySource={"Bucket": self.bucket, "Key": source.key},
            CopySourceIfMatch=source.etag, MetadataDirective="REPLACE",
            **params, **self.params.sse_c("CopySource"))
        result = resp["CopyObjectResult"]
        # Quoted, as listings and HEADs show it (Ceph RGW's CopyObjectResult has no quotes):
        # else the mount took its own copy for another client's version.
        etag = result["ETag"] if result["ETag"].startswith('"') else f'"{result["ETag"]}"'
        body = self.recent.body(source.key, source.etag)
        if body is not None:  # a rename of a file this mount just stored
            self.recent.stored(dst, etag, body)
        else:
            self.recent.forget(dst)
        return ObjectInfo(dst, source.size, result["LastModified"].timestamp(), etag)

    async def put_with(self, key: str, data: bytes, params: dict[str, Any]) -> dict:
        """PutObject with parameters built by the caller (copies of empty objects)."""
        return await self._send(self._client.put_object, data, f"PutObject of {key}",
                                Key=key, **params)

    async def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        uploads: list[PendingUpload] = []
        kwargs: dict[str, Any] = {"Prefix": prefix}
        while True:
            page = await self._call(self._client.list_multipart_uploads, **kwargs)
            uploads.extend(PendingUpload(u["Key"], u["UploadId"], u["Initiated"])
                           for u in page.get("Uploads", []))
            if not page.get("IsTruncated"):
                return uploads
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")

    async def put_unchecked(self, key: str, params: dict[str, Any], body: bytes = b"") -> dict:
        """A PutObject with these parameters and no checksum: the mount-time checks of
        what the server accepts and implements (s3/optioncheck.py, s3/gaps.py)."""
        return await self._call(self._client.put_object, Key=key, Body=body, **params)


def _log_request(fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    if log.isEnabledFor(logging.DEBUG):  # object keys and numbers: never secrets or bodies
        log.debug("%s %s%s", fn.__name__, kwargs.get("Key", kwargs.get("Prefix", "")),
                  f" part {kwargs['PartNumber']}" if "PartNumber" in kwargs else "")


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
        "404", "NoSuchKey", "NotFound")

