"""Tests of the test infrastructure itself (conftest fixtures and helpers), none of which
need the s3mpfs package."""

from __future__ import annotations

import os
import time
import urllib.request

import pytest
from helpers import (
    RANDOM_CHUNK,
    WaitTimeout,
    is_mounted,
    list_keys,
    no_pending_uploads,
    random_bytes,
    random_file,
    sha256_file,
    sha256_object,
    wait_for,
)


def test_aws_env_is_isolated(aws_env):
    assert os.environ["AWS_ACCESS_KEY_ID"] == aws_env["AWS_ACCESS_KEY_ID"]
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert os.path.getsize(os.environ["AWS_CONFIG_FILE"]) == 0
    assert os.path.getsize(os.environ["AWS_SHARED_CREDENTIALS_FILE"]) == 0
    assert "AWS_PROFILE" not in os.environ
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_s3_server_reachable(s3_server, s3):
    assert s3_server.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(s3_server, timeout=10) as resp:
        assert resp.status == 200
    assert "Buckets" in s3.list_buckets()


def test_bucket_fixture_creates_a_fresh_bucket(s3, bucket):
    s3.head_bucket(Bucket=bucket)
    assert 3 <= len(bucket) <= 63
    assert list_keys(s3, bucket) == []
    s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert list_keys(s3, bucket) == ["a/b.txt"]
    assert s3.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"


def test_each_test_gets_its_own_bucket(s3, bucket):
    # The previous test's object is not here: the bucket is new.
    assert list_keys(s3, bucket) == []


def test_multipart_upload_roundtrip_and_pending_uploads(s3_backend, s3, bucket, tmp_path):
    """The backend behaves like S3 where the mount tests rely on it: multipart ETags '-N',
    SSE (where it has SSE-S3) and storage class echoed back, pending uploads listed until
    aborted."""
    assert no_pending_uploads(s3, bucket) == []
    part = random_bytes(5 * 1024 * 1024, seed=1)
    tail = b"xyz"
    sse = {"ServerSideEncryption": "AES256"} if s3_backend.sse_s3 else {}
    up = s3.create_multipart_upload(Bucket=bucket, Key="big", StorageClass="STANDARD_IA", **sse)
    pending = no_pending_uploads(s3, bucket)
    assert [u["UploadId"] for u in pending] == [up["UploadId"]]
    etags = [
        s3.upload_part(Bucket=bucket, Key="big", UploadId=up["UploadId"], PartNumber=i, Body=body)[
            "ETag"
        ]
        for i, body in ((1, part), (2, tail))
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )
    assert no_pending_uploads(s3, bucket) == []
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ETag"].strip('"').endswith("-2")
    assert head["ContentLength"] == len(part) + len(tail)
    assert head.get("ServerSideEncryption") == sse.get("ServerSideEncryption")
    assert head["StorageClass"] == "STANDARD_IA"
    local = tmp_path / "big"
    local.write_bytes(part + tail)
    assert sha256_object(s3, bucket, "big") == sha256_file(local)

    aborted = s3.create_multipart_upload(Bucket=bucket, Key="gone")
    assert len(no_pending_uploads(s3, bucket)) == 1
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=aborted["UploadId"])
    assert no_pending_uploads(s3, bucket) == []


def test_wait_for_returns_the_truthy_value():
    start = time.monotonic()
    calls = []

    def ready():
        calls.append(1)
        return len(calls) >= 3 and "done"

    assert wait_for(ready, timeout=5, interval=0.01) == "done"
    assert len(calls) == 3
    assert time.monotonic() - start < 5


def test_wait_for_raises_on_timeout():
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match="the moon"):
        wait_for(lambda: False, timeout=0.2, interval=0.02, message="the moon")
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < 2
    assert issubclass(WaitTimeout, AssertionError)


@pytest.mark.parametrize("size", [0, 1, RANDOM_CHUNK - 1, RANDOM_CHUNK, RANDOM_CHUNK + 1])
def test_random_file_is_deterministic(tmp_path, size):
    a = random_file(tmp_path / "a", size, seed=7)
    b = random_file(tmp_path / "b", size, seed=7)
    assert a.stat().st_size == size
    assert a.read_bytes() == b.read_bytes() == random_bytes(size, seed=7)
    if size:
        c = random_file(tmp_path / "c", size, seed=8)
        assert c.read_bytes() != a.read_bytes() or size < 4


def test_is_mounted(tmp_path):
    assert is_mounted("/")
    assert is_mounted("/proc")
    assert is_mounted("/proc/self/..")
    assert not is_mounted(tmp_path)
