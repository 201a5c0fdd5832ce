"""The only module that touches boto3.

`ObjectStore` is what the rest of s3mpfs needs from S3; `S3Store` implements it with
one shared boto3 client. Every blocking call runs in `trio.to_thread.run_sync` under
one CapacityLimiter, never abandoned on cancel (they all have side effects or hold a
pooled connection). Encryption, storage class, ACL, object lock and checksum request
parameters are built here and nowhere else.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import boto3
import trio
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from .config import MountConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

COPY_PART_SIZE = 256 * 1024 * 1024  # objects above this are copied part by part


@dataclass
class ObjectInfo:
    key: str
    size: int
    mtime: float  # LastModified, seconds since the epoch
    etag: str = ""
    storage_class: str = "STANDARD"
    metadata: dict[str, str] | None = None  # None: not fetched yet (listings omit it)
    sse: str | None = None
    restore: str | None = None  # the Restore header of archived objects


@dataclass
class Listing:
    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False  # more entries than the max_keys asked for


@dataclass(frozen=True)
class CompletedPart:
    number: int
    etag: str
    checksum: dict[str, str] = field(default_factory=dict)  # e.g. {"ChecksumCRC32": "..."}


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: datetime


class ObjectStore(Protocol):
    """What s3mpfs needs from S3. Keys are full keys (prefix included)."""

    async def list(self, prefix: str, delimiter: str | None = "/",
                   max_keys: int | None = None) -> Listing: ...
    async def head(self, key: str) -> ObjectInfo: ...
    async def get_range(self, key: str, start: int, end: int, etag: str = "") -> bytes: ...
    async def put_object(self, key: str, data: bytes, metadata: dict[str, str]) -> dict: ...
    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str: ...
    async def upload_part(self, key: str, upload_id: str, number: int,
                          data: bytes) -> CompletedPart: ...
    async def upload_part_copy(self, key: str, upload_id: str, number: int,
                               source: ObjectInfo, start: int, end: int) -> CompletedPart: ...
    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: Sequence[CompletedPart]) -> dict: ...
    async def abort_multipart(self, key: str, upload_id: str) -> None: ...
    async def delete(self, key: str) -> None: ...


def _checksum_algorithm(name: str) -> str | None:
    return None if name in ("off", "md5") else name.upper()


class S3Store:
    """ObjectStore on boto3. One client, shared by all worker threads."""

    def __init__(self, config: MountConfig, *, check_mode: bool = False) -> None:
        self.config = config
        self.bucket = config.bucket
        threads = config.upload_concurrency + 8  # parts in flight plus reads and metadata
        self._limiter = trio.CapacityLimiter(threads)
        self._client = make_client(config, pool=threads, check_mode=check_mode)
        self._checksum = _checksum_algorithm(config.checksum)
        # The member every UploadPart response must carry when checksums are on.
        self.checksum_response_key = f"Checksum{self._checksum}" if self._checksum else None

    # -- request parameters, built in exactly one place ---------------------------------

    def _sse_c(self, prefix: str = "") -> dict[str, Any]:
        """SSE-C headers: needed on every request that reads or writes object data;
        `prefix="CopySource"` gives the ones that unlock a copy's source."""
        if self.config.sse_c_key is None:
            return {}
        # boto3 base64-encodes the key and adds its MD5 itself.
        return {f"{prefix}SSECustomerAlgorithm": "AES256",
                f"{prefix}SSECustomerKey": self.config.sse_c_key}

    def _new_object(self, metadata: dict[str, str]) -> dict[str, Any]:
        """Parameters for requests that create an object: PutObject, CreateMultipartUpload,
        CopyObject."""
        c = self.config
        params: dict[str, Any] = {"Metadata": metadata, **self._sse_c()}
        if c.sse:
            params["ServerSideEncryption"] = c.sse
        if c.sse_kms_key_id:
            params["SSEKMSKeyId"] = c.sse_kms_key_id
        if c.sse_kms_context:
            params["SSEKMSEncryptionContext"] = c.sse_kms_context
        if c.bucket_key:
            params["BucketKeyEnabled"] = True
        if c.storage_class:
            params["StorageClass"] = c.storage_class
        if c.acl:
            params["ACL"] = c.acl
        if c.object_lock_mode:
            params["ObjectLockMode"] = c.object_lock_mode
            params["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=c.object_lock_retain_days or 0)
        if c.object_lock_legal_hold:
            params["ObjectLockLegalHoldStatus"] = "ON"
        return params

    def _body_checksum(self, data: bytes) -> dict[str, Any]:
        """Checksum parameters for a request carrying `data`; S3 verifies them. Computed
        here, in the worker thread, with zlib and hashlib, which release the GIL on large
        buffers (botocore's own pass would hold it); CRC32C is left to botocore (awscrt)."""
        name = self.config.checksum
        if name == "md5":
            digest = hashlib.md5(data).digest()  # noqa: S324 - Content-MD5 is what S3 wants
            return {"ContentMD5": base64.b64encode(digest).decode()}
        if name == "crc32":
            digest = zlib.crc32(data).to_bytes(4, "big")
        elif name in ("sha1", "sha256"):
            digest = hashlib.new(name, data).digest()
        elif self._checksum:
            return {"ChecksumAlgorithm": self._checksum}
        else:
            return {}
        return {f"Checksum{name.upper()}": base64.b64encode(digest).decode(),
                "ChecksumAlgorithm": name.upper()}  # S3 names it in its answer

    # -- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        _log_request(fn, kwargs)
        return await trio.to_thread.run_sync(
            functools.partial(fn, Bucket=self.bucket, **kwargs), limiter=self._limiter)

    async def _send(self, fn: Callable[..., dict], data: bytes, /, **kwargs: Any) -> dict:
        """A request carrying `data` with its checksum. The body is a file object, not
        bytes: botocore would concatenate bytes with the headers, copying every part in
        flight; BytesIO shares the bytes and can be rewound for retries."""
        _log_request(fn, kwargs)

        def send() -> dict:
            return fn(Bucket=self.bucket, Body=io.BytesIO(data), **kwargs,
                      **self._body_checksum(data))

        return await trio.to_thread.run_sync(send, limiter=self._limiter)

    # -- ObjectStore --------------------------------------------------------------------

    async def check_bucket(self) -> None:
        await self._call(self._client.head_bucket)

    async def list(self, prefix: str, delimiter: str | None = "/",
                   max_keys: int | None = None) -> Listing:
        listing = Listing()
        kwargs: dict[str, Any] = {"Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if max_keys:
            kwargs["MaxKeys"] = max_keys
        while True:
            page = await self._call(self._client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                listing.objects.append(ObjectInfo(
                    key=item["Key"], size=item["Size"],
                    mtime=item["LastModified"].timestamp(), etag=item.get("ETag", ""),
                    storage_class=item.get("StorageClass", "STANDARD")))
            listing.prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
            token = page.get("NextContinuationToken")
            if not token or max_keys:
                listing.truncated = bool(token)
                return listing
            kwargs["ContinuationToken"] = token

    async def head(self, key: str) -> ObjectInfo:
        resp = await self._call(self._client.head_object, Key=key, **self._sse_c())
        return ObjectInfo(
            key=key, size=resp["ContentLength"], mtime=resp["LastModified"].timestamp(),
            etag=resp.get("ETag", ""), storage_class=resp.get("StorageClass", "STANDARD"),
            metadata=resp.get("Metadata", {}), sse=resp.get("ServerSideEncryption"),
            restore=resp.get("Restore"))

    async def get_range(self, key: str, start: int, end: int, etag: str = "") -> bytes:
        """Bytes [start, end) of an object; of that very version when `etag` is given
        (a replaced object then fails with PreconditionFailed, never mixes versions)."""
        version = {"IfMatch": etag} if etag.startswith('"') else {}

        def fetch() -> bytes:
            resp = self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}", **version,
                **self._sse_c())
            return resp["Body"].read()

        return await trio.to_thread.run_sync(fetch, limiter=self._limiter)

    async def put_object(self, key: str, data: bytes, metadata: dict[str, str]) -> dict:
        return await self._send(self._client.put_object, data, Key=key,
                                **self._new_object(metadata))

    async def put_plain(self, key: str, data: bytes) -> None:
        """A small bookkeeping object: the mount's encryption, no user metadata."""
        params = self._new_object({})
        for name in ("StorageClass", "ACL", "ObjectLockMode", "ObjectLockRetainUntilDate",
                     "ObjectLockLegalHoldStatus"):
            params.pop(name, None)  # bookkeeping is deleted soon: no archive, no lock
        await self._send(self._client.put_object, data, Key=key, **params)

    async def get_object(self, key: str) -> bytes:
        def fetch() -> bytes:
            resp = self._client.get_object(Bucket=self.bucket, Key=key, **self._sse_c())
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

    async def create_multipart(self, key: str, metadata: dict[str, str]) -> str:
        params = self._new_object(metadata)
        if self._checksum:
            params["ChecksumAlgorithm"] = self._checksum
        resp = await self._call(self._client.create_multipart_upload, Key=key, **params)
        return resp["UploadId"]

    async def upload_part(self, key: str, upload_id: str, number: int,
                          data: bytes) -> CompletedPart:
        resp = await self._send(self._client.upload_part, data, Key=key, UploadId=upload_id,
                                PartNumber=number, **self._sse_c())
        checksum = {k: v for k, v in resp.items()
                    if k.startswith("Checksum") and k != "ChecksumType"}
        return CompletedPart(number, resp["ETag"], checksum)

    async def upload_part_copy(self, key: str, upload_id: str, number: int,
                               source: ObjectInfo, start: int, end: int) -> CompletedPart:
        """Copy bytes [start, end) of `source` as a part; fails if the source changed."""
        extra: dict[str, Any] = {**self._sse_c(), **self._sse_c("CopySource")}
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
                                 parts: Sequence[CompletedPart]) -> dict:
        listed = [{"PartNumber": p.number, "ETag": p.etag, **p.checksum} for p in parts]
        return await self._call(
            self._client.complete_multipart_upload, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": listed}, **self._sse_c())

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._call(self._client.abort_multipart_upload, Key=key, UploadId=upload_id)

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object, Key=key)

    async def copy_object(self, src: str, dst: str, metadata: dict[str, str] | None,
                          storage_class: str | None, size: int | None = None) -> ObjectInfo | None:
        """Server-side copy, keeping encryption and storage class; `metadata` replaces the
        object's metadata when given. An object of known size up to COPY_PART_SIZE is one
        CopyObject, and the new object's ETag and LastModified are returned; others go
        through boto3's managed copy, which copies UploadPartCopy parts in parallel (and
        returns nothing)."""
        extra = self._new_object(metadata or {})
        if metadata is None:
            del extra["Metadata"]  # keep the source's metadata
        else:
            extra["MetadataDirective"] = "REPLACE"
        if storage_class and not self.config.storage_class:
            extra["StorageClass"] = storage_class
        extra.update(self._sse_c("CopySource"))
        source = {"Bucket": self.bucket, "Key": src}
        if size is not None and size <= COPY_PART_SIZE:
            resp = await self._call(self._client.copy_object, Key=dst, CopySource=source,
                                    **extra)
            result = resp["CopyObjectResult"]
            return ObjectInfo(dst, size, result["LastModified"].timestamp(), result["ETag"])
        transfer = TransferConfig(multipart_threshold=COPY_PART_SIZE,
                                  multipart_chunksize=COPY_PART_SIZE,
                                  max_concurrency=self.config.upload_concurrency)
        await trio.to_thread.run_sync(functools.partial(
            self._client.copy, source, self.bucket, dst, ExtraArgs=extra, Config=transfer),
            limiter=self._limiter)
        return None

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


def _log_request(fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    if log.isEnabledFor(logging.DEBUG):  # names and numbers only: never keys or bodies
        log.debug("%s %s%s", fn.__name__, kwargs.get("Key", kwargs.get("Prefix", "")),
                  f" part {kwargs['PartNumber']}" if "PartNumber" in kwargs else "")


def make_client(config: MountConfig, *, pool: int = 10, check_mode: bool = False) -> Any:
    """The boto3 S3 client. `check_mode` gives short timeouts and one retry, for the
    mount-time reachability check that must answer within seconds."""
    client_config = Config(
        region_name=config.region,
        max_pool_connections=max(pool, 10),
        connect_timeout=3 if check_mode else config.connect_timeout,
        read_timeout=5 if check_mode else config.read_timeout,
        retries={"mode": "standard", "total_max_attempts": 2 if check_mode else config.retries},
        s3={"addressing_style": "path"} if config.endpoint_url else None,
        request_checksum_calculation="when_required" if config.checksum in ("off", "md5")
        else "when_supported",
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=config.endpoint_url, config=client_config)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
        "404", "NoSuchKey", "NotFound")

