"""s3/ranged.py against a scripted stand-in for boto3's client: bodies that break off are
resumed from the byte they reached, every resume names the first answer's version, and
answers of another version, range or checksum are never kept."""

from __future__ import annotations

import base64
import zlib
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError, ResponseStreamingError

from s3mpfs.s3 import ranged
from s3mpfs.s3.ranged import RangedGets
from s3mpfs.s3.stats import MountStats

DATA = bytes(range(256)) * 4096  # 1 MiB
ETAG = '"v1"'


class Body:
    def __init__(self, data: bytes, break_after: int | None) -> None:
        self.data, self.at, self.break_after = data, 0, break_after

    def read(self, amt: int) -> bytes:
        if self.break_after is not None and self.at >= self.break_after:
            raise ResponseStreamingError(error="Connection reset by peer")
        stop = self.at + amt if self.break_after is None else min(self.at + amt,
                                                                  self.break_after)
        chunk = self.data[self.at:stop]
        self.at += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class Client:
    """get_object answering from `versions` (ETag -> bytes, the current one last), each
    body broken after the byte counts in `breaks` (one per request, None: whole)."""

    def __init__(self, breaks: list[int | None], etag: str = ETAG,
                 checksum: str | None = None) -> None:
        self.breaks, self.etag, self.checksum = breaks, etag, checksum
        self.calls: list[dict[str, Any]] = []

    def get_object(self, **kw: Any) -> dict[str, Any]:
        self.calls.append(kw)
        if kw.get("IfMatch") not in (None, self.etag):
            raise ClientError({"Error": {"Code": "PreconditionFailed"},
                               "ResponseMetadata": {"HTTPStatusCode": 412}}, "GetObject")
        first, last = (int(x) for x in kw["Range"][6:].split("-"))
        last = min(last, len(DATA) - 1)
        answer: dict[str, Any] = {
            "ETag": self.etag, "ContentLength": last - first + 1,
            "ContentRange": f"bytes {first}-{last}/{len(DATA)}",
            "Body": Body(DATA[first:last + 1], self.breaks.pop(0) if self.breaks else None)}
        if self.checksum and kw.get("ChecksumMode") == "ENABLED" and first == 0 \
                and last == len(DATA) - 1:
            answer["ChecksumCRC32"] = self.checksum
        return answer


def gets(client: Client, attempts: int = 6) -> RangedGets:
    return RangedGets(client, "b", trio.CapacityLimiter(4), MountStats(), None, attempts,
                      dict)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranged.random, "random", lambda: 0.0)


async def test_a_body_that_breaks_off_is_resumed_where_it_broke_off() -> None:
    client = Client([300_000, 5, None])
    assert bytes(await gets(client).get("k", 0, len(DATA))) == DATA
    assert [c["Range"] for c in client.calls] == [
        f"bytes=0-{len(DATA) - 1}", f"bytes=300000-{len(DATA) - 1}",
        f"bytes=300005-{len(DATA) - 1}"]
    # No version was named: the first answer's pins the resumes.
    assert [c.get("IfMatch") for c in client.calls] == [None, ETAG, ETAG]


async def test_the_attempts_are_a_budget_then_the_error_is_raised() -> None:
    client = Client([10, 10, 10])
    with pytest.raises(ResponseStreamingError):
        await gets(client, attempts=3).get("k", 0, 100)
    assert len(client.calls) == 3


async def test_a_version_replaced_between_attempts_is_never_mixed_in() -> None:
    client = Client([1000])
    store = gets(client)
    original = client.get_object

    def replaced_after_first(**kw: Any) -> dict[str, Any]:
        answer = original(**kw)
        client.etag = '"v2"'  # another client replaced the object meanwhile
        return answer

    client.get_object = replaced_after_first  # type: ignore[method-assign]
    with pytest.raises(ClientError) as caught:
        await store.get("k", 0, 5000, ETAG)
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"


async def test_an_answer_of_another_version_is_refused_even_if_if_match_is_ignored() -> None:
    client = Client([], etag='"other"')
    ignoring = client.get_object
    client.get_object = lambda **kw: ignoring(**{**kw, "IfMatch": None})  # type: ignore[method-assign]
    with pytest.raises(ClientError) as caught:
        await gets(client).get("k", 0, 100, ETAG)
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"


async def test_a_whole_object_checksum_is_checked_and_a_mismatch_read_again() -> None:
    good = base64.b64encode(zlib.crc32(DATA).to_bytes(4, "big")).decode()
    client = Client([], checksum=good)
    assert bytes(await gets(client).get("k", 0, len(DATA))) == DATA
    assert client.calls[0]["ChecksumMode"] == "ENABLED"
    assert len(client.calls) == 1
    # A wrong checksum for the same bytes twice: the server's, kept, not checked again.
    client = Client([], checksum="AAAAAA==")
    store = gets(client)
    assert bytes(await store.get("k", 0, len(DATA), ETAG)) == DATA
    assert len(client.calls) == 2
    assert bytes(await store.get("k", 0, len(DATA), ETAG)) == DATA
    assert len(client.calls) == 3 and "ChecksumMode" not in client.calls[2]


async def test_a_range_past_the_end_returns_what_the_object_has() -> None:
    client = Client([])
    data = await gets(client).get("k", len(DATA) - 10, len(DATA) + 100)
    assert bytes(data) == DATA[-10:]
