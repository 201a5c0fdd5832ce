"""Ranged GETs of one version of an object, resumed where they broke off.

botocore and s3/crt.py retry a GET that fails before its answer. A body that breaks off
after the answer started (a connection reset, a truncated body, a read timeout) is
resumed here from the byte it reached, with botocore's backoff, at most `retries` times
per range (a block through awscrt's S3 client, s3/bulk.py, arrives whole or not at
all, and is asked for again whole). Every attempt names the version it reads (`If-Match`
its ETag: the caller's, or the one the first answer showed), and every answer is checked
before its bytes are kept: the ETag (a server that ignores `If-Match` must not slip
another version in), the range (`Content-Range`), the length, and, when the range is the
whole object, the object's checksum where the server returns one
(`x-amz-checksum-mode: ENABLED`).

A server that reports a checksum its bytes do not match twice over, with the same bytes
both times, stores a wrong checksum (moto's copies of multipart objects): the bytes are
kept and the mount says so once. Nothing here imports boto3: the store hands its client.
"""

from __future__ import annotations

import ctypes
import http.client
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
import urllib3.exceptions
from botocore.exceptions import BotoCoreError, ClientError

from . import checksums, crt
from .routing import CrtRoute
from .stats import MountStats

log = logging.getLogger(__name__)

CHUNK = 256 << 10  # bytes read from a body at a time: a broken body keeps what came
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# What a body breaking off after the answer started raises, from botocore or below it.
_BROKEN = (BotoCoreError, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


class _Broken(Exception):
    """An attempt ended before all its bytes arrived (those that did are kept)."""

    def __init__(self, cause: BaseException | str) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _Range:
    """A range being fetched: bytes [start, stop) into `buffer`, `pos` reached so far."""

    key: str
    start: int
    stop: int
    pin: str  # the ETag every attempt names ("" until the first answer, if none given)
    buffer: bytearray | bytes  # bytes: a whole block as awscrt's S3 client gave it
    pos: int = 0
    checksum: tuple[str, str] | None = None  # (algorithm, value) of the whole object


class RangedGets:
    """`get` for S3Store.get_range: one buffer per range, filled across attempts."""

    def __init__(self, client: Any, bucket: str, limiter: trio.CapacityLimiter,
                 stats: MountStats, crt_route: CrtRoute | None, attempts: int,
                 sse_c: Callable[[], dict[str, Any]]) -> None:
        self._client, self._bucket, self._limiter = client, bucket, limiter
        self._stats, self._crt, self._sse_c = stats, crt_route, sse_c
        self.attempts = max(attempts, 1)
        self._wrong_checksums: set[tuple[str, str]] = set()  # (key, ETag) known wrong

    async def get(self, key: str, start: int, end: int, etag: str = "") -> bytes:
        """Bytes [start, end) of `key` (fewer if the object ends before `end`), all of
        one version: `etag`'s if given, else the first answer's. A replaced object
        fails with PreconditionFailed (412); a body that keeps breaking off, with the
        last error once the attempts are spent."""
        if end <= start:
            return b""
        r = _Range(key, start, end, etag if etag.startswith('"') else "",
                   _unfilled(end - start), start)
        mismatched: str | None = None  # what a first wrong-looking checksum computed
        failures = 0
        while True:
            try:
                await self._fill(r)
                computed = self._verify(r)
                if computed is None or computed == mismatched:
                    if computed is not None:
                        self._wrong_checksum(r)
                    return _result(r)
                mismatched = computed
                failure: BaseException | str = (
                    f"its bytes do not match the {r.checksum[0] if r.checksum else ''} "
                    "checksum the server reports")
                r.pos, r.checksum = r.start, None  # the whole range again
                how = "read again"
            except _Broken as broken:
                failure = broken.cause
                how = f"resumed at byte {r.pos}"
            failures += 1
            if failures >= self.attempts:
                if isinstance(failure, BaseException):
                    raise failure
                raise OSError(f"GetObject of {key}: {failure}")
            self._stats.read_retried()
            log.info("GetObject of %s: %s; %s (attempt %d of %d)", key, failure, how,
                     failures + 1, self.attempts)
            await trio.sleep(random.random() * min(20.0, 2.0 ** (failures - 1)))  # noqa: S311

    async def _fill(self, r: _Range) -> None:
        """One attempt: fetch [pos, stop) and check its answer; _Broken if it broke off."""
        if type(r.buffer) is bytes:  # a block kept as it came, asked for again whole
            r.buffer = _unfilled(len(r.buffer))
        view = memoryview(r.buffer)[r.pos - r.start:r.stop - r.start]
        params = {"Range": f"bytes={r.pos}-{r.stop - 1}", **self._sse_c()}
        if r.pin:
            params["IfMatch"] = r.pin
        # A range from 0 may be the whole object: its checksum can be checked then.
        whole = r.pos == 0 and (r.key, r.pin) not in self._wrong_checksums
        if whole:
            params["ChecksumMode"] = "ENABLED"
        answer: dict | None = None
        got, broken = 0, None
        if self._crt is not None and len(view) < crt.MAX_BODY:
            answer = await self._crt.get_answer(r.key, params, len(view))
            if answer is not None:
                body = answer.pop("Body")
                got = min(len(body), len(view))
                view[:got] = memoryview(body)[:got]
        elif self._crt is not None:
            block = await self._crt.get_block(r.key, params, len(view))
            if block is not None:
                answer, body = block
                got = min(len(body), len(view))
                if got == len(r.buffer):  # the whole range: the body is the block
                    r.buffer = body  # type: ignore[assignment]
                else:
                    view[:got] = memoryview(body)[:got]
        if answer is None:
            answer, got, broken = await trio.to_thread.run_sync(
                self._boto_attempt, r.key, params, view, limiter=self._limiter)
        self._check(r, answer, got, whole, broken)

    def _boto_attempt(self, key: str, params: dict[str, Any], into: memoryview
                      ) -> tuple[dict, int, BaseException | None]:
        """One GetObject through boto3 (botocore retries failures before the answer),
        its body read into `into` (worker thread): the answer, the bytes received and
        what broke the body off, if it did."""
        answer = self._stats.counted(self._client.get_object)(
            Bucket=self._bucket, Key=key, **params)
        body = answer.pop("Body")
        # http.client's response under urllib3's (botocore reads it undecoded): read
        # straight into the buffer, no copy of a block; else through botocore's body.
        stream = getattr(body, "_raw_stream", None)
        raw = getattr(stream, "_fp", None)
        readinto = getattr(raw, "readinto", None) or _reader_into(body)
        got = 0
        try:
            while got < len(into):
                n = readinto(into[got:got + CHUNK])
                if not n:
                    break
                got += n
        except _BROKEN as exc:
            body.close()  # a broken connection is never reused
            return answer, got, exc
        if raw is not None and raw.isclosed() and hasattr(stream, "release_conn"):
            stream.release_conn()  # the whole body was read: the connection is reused
        else:
            body.close()
        return answer, got, None

    def _check(self, r: _Range, answer: dict, got: int, whole: bool,
               broken: BaseException | None = None) -> None:
        """Keep an attempt's bytes only if the answer is of the pinned version and
        range; move `pos` past them; _Broken if fewer came than the range holds."""
        etag = str(answer.get("ETag", ""))
        if r.pin and etag and etag != r.pin:  # a server that ignored If-Match
            raise ClientError({"Error": {"Code": "PreconditionFailed",
                                         "Message": f"answered version {etag}, not {r.pin}"},
                               "ResponseMetadata": {"HTTPStatusCode": 412}}, "GetObject")
        r.pin = r.pin or etag
        first, last, total = _content_range(answer, got)
        if first != r.pos or last < first - 1 or (last + 1 < r.stop and last + 1 != total):
            raise _Broken(f"answered bytes {first}-{last}/{total} for {r.pos}-{r.stop - 1}")
        r.stop = min(r.stop, last + 1)  # the object ends there
        if whole and last + 1 == total:
            r.checksum = _object_checksum(answer)
        r.pos += got
        if r.pos < r.stop:
            raise _Broken(broken or f"body ended after {got} of {r.stop - r.pos + got} bytes")

    def _verify(self, r: _Range) -> str | None:
        """None if the bytes match the object's checksum (or there is none to check);
        else the checksum they have."""
        if r.checksum is None:
            return None
        algorithm, expected = r.checksum
        computed = checksums.value(algorithm, memoryview(r.buffer)[:r.stop - r.start])
        return None if computed is None or computed == expected else computed

    def _wrong_checksum(self, r: _Range) -> None:
        """Not checked again for this version; said once per mount."""
        if not self._wrong_checksums:
            log.warning("the server reports a %s checksum for %s that its bytes do not "
                        "match, the same bytes twice: it stores a wrong checksum (seen on "
                        "copies); the bytes are read as they are", r.checksum and
                        r.checksum[0], r.key)
        self._wrong_checksums.add((r.key, r.pin))


def _reader_into(body: Any) -> Callable[[memoryview], int]:
    """readinto for a body that only has read()."""

    def readinto(view: memoryview) -> int:
        chunk = body.read(len(view))
        view[:len(chunk)] = chunk
        return len(chunk)

    return readinto


_NEW_BYTEARRAY = ctypes.pythonapi.PyByteArray_FromStringAndSize
_NEW_BYTEARRAY.restype = ctypes.py_object
_NEW_BYTEARRAY.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)


def _unfilled(size: int) -> bytearray:
    """A bytearray of `size` bytes, not zeroed: `bytearray(size)` zeroes it with the GIL
    held, 2 ms per 8 MiB block, a quarter of a 1 GiB read's GIL time. What it holds
    before the body arrives is never handed out: _result returns only bytes received
    (`pos` reached `stop`, which _check makes every kept attempt prove)."""
    return _NEW_BYTEARRAY(None, size)


def _result(r: _Range) -> bytes:
    """The bytes read, as bytes; a full buffer of a block or more is returned as it is
    (bytes-like, never changed again: the readers take views of it), sparing a copy of
    every block read."""
    if r.pos != r.stop:  # the buffer is not zeroed: unreceived bytes must never go out
        raise AssertionError(f"range {r.start}-{r.stop} returned at {r.pos}")
    if r.stop - r.start == len(r.buffer) >= crt.MAX_BODY:
        return r.buffer  # type: ignore[return-value]
    return bytes(memoryview(r.buffer)[:r.stop - r.start])


def _content_range(answer: dict, got: int) -> tuple[int, int, int]:
    """(first, last, total) of an answer: its Content-Range, or a whole-object answer
    (a 200 to a ranged GET) of ContentLength bytes."""
    match = _RANGE.fullmatch(str(answer.get("ContentRange", "")).strip())
    if match:
        total = int(match.group(3)) if match.group(3) != "*" else -1
        return int(match.group(1)), int(match.group(2)), total
    length = int(answer.get("ContentLength", got))
    return 0, length - 1, length


def _object_checksum(answer: dict) -> tuple[str, str] | None:
    """The whole object's checksum in an answer, if the server sent one (a composite
    one, of the parts' checksums, cannot be checked from the bytes: None)."""
    if str(answer.get("ChecksumType", "")).upper() == "COMPOSITE":
        return None
    for algorithm in ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"):
        value = answer.get(f"Checksum{algorithm}")
        if value and "-" not in str(value):
            return algorithm, str(value)
    return None
