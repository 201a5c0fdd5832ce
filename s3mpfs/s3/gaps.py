"""Which optional multipart operations the server lacks, learnt once at mount.

Some S3 servers (s3rver, small embedded ones) implement uploads but not UploadPartCopy,
ListMultipartUploads or AbortMultipartUpload. s3mpfs needs none of them to store files:

- without UploadPartCopy, a new version built from an existing object (an in-place edit,
  an append, a rename or attribute change of an object too large for one CopyObject, or
  any copy where CopyObject is missing too) is built from ranged GETs of the unchanged
  bytes plus UploadPart, one part at a time (`Gaps.part_copy` tells the planners);
- without AbortMultipartUpload or ListMultipartUploads, the parts of a failed upload stay
  on the server and s3mpfs cannot find them again: one line says what to do about them.

The probe is one small object under PREFIX.s3mpfs/ and one multipart upload copying it,
listed and aborted (completed and deleted where abort is missing). Each gap found is one
WARNING line; a server that has everything costs no line.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import trio

from ..errors import describe, s3_error_code
from ..objects import ObjectInfo
from .store import PROBE_DIR, S3Store

log = logging.getLogger(__name__)

_MISSING_CODES = {"NotImplemented", "MethodNotAllowed"}


def not_implemented(exc: BaseException) -> bool:
    """Whether an error says the server does not implement this request (501, or
    NotImplemented / MethodNotAllowed)."""
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return s3_error_code(exc) in _MISSING_CODES or status in (501, 405)


@dataclass
class Gaps:
    """What the server lacks: the server's answer for each operation it refused."""

    part_copy: str | None = None  # UploadPartCopy
    listing: str | None = None  # ListMultipartUploads
    abort: str | None = None  # AbortMultipartUpload

    @property
    def copies_parts(self) -> bool:
        return self.part_copy is None


async def probe_gaps(store: S3Store, prefix: str) -> Gaps:
    """Try UploadPartCopy, ListMultipartUploads and AbortMultipartUpload on an object of
    our own; log one line per gap found."""
    gaps = Gaps()
    body = b"s3mpfs: does this server copy parts?"
    src = f"{prefix}{PROBE_DIR}gaps-{uuid.uuid4().hex}"
    dst = f"{src}-copy"
    params = store.params.plain()
    resp = await store.put_unchecked(src, params, body)
    try:
        source = ObjectInfo(src, len(body), 0, resp.get("ETag", ""))
        algorithm = store.integrity.algorithm  # as every upload of the mount
        upload_id = await store.create_multipart_with(
            dst, {**params, **({"ChecksumAlgorithm": algorithm} if algorithm else {})})
        try:
            try:
                await store.upload_part_copy(dst, upload_id, 1, source, 0, len(body))
            except Exception as exc:
                if not not_implemented(exc):
                    raise
                gaps.part_copy = describe(exc)
            try:
                await store.pending_uploads(f"{prefix}{PROBE_DIR}")
            except Exception as exc:
                if not not_implemented(exc):
                    raise
                gaps.listing = describe(exc)
        finally:
            with trio.CancelScope(shield=True):
                await _end(store, dst, upload_id, body, gaps)
    finally:
        with trio.CancelScope(shield=True):
            await store.delete(src)
    _report(gaps)
    return gaps


async def _end(store: S3Store, key: str, upload_id: str, body: bytes, gaps: Gaps) -> None:
    """Abort the probe's upload; where abort is missing, complete it and delete the
    object instead, so that nothing is left behind."""
    try:
        await store.abort_multipart(key, upload_id)
        return
    except Exception as exc:
        if not not_implemented(exc):
            raise
        gaps.abort = describe(exc)
    part = await store.upload_part(key, upload_id, 1, body)
    await store.complete_multipart(key, upload_id, [part])
    await store.delete(key)


def _report(gaps: Gaps) -> None:
    if gaps.part_copy:
        log.warning("this server does not implement UploadPartCopy (%s): in-place edits, "
                    "appends, and renames and attribute changes of large objects read the "
                    "unchanged bytes back and upload them again, one part at a time "
                    "(slower, and they cost transfer)", gaps.part_copy)
    missing = [name for name, answer in (("AbortMultipartUpload", gaps.abort),
                                         ("ListMultipartUploads", gaps.listing)) if answer]
    if missing:
        log.warning("this server does not implement %s (%s): the parts of an upload that "
                    "fails (or of a crashed mount) stay on the server, and s3mpfs cannot "
                    "remove them; delete them with the server's own tools, or give the "
                    "bucket a lifecycle rule that ends incomplete multipart uploads",
                    " or ".join(missing), gaps.abort or gaps.listing)
