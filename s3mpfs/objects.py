"""Value types every layer shares: what S3 says about an object, a listing, a part, an
upload; and `ObjectStore`, what the rest of s3mpfs needs from S3 (s3/store.py implements
it). Plain data, no I/O: any module may import this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

# The headers of every ObjectInfo that has none (a listing's 100,000): never changed in
# place.
NO_HEADERS: dict[str, Any] = {}


@dataclass(slots=True)  # a listing holds one per key: 100,000 for a large directory
class ObjectInfo:
    key: str
    size: int
    mtime: float  # LastModified, seconds since the epoch
    etag: str = ""
    storage_class: str = "STANDARD"
    metadata: dict[str, str] | None = None  # None: not fetched yet (listings omit it)
    sse: str | None = None
    restore: str | None = None  # the Restore header of archived objects
    # From a HEAD: content headers, KMS key, SSE-C, tag count; what a copy must keep.
    headers: dict[str, Any] = field(default_factory=lambda: NO_HEADERS)


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
                   max_keys: int | None = None, start_after: str | None = None
                   ) -> Listing: ...
    async def head(self, key: str) -> ObjectInfo: ...
    async def get_range(self, key: str, start: int, end: int, etag: str = "") -> bytes: ...
    async def put_object(self, key: str, data: bytes, metadata: dict[str, str], *,
                         only_new: bool = False, replacing: ObjectInfo | None = None,
                         content_type: str | None = None, base_etag: str = "") -> dict: ...
    async def create_multipart(self, key: str, metadata: dict[str, str],
                               replacing: ObjectInfo | None = None) -> str: ...
    async def upload_part(self, key: str, upload_id: str, number: int,
                          data: bytes) -> CompletedPart: ...
    async def upload_part_copy(self, key: str, upload_id: str, number: int,
                               source: ObjectInfo, start: int, end: int) -> CompletedPart: ...
    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: Sequence[CompletedPart], *,
                                 only_new: bool = False, base_etag: str = "") -> dict: ...
    async def abort_multipart(self, key: str, upload_id: str) -> None: ...
    async def delete(self, key: str) -> None: ...
