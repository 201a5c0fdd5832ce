"""What a completed multipart upload must be: checked once S3 says it is done.

A retried CompleteMultipartUpload whose first attempt committed answers NoSuchUpload; the
object's ETag tells whether that commit was ours. The object S3 assembled must have the
size written and the encryption asked for: a wrong object of ours is deleted rather than
left looking like a good one; one another writer put there since is not ours to judge.
"""

from __future__ import annotations

import trio

from ..errors import UploadFailed
from ..objects import CompletedPart, ObjectStore
from ..s3.integrity import multipart_etag


async def is_committed(store: ObjectStore, key: str, parts: list[CompletedPart]) -> bool:
    """Whether the object at `key` is the one these parts make."""
    try:
        info = await store.head(key)
    except Exception:
        return False
    return info.etag == multipart_etag(parts)


async def check_committed(store: ObjectStore, key: str, result: dict,
                          parts: list[CompletedPart], size: int,
                          expected_sse: str | None) -> None:
    """Raise UploadFailed (and delete the object) if S3 assembled something else than
    was written. Fills in `result`'s ETag where the server left it empty (Ceph RGW 16)."""
    info = await store.head(key)
    if not result.get("ETag"):
        result["ETag"] = info.etag
    if info.etag != multipart_etag(parts):
        return  # another writer replaced it since: theirs is not ours to judge
    problem = None
    if info.size != size:
        problem = f"S3 assembled {info.size} bytes, {size} were written"
    elif expected_sse and info.sse != expected_sse:
        problem = f"S3 reports encryption {info.sse}, not {expected_sse}"
    if problem:
        with trio.CancelScope(shield=True):
            await store.delete(key)
        raise UploadFailed(f"{key}: {problem}; the object was deleted")
