"""The mount-time probe of request conditions (s3/conditions.py), run against each backend:
it prints the table docs/COMPATIBILITY.md gives (`pytest -s tests/s3/test_conditions.py`)
and checks it against what was measured there."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from s3mpfs.config import build_config
from s3mpfs.s3.store import S3Store

# What docs/COMPATIBILITY.md says each backend honours (True) or ignores (False).
MEASURED = {
    "moto": {
        "If-None-Match: * on PutObject": True,
        "If-Match on PutObject": True,
        "If-None-Match: * on CompleteMultipartUpload": True,
        "If-Match on CompleteMultipartUpload": False,
        "x-amz-copy-source-if-match on UploadPartCopy": False,
        "x-amz-copy-source-if-match on CopyObject": False,
        "If-Match on GetObject": True,
    },
    "rgw": {
        "If-None-Match: * on PutObject": True,
        "If-Match on PutObject": False,  # refuses the object's own ETag too
        "If-None-Match: * on CompleteMultipartUpload": False,
        "If-Match on CompleteMultipartUpload": False,
        "x-amz-copy-source-if-match on UploadPartCopy": False,
        "x-amz-copy-source-if-match on CopyObject": False,
        "If-Match on GetObject": True,
    },
}


def probe(s3_server: str, bucket: str) -> list[tuple[str, bool]]:
    config = build_config(bucket, "/", [f"endpoint_url={s3_server},region=us-east-1"],
                          check_mountpoint=False)

    async def run() -> list[tuple[str, bool]]:
        store = S3Store(config)
        await store.probe(config.prefix)
        return store.conditions.table()

    return trio.run(run)


def test_the_probe_measures_what_compatibility_says(
    s3_backend: Any, s3_server: str, s3: Any, bucket: str
) -> None:
    found = probe(s3_server, bucket)
    for name, honoured in found:
        print(f"{s3_backend.name}: {name}: {'honoured' if honoured else 'NOT HONOURED'}")
    assert not s3.list_objects_v2(Bucket=bucket).get("Contents")  # the probe cleans up
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert dict(found) == MEASURED[s3_backend.name]


class _FailingProbeStore:
    """A store whose server ignores the copy condition (the copy is made) and whose
    PutObject chain fails right after it: what the probe leaves behind is recorded."""

    bucket = "b"

    def __init__(self, key: str) -> None:
        self.key = key
        self.copied = trio.Event()
        self.failed = trio.Event()
        self.deleted: set[str] = set()
        self.params = self
        self._client = self

    def plain(self) -> dict[str, Any]:
        return {}

    def sse_c(self, prefix: str = "") -> dict[str, Any]:
        return {}

    async def _call(self, fn: Any, **kwargs: Any) -> Any:
        if fn == self.put_object and kwargs["Key"] == self.key:
            await self.copied.wait()
            self.failed.set()
            raise OSError("connection reset")  # another chain's failure
        await trio.sleep(0)
        return fn(**kwargs)

    async def delete(self, key: str) -> None:
        await self.failed.wait()  # the delete is still to be sent when the probe fails,
        await trio.testing.wait_all_tasks_blocked()  # and the failure cancels the rest
        self.deleted.add(key)

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    def copy_object(self, **kwargs: Any) -> dict[str, Any]:
        self.copied.set()
        return {}

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {"UploadId": "u"}

    def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        return {"ETag": '"e"'}

    def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {}


async def test_a_failed_probe_still_deletes_the_copy_it_made() -> None:
    from s3mpfs.s3 import conditions

    store = _FailingProbeStore(".s3mpfs/probe")
    try:
        await conditions.probe(store, store.key, b"x")
    except BaseException as exc:  # the failure reaches the mount (as a group or not)
        assert "connection reset" in repr(exc)
    else:
        raise AssertionError("the probe hid the failure")
    assert ".s3mpfs/probe-copy" in store.deleted
