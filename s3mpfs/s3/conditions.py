"""Which request conditions this server honours, learnt at mount time, request by request.

A condition is a fact about one server and one request type: AWS honours them all; moto 5
and Ceph RGW 16.2 ignore `x-amz-copy-source-if-match` on CopyObject and UploadPartCopy,
and RGW ignores `If-None-Match: *` on CompleteMultipartUpload while honouring it on
PutObject. `probe` asks each request once, on a probe object of our own, with a condition
that must fail (a made-up ETag, or `*` on a key that exists): a request that succeeds
anyway ignores it. An If-Match honoured that way must also let the object's own ETag
pass, or it is of no use (Ceph RGW 16.2 refuses both on PutObject). The store then
conditions what the server honours and, where it does not, falls back to a HEAD right
before the request (see `S3Store.check_before`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

import trio
from botocore.exceptions import ClientError

from ..errors import describe, s3_error_code

log = logging.getLogger(__name__)

WRONG_ETAG = '"00000000000000000000000000000000"'  # no object has it


@dataclass
class Conditions:
    """What this server honours (True) or not (False: ignores it, or refuses even a
    request whose condition holds). Until probed, nothing is trusted: every condition
    gets its fallback."""

    put_if_none_match: bool = False  # PutObject If-None-Match: *
    put_if_match: bool = False  # PutObject If-Match: ETAG
    complete_if_none_match: bool = False  # CompleteMultipartUpload If-None-Match: *
    complete_if_match: bool = False  # CompleteMultipartUpload If-Match: ETAG
    part_copy_if_match: bool = False  # UploadPartCopy x-amz-copy-source-if-match
    copy_if_match: bool = False  # CopyObject x-amz-copy-source-if-match
    get_if_match: bool = False  # GetObject If-Match: ETAG

    def table(self) -> list[tuple[str, bool]]:
        """(request and condition, honoured) for each one, in a fixed order."""
        return [(_NAMES[f.name], getattr(self, f.name)) for f in fields(self)]

    def log_fallbacks(self) -> None:
        """One line per ignored condition, naming what is done instead."""
        for f in fields(self):
            if not getattr(self, f.name):
                log.warning("this server does not honour %s: %s", _NAMES[f.name],
                            _FALLBACKS[f.name])


_NAMES = {
    "put_if_none_match": "If-None-Match: * on PutObject",
    "put_if_match": "If-Match on PutObject",
    "complete_if_none_match": "If-None-Match: * on CompleteMultipartUpload",
    "complete_if_match": "If-Match on CompleteMultipartUpload",
    "part_copy_if_match": "x-amz-copy-source-if-match on UploadPartCopy",
    "copy_if_match": "x-amz-copy-source-if-match on CopyObject",
    "get_if_match": "If-Match on GetObject",
}
_WINDOW = "a write by another client in the moment between the two can still be lost"
_FALLBACKS = {
    "put_if_none_match": "a new small file HEADs its key right before PutObject and fails "
                         "(EIO) if an object appeared; " + _WINDOW,
    "put_if_match": "a small file built on an existing version (>>) HEADs its key right "
                    "before PutObject and fails (EIO) if that version changed; " + _WINDOW,
    "complete_if_none_match": "a new large file HEADs its key right before "
                              "CompleteMultipartUpload and fails (EIO) if an object "
                              "appeared; " + _WINDOW,
    "complete_if_match": "a large file built on an existing version (>>, random writes) "
                         "HEADs its key right before CompleteMultipartUpload and fails (EIO) "
                         "if that version changed; " + _WINDOW,
    "part_copy_if_match": "a version built on copied parts is checked at its commit, "
                          "against the version they were copied from (see above)",
    "copy_if_match": "copies (renames, attribute changes) HEAD their source first; a "
                     "version written between that HEAD and the copy is copied as it is "
                     "(its bytes kept, with the attributes read from the one before)",
    "get_if_match": "reads cannot tell a replaced file from the one opened",
}


async def probe(store: Any, key: str, body: bytes) -> Conditions:
    """Learn every condition of `store` (the S3Store) with `key`, an object of ours
    holding `body`, which this may replace with the same bytes and leaves for the caller
    to delete. The requests run in four independent chains at once (a mount waits for
    the longest, 7 requests, not for all 20 in a row): PutObject's and GetObject's on
    `key`; the copies, which only read it; and each CompleteMultipartUpload on a key
    of its own (a Complete that ignores its condition replaces the object it names,
    which must not be the one the PutObject chain checks ETags of)."""
    found = Conditions()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_probe_puts, store, key, body, found)
        nursery.start_soon(_probe_copies, store, key, body, found)
        for name, condition in (("complete_if_match", {"IfMatch": WRONG_ETAG}),
                                ("complete_if_none_match", {"IfNoneMatch": "*"})):
            nursery.start_soon(_probe_complete, store, f"{key}-{name}", body, name,
                               condition, found)
    return found


async def _probe_puts(store: Any, key: str, body: bytes, found: Conditions) -> None:
    client = store._client
    found.put_if_none_match = await _refused(store, client.put_object, Key=key, Body=body,
                                             IfNoneMatch="*", **store.params.plain())
    found.put_if_match = await _refused(
        store, client.put_object, Key=key, Body=body, IfMatch=WRONG_ETAG,
        **store.params.plain()) and await _accepted(
        store, client.put_object, Key=key, Body=body, IfMatch=(await store.head(key)).etag,
        **store.params.plain())
    found.get_if_match = await _refused(store, client.get_object, Key=key, IfMatch=WRONG_ETAG,
                                        **store.params.sse_c())


def _copy_source(store: Any, key: str) -> dict[str, Any]:
    """`key` as the source of a copy that must not happen (its ETag is made up)."""
    return {"CopySource": {"Bucket": store.bucket, "Key": key},
            "CopySourceIfMatch": WRONG_ETAG, **store.params.sse_c("CopySource")}


async def _probe_copies(store: Any, key: str, body: bytes, found: Conditions) -> None:
    """CopyObject and UploadPartCopy from `key`, which neither changes (an upload of
    `key` that is never completed)."""
    client = store._client
    copy = f"{key}-copy"
    try:
        found.copy_if_match = await _refused(
            store, client.copy_object, Key=copy, **_copy_source(store, key),
            **store.params.plain())
    finally:
        if not found.copy_if_match:  # it may have copied, even if this chain then failed
            with trio.CancelScope(shield=True):
                await store.delete(copy)
    upload_id, _ = await _upload_of(store, key, body)
    try:
        found.part_copy_if_match = await _refused(
            store, client.upload_part_copy, Key=key, UploadId=upload_id, PartNumber=2,
            **_copy_source(store, key), **store.params.sse_c())
    finally:
        await _abort(store, key, upload_id)


async def _probe_complete(store: Any, key: str, body: bytes, name: str,
                          condition: dict[str, str], found: Conditions) -> None:
    """CompleteMultipartUpload with `condition` on `key`, made to hold `body` first and
    deleted at the end."""
    client, sse_c = store._client, store.params.sse_c()
    try:
        await store._call(client.put_object, Key=key, Body=body, **store.params.plain())
        upload_id, part_etag = await _upload_of(store, key, body)
        parts = {"Parts": [{"PartNumber": 1, "ETag": part_etag}]}
        try:
            refused = await _refused(
                store, client.complete_multipart_upload, Key=key, UploadId=upload_id,
                MultipartUpload=parts, **condition, **sse_c)
            if refused and name == "complete_if_match":  # and the right ETag must pass
                refused = await _accepted(
                    store, client.complete_multipart_upload, Key=key, UploadId=upload_id,
                    MultipartUpload=parts, IfMatch=(await store.head(key)).etag, **sse_c)
            setattr(found, name, refused)
        finally:
            await _abort(store, key, upload_id)
    finally:
        with trio.CancelScope(shield=True):
            await store.delete(key)


async def _abort(store: Any, key: str, upload_id: str) -> None:
    """Whatever the answer, nothing of the probe stays pending."""
    with trio.CancelScope(shield=True):
        try:
            await store._call(store._client.abort_multipart_upload, Key=key,
                              UploadId=upload_id)
        except ClientError:
            pass  # completed (the condition was ignored)


async def _upload_of(store: Any, key: str, body: bytes) -> tuple[str, str]:
    """A multipart upload of `key` with one part (the last may be small): its id, and
    that part's ETag."""
    client = store._client
    resp = await store._call(client.create_multipart_upload, Key=key, **store.params.plain())
    upload_id = resp["UploadId"]
    part = await store._call(client.upload_part, Key=key, UploadId=upload_id, PartNumber=1,
                             Body=body, **store.params.sse_c())
    return upload_id, part["ETag"]


async def _accepted(store: Any, fn: Any, **kwargs: Any) -> bool:
    """Whether a request whose condition holds succeeds: a server that refuses it
    (Ceph RGW 16.2's If-Match on PutObject refuses the object's own ETag) cannot use it."""
    try:
        await store._call(fn, **kwargs)
    except ClientError as exc:
        log.info("conditions probe: %s", describe(exc))
        return False
    return True


async def _refused(store: Any, fn: Any, **kwargs: Any) -> bool:
    """Whether the server refused a request whose condition must fail (412): honoured.
    Any other refusal counts as not honoured, with a line saying why."""
    try:
        await store._call(fn, **kwargs)
    except ClientError as exc:
        if s3_error_code(exc) in ("PreconditionFailed", "412"):
            return True
        log.info("conditions probe: %s", describe(exc))
        return False
    return False
