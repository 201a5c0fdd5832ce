"""The mount-time probe of request conditions (s3/conditions.py), run against each backend:
it prints the table docs/COMPATIBILITY.md gives (`pytest -s tests/s3/test_conditions.py`)
and checks it against what was measured there."""

from __future__ import annotations

from typing import Any

import trio

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
