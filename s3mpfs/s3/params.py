"""Request parameters, built in exactly one place.

`RequestParams` turns the mount's configuration and what a HEAD told of an object into the
boto3-style keyword arguments of the requests that create, replace or copy objects:
encryption (SSE-S3, SSE-KMS, SSE-C), storage class, ACL, Object Lock, user metadata, the
content headers a new version or a copy keeps, and tags. No I/O: `s3/store.py` sends what is
built here (through boto3, or through awscrt where `s3/routing.py` can).
"""

from __future__ import annotations

import mimetypes
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..config import MountConfig
from .metadata import OWNED

if TYPE_CHECKING:
    from ..objects import ObjectInfo

# Headers of an object that a copy must carry over (HeadObject names = request names).
COPIED_HEADERS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding",
                  "ContentLanguage", "Expires", "WebsiteRedirectLocation")
# What the mount sets on every object it creates, copies included.
_MOUNT_ONLY = ("ACL", "ObjectLockMode", "ObjectLockRetainUntilDate",
               "ObjectLockLegalHoldStatus")


def content_type_for(key: str) -> str:
    """The Content-Type of a new object, from its name's extension as s3fs does
    (/etc/mime.types, else Python's table); application/octet-stream when unknown."""
    if not mimetypes.inited:
        mimetypes.init()
    extension = os.path.splitext(key.rpartition("/")[2])[1].lower()
    return mimetypes.types_map.get(extension, "application/octet-stream")


class RequestParams:
    """The request parameters of one mount (its configuration is frozen)."""

    def __init__(self, config: MountConfig) -> None:
        self.config = config

    def sse_c(self, prefix: str = "") -> dict[str, Any]:
        """SSE-C headers: needed on every request that reads or writes object data;
        `prefix="CopySource"` gives the ones that unlock a copy's source."""
        if self.config.sse_c_key is None:
            return {}
        # boto3 base64-encodes the key and adds its MD5 itself.
        return {f"{prefix}SSECustomerAlgorithm": "AES256",
                f"{prefix}SSECustomerKey": self.config.sse_c_key}

    def new_object(self, metadata: dict[str, str],
                   replacing: ObjectInfo | None = None) -> dict[str, Any]:
        """Parameters for requests that create an object: PutObject and
        CreateMultipartUpload. `replacing`: the object (HEADed) this one is a new version
        of; what s3mpfs does not own is carried over (content headers, other tools'
        metadata, and its storage class and encryption unless the mount sets them)."""
        c = self.config
        params: dict[str, Any] = {"Metadata": metadata, **self.sse_c()}
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
        if replacing is not None:
            params.update(carried(replacing, metadata))
            if not c.sse and not c.sse_c_key:
                params.update(self.stored_as(replacing))
            elif not c.storage_class:
                params.update({k: v for k, v in self.stored_as(replacing).items()
                               if k == "StorageClass"})
        return params

    def stored_as(self, source: ObjectInfo) -> dict[str, Any]:
        """`source`'s storage class and server-side encryption, as request parameters."""
        params: dict[str, Any] = {}
        if source.storage_class and source.storage_class != "STANDARD":
            params["StorageClass"] = source.storage_class
        if source.sse and not self.config.sse_c_key:
            params["ServerSideEncryption"] = source.sse
            if source.headers.get("SSEKMSKeyId"):
                params["SSEKMSKeyId"] = source.headers["SSEKMSKeyId"]
            if source.headers.get("BucketKeyEnabled"):
                params["BucketKeyEnabled"] = True
            if source.sse == self.config.sse and self.config.sse_kms_context:
                params["SSEKMSEncryptionContext"] = self.config.sse_kms_context
        return params

    def plain(self) -> dict[str, Any]:
        """Parameters of a small bookkeeping object: the mount's encryption, no user
        metadata, no archive class and no lock (it is deleted soon)."""
        params = self.new_object({})
        for name in ("Metadata", "StorageClass", *_MOUNT_ONLY):
            params.pop(name, None)
        return params

    def copy(self, source: ObjectInfo, metadata: dict[str, str]) -> dict[str, Any]:
        """Parameters for a copy of `source` (HEADed) whose user metadata gets the
        entries of `metadata`: everything else it carries is kept, storage class and
        encryption included; the mount's ACL and Object Lock apply, as to any object it
        creates."""
        mount = self.new_object({})
        params: dict[str, Any] = {**self.sse_c(), **carried(source, metadata),
                                  **self.stored_as(source)}
        params.update({k: mount[k] for k in _MOUNT_ONLY if k in mount})
        return params


def carried(source: ObjectInfo, metadata: dict[str, str]) -> dict[str, Any]:
    """What a new version or a copy of `source` keeps of it: its content headers
    and user metadata, s3mpfs's own entries replaced when `metadata` has them all."""
    kept = dict(source.metadata or {})
    if "mode" in metadata:  # a full set of ours: drop stale ones (a removed xattr)
        kept = {k: v for k, v in kept.items() if k not in OWNED}
    params: dict[str, Any] = {"Metadata": {**kept, **metadata}}
    params.update({k: v for k, v in source.headers.items() if k in COPIED_HEADERS})
    return params


def tagging(tags: list[dict[str, str]]) -> dict[str, str]:
    """The Tagging parameter of a request creating an object with these tags."""
    return {"Tagging": urlencode([(t["Key"], t["Value"]) for t in tags])} if tags else {}
