"""What the null server keeps: buckets, object sizes/ETags/headers, multipart uploads, and
the byte pattern GETs serve instead of the dropped bodies."""

from __future__ import annotations

import bisect
import hashlib
import threading
import time
from dataclasses import dataclass, field

KEEP_BODY = 1024
KEEP_BOOKKEEPING = 64 * 1024 * 1024  # bodies under PREFIX.s3mpfs/ (stat indexes)
MD5_LIMIT = 1024 * 1024
PATTERN_SIZE = 1 << 20
PATTERN = bytes(((i * 131) ^ (i >> 8)) & 0xFF for i in range(PATTERN_SIZE))
PATTERN2 = memoryview(PATTERN + PATTERN)  # any window of PATTERN_SIZE bytes, no wrap


def pattern_bytes(start: int, length: int) -> bytes:
    """The bytes GET serves for [start, start + length) of an object whose body was dropped."""
    out = bytearray()
    while length > 0:
        offset = start % PATTERN_SIZE
        n = min(length, PATTERN_SIZE - offset)
        out += PATTERN[offset:offset + n]
        start, length = start + n, length - n
    return bytes(out)


@dataclass(slots=True)  # a million of them for the listing benchmark
class Obj:
    size: int
    etag: str
    mtime: float
    headers: dict[str, str]  # lower-case name -> value, replayed on HEAD/GET
    body: bytes | None = None


@dataclass
class Upload:
    bucket: str
    key: str
    headers: dict[str, str]
    initiated: float
    parts: dict[int, tuple[int, str, dict[str, str]]] = field(default_factory=dict)


class Bucket:
    def __init__(self, created: float) -> None:
        self.created = created
        self.objects: dict[str, Obj] = {}
        self.keys: list[str] = []  # sorted

    def put(self, key: str, obj: Obj) -> None:
        if key not in self.objects:
            bisect.insort(self.keys, key)
        self.objects[key] = obj

    def populate(self, prefix: str, count: int, mtime: float, distinct: bool = False) -> None:
        """`count` objects PREFIX + f0000000...: a large listing without one PutObject per
        key. They are empty and share one header dict (s3fs-style metadata, so a HEAD shows
        a mode), or (`distinct`) each has its own size, ETag, LastModified and `mtime`
        header with nanoseconds, as a tree a backup tool copied (GETs serve the pattern)."""
        headers = {"content-type": "binary/octet-stream", "x-amz-meta-mode": "33188",
                   "x-amz-meta-mtime": str(int(mtime))}
        etag = '"d41d8cd98f00b204e9800998ecf8427e"'  # the MD5 of no bytes
        width = max(7, len(str(count - 1)))
        new = [f"{prefix}f{i:0{width}d}" for i in range(count)]
        for i, key in enumerate(new):
            if key not in self.objects:
                self.keys.append(key)
            if distinct:
                own = int(mtime) - 3600 - i
                self.objects[key] = Obj(
                    i % 100_000 + 1, '"' + hashlib.md5(key.encode()).hexdigest() + '"',  # noqa: S324
                    float(own), dict(headers, **{"x-amz-meta-mtime": f"{own}.{i % 10**9:09d}"}))
            else:
                self.objects[key] = Obj(0, etag, mtime, headers)
        self.keys.sort()

    def delete(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            i = bisect.bisect_left(self.keys, key)
            if i < len(self.keys) and self.keys[i] == key:
                del self.keys[i]


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, Bucket] = {}
        self.uploads: dict[str, Upload] = {}
        self.counter = 0
        self.counts: dict[str, int] = {}  # requests by S3 operation

    def fake_etag(self) -> str:
        with self.lock:
            self.counter += 1
            n = self.counter
        return '"' + hashlib.md5(f"nulls3-{n}-{time.time()}".encode()).hexdigest() + '"'  # noqa: S324
