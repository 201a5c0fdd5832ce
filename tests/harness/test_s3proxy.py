"""Tests of the recording, fault-injecting S3 proxy (tests/s3proxy.py) in front of each test
backend (moto, Ceph RGW)."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from s3proxy import Headers, S3Proxy, classify

MIB = 1024 * 1024
RESET_ERRORS = (ConnectionClosedError, EndpointConnectionError)


def _client(endpoint: str, **config: Any) -> Any:
    cfg = Config(
        region_name="us-east-1",
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1},  # one attempt, so that faults surface
        connect_timeout=2,
        read_timeout=config.pop("read_timeout", 10),
        **config,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=cfg,  # the backend's keys come from the environment (conftest's s3_backend)
    )


@pytest.fixture(scope="module")
def upstream(s3_server: str) -> str:
    """The test backend's endpoint (moto or RGW), which the proxy forwards to."""
    return s3_server


@pytest.fixture(scope="module")
def direct(upstream: str) -> Any:
    """A client talking to the backend directly, for checking what really happened."""
    return _client(upstream)


@pytest.fixture
def bkt(direct: Any) -> str:
    name = f"proxy-{uuid.uuid4().hex[:12]}"
    direct.create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(upstream: str) -> Iterator[S3Proxy]:
    with S3Proxy(upstream, seed=1234) as p:
        yield p


@pytest.fixture
def client(proxy: S3Proxy) -> Any:
    return _client(proxy.url)


def _exists(direct: Any, bucket: str, key: str) -> bool:
    try:
        direct.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


def _pending_uploads(direct: Any, bucket: str) -> list[str]:
    return [u["UploadId"] for u in direct.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _force_aws_chunked(client: Any) -> None:
    """Make botocore send a trailing-checksum aws-chunked body, as it does over HTTPS.

    Over plain http botocore puts the checksum in a header instead; flipping the
    resolved checksum location reproduces exactly what a real (TLS) S3 endpoint gets.
    """

    def to_trailer(params: dict[str, Any], **_: Any) -> None:
        algorithm = params["context"].get("checksum", {}).get("request_algorithm")
        if isinstance(algorithm, dict):
            algorithm["in"] = "trailer"

    client.meta.events.register("before-call.s3.UploadPart", to_trailer)
    client.meta.events.register("before-call.s3.PutObject", to_trailer)


# --- forwarding and recording ---


def test_forwards_and_classifies_an_s3_session(
    proxy: S3Proxy, client: Any, direct: Any, bkt: str
) -> None:
    part1 = os.urandom(5 * MIB)
    client.head_bucket(Bucket=bkt)
    client.put_object(Bucket=bkt, Key="dir/small", Body=b"hello")
    assert client.head_object(Bucket=bkt, Key="dir/small")["ContentLength"] == 5
    assert client.get_object(Bucket=bkt, Key="dir/small")["Body"].read() == b"hello"
    client.copy_object(Bucket=bkt, Key="dir/copy", CopySource={"Bucket": bkt, "Key": "dir/small"})
    client.put_object_tagging(
        Bucket=bkt, Key="dir/copy", Tagging={"TagSet": [{"Key": "t", "Value": "1"}]}
    )
    assert client.get_object_tagging(Bucket=bkt, Key="dir/copy")["TagSet"][0]["Value"] == "1"
    upload_id = client.create_multipart_upload(Bucket=bkt, Key="dir/big")["UploadId"]
    etag1 = client.upload_part(
        Bucket=bkt, Key="dir/big", UploadId=upload_id, PartNumber=1, Body=part1
    )["ETag"]
    etag2 = client.upload_part_copy(  # the last part may be small
        Bucket=bkt,
        Key="dir/big",
        UploadId=upload_id,
        PartNumber=2,
        CopySource={"Bucket": bkt, "Key": "dir/small"},
    )["CopyPartResult"]["ETag"]
    assert len(client.list_parts(Bucket=bkt, Key="dir/big", UploadId=upload_id)["Parts"]) == 2
    assert client.list_multipart_uploads(Bucket=bkt)["Uploads"][0]["UploadId"] == upload_id
    parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate([etag1, etag2], start=1)]
    client.complete_multipart_upload(
        Bucket=bkt, Key="dir/big", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    other = client.create_multipart_upload(Bucket=bkt, Key="dir/aborted")["UploadId"]
    client.abort_multipart_upload(Bucket=bkt, Key="dir/aborted", UploadId=other)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bkt, Prefix="dir/")["Contents"]]
    assert keys == ["dir/big", "dir/copy", "dir/small"]
    assert len(client.list_objects(Bucket=bkt)["Contents"]) == 3
    client.delete_object(Bucket=bkt, Key="dir/copy")
    client.delete_objects(Bucket=bkt, Delete={"Objects": [{"Key": "dir/small"}]})

    assert [r.kind for r in proxy.requests] == [
        "HeadBucket",
        "PutObject",
        "HeadObject",
        "GetObject",
        "CopyObject",
        "PutObjectTagging",
        "GetObjectTagging",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "ListParts",
        "ListMultipartUploads",
        "CompleteMultipartUpload",
        "CreateMultipartUpload",
        "AbortMultipartUpload",
        "ListObjectsV2",
        "ListObjects",
        "DeleteObject",
        "DeleteObjects",
    ]
    assert all(r.fault is None and r.status == r.upstream_status for r in proxy.requests)
    assert [r.status for r in proxy.of_kind("DeleteObject")] == [204]
    (part,) = proxy.of_kind("UploadPart")
    assert (part.part_number, part.upload_id, part.key) == (1, upload_id, "dir/big")
    assert part.body_size == 5 * MIB
    assert part.headers["EXPECT"] == "100-continue"  # case-insensitive lookup
    assert part.headers["host"] == proxy.url.removeprefix("http://")  # Host kept as sent
    assert proxy.of_kind("UploadPartCopy")[0].headers["x-amz-copy-source"]
    assert proxy.count("GetObject") == 1

    body = direct.get_object(Bucket=bkt, Key="dir/big")["Body"].read()
    assert body == part1 + b"hello"
    proxy.clear()
    assert proxy.requests == []


@pytest.mark.moto_only(
    "Ceph 16.2's RGW refuses aws-chunked bodies with trailing checksums (MissingContentLength)"
)
def test_aws_chunked_bodies_arrive_byte_exact(
    proxy: S3Proxy, client: Any, direct: Any, bkt: str
) -> None:
    _force_aws_chunked(client)
    data = os.urandom(5 * MIB + 12345)  # several 1 MiB aws chunks, odd tail
    upload_id = client.create_multipart_upload(Bucket=bkt, Key="chunked")["UploadId"]
    etag = client.upload_part(
        Bucket=bkt, Key="chunked", UploadId=upload_id, PartNumber=1, Body=io.BytesIO(data)
    )["ETag"]
    client.complete_multipart_upload(
        Bucket=bkt,
        Key="chunked",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    client.put_object(Bucket=bkt, Key="chunked-put", Body=io.BytesIO(b"small body"))

    (part,) = proxy.of_kind("UploadPart")
    assert part.headers["Transfer-Encoding"] == "chunked"
    assert part.headers["Content-Encoding"] == "aws-chunked"
    assert part.headers["x-amz-trailer"] == "x-amz-checksum-crc32"
    assert part.headers["x-amz-decoded-content-length"] == str(len(data))
    assert part.body_size > len(data)  # the aws-chunked layer inside the HTTP chunks
    assert etag.strip('"') == hashlib.md5(data).hexdigest()
    assert direct.get_object(Bucket=bkt, Key="chunked")["Body"].read() == data
    assert direct.get_object(Bucket=bkt, Key="chunked-put")["Body"].read() == b"small body"


def test_client_keep_alive(proxy: S3Proxy, direct: Any, bkt: str) -> None:
    # Unsigned requests: a real server answers them only for a public bucket.
    direct.put_bucket_acl(Bucket=bkt, ACL="public-read")
    conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.request("GET", f"/{bkt}?list-type=2")
        first = conn.getresponse()
        assert first.status == 200 and b"ListBucketResult" in first.read()
        sock = conn.sock
        conn.request("HEAD", f"/{bkt}")
        second = conn.getresponse()
        second.read()
        assert second.status == 200 and conn.sock is sock  # same connection reused
    finally:
        conn.close()
    assert [r.kind for r in proxy.requests] == ["ListObjectsV2", "HeadBucket"]


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "kind"),
    [
        ("GET", "/", {}, {}, "ListBuckets"),
        ("PUT", "/b", {}, {}, "CreateBucket"),
        ("DELETE", "/b", {}, {}, "DeleteBucket"),
        ("GET", "/b", {"uploads": ""}, {}, "ListMultipartUploads"),
        ("GET", "/b/", {"prefix": "a", "delimiter": "/"}, {}, "ListObjects"),
        ("GET", "/b", {"list-type": "2", "continuation-token": "x"}, {}, "ListObjectsV2"),
        ("GET", "/b", {"location": ""}, {}, "Other"),
        ("POST", "/b", {"delete": ""}, {}, "DeleteObjects"),
        ("POST", "/b/k/x", {"uploads": ""}, {}, "CreateMultipartUpload"),
        ("POST", "/b/k", {"uploadId": "u"}, {}, "CompleteMultipartUpload"),
        ("PUT", "/b/k", {"partNumber": "3", "uploadId": "u"}, {}, "UploadPart"),
        (
            "PUT",
            "/b/k",
            {"partNumber": "3", "uploadId": "u"},
            {"X-Amz-Copy-Source": "b/o"},
            "UploadPartCopy",
        ),
        ("PUT", "/b/k", {}, {"x-amz-copy-source": "b/o"}, "CopyObject"),
        ("PUT", "/b/k", {"acl": ""}, {}, "Other"),
        ("GET", "/b/k", {"uploadId": "u", "max-parts": "5"}, {}, "ListParts"),
        ("GET", "/b/k", {"partNumber": "1", "response-content-type": "x"}, {}, "GetObject"),
        ("GET", "/b/k", {"tagging": ""}, {}, "GetObjectTagging"),
        ("PUT", "/b/k", {"tagging": ""}, {}, "PutObjectTagging"),
        ("DELETE", "/b/k", {"uploadId": "u"}, {}, "AbortMultipartUpload"),
        ("DELETE", "/b/k", {"versionId": "v"}, {}, "DeleteObject"),
        ("HEAD", "/b/k", {}, {}, "HeadObject"),
        ("HEAD", "/b", {}, {}, "HeadBucket"),
    ],
)
def test_classify(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], kind: str
) -> None:
    assert classify(method, path, query, Headers(headers.items())) == kind


# --- faults ---


@pytest.mark.parametrize(("action", "code"), [("500", "InternalError"), ("503", "SlowDown")])
def test_error_status_is_not_forwarded(
    proxy: S3Proxy, client: Any, direct: Any, bkt: str, action: str, code: str
) -> None:
    proxy.add_fault("PutObject", action)
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bkt, Key="k", Body=b"x" * 100)
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == int(action)
    (rec,) = proxy.requests
    assert (rec.fault, rec.status, rec.upstream_status) == (action, int(action), None)
    assert not _exists(direct, bkt, "k")
    # The connection stays usable: the next request on it goes through.
    proxy.clear_faults()
    client.put_object(Bucket=bkt, Key="k", Body=b"x" * 100)
    assert _exists(direct, bkt, "k")


def test_reset_before_does_not_forward(proxy: S3Proxy, client: Any, direct: Any, bkt: str) -> None:
    proxy.add_fault("PutObject", "reset_before")
    with pytest.raises(RESET_ERRORS):
        client.put_object(Bucket=bkt, Key="k", Body=b"data")
    assert not _exists(direct, bkt, "k")
    (rec,) = proxy.requests
    assert (rec.fault, rec.status, rec.upstream_status) == ("reset_before", 0, None)


def test_reset_after_forwards_then_resets(
    proxy: S3Proxy, client: Any, direct: Any, bkt: str
) -> None:
    proxy.add_fault("PutObject", "reset_after")
    with pytest.raises(RESET_ERRORS):
        client.put_object(Bucket=bkt, Key="k", Body=b"data")
    assert direct.get_object(Bucket=bkt, Key="k")["Body"].read() == b"data"
    (rec,) = proxy.requests
    assert (rec.fault, rec.status, rec.upstream_status) == ("reset_after", 0, 200)


def test_stall_trips_the_read_timeout(proxy: S3Proxy, direct: Any, bkt: str) -> None:
    client = _client(proxy.url, read_timeout=0.3)
    rule = proxy.add_fault("HeadObject", "stall", times=1)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.head_object(Bucket=bkt, Key="k")
    assert time.monotonic() - started < 15  # the stall would last 30 s
    assert rule.fired == 1
    proxy.release_stalls()
    direct.put_object(Bucket=bkt, Key="k", Body=b"1")
    # times=1 spent: the next HEAD goes through (asked with the usual 10 s read timeout,
    # since a loaded machine may take longer than 0.3 s to answer even a HEAD)
    assert _client(proxy.url).head_object(Bucket=bkt, Key="k")["ContentLength"] == 1


def test_stop_does_not_hang_on_stalled_or_held_requests(upstream: str, bkt: str) -> None:
    proxy = S3Proxy(upstream).start()
    client = _client(proxy.url, read_timeout=30)
    stall = proxy.add_fault("HeadObject", "stall", stall_seconds=60)
    hold = proxy.add_fault("HeadBucket", "hold")
    errors: list[BaseException] = []

    def call(fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=call, args=(lambda: client.head_object(Bucket=bkt, Key="k"),)),
        threading.Thread(target=call, args=(lambda: client.head_bucket(Bucket=bkt),)),
    ]
    for t in threads:
        t.start()
    assert hold.held.wait(30)
    proxy.wait_for(lambda recs: any(r.fault == "stall" for r in recs), timeout=30)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 15  # not the 60 s stall, nor the endless hold
    for t in threads:
        t.join(30)
    assert len(errors) == 2 and all(isinstance(e, RESET_ERRORS) for e in errors)
    assert stall.fired == hold.fired == 1
    assert all(r.upstream_status is None for r in proxy.requests)  # held one never forwarded


def test_truncate_cuts_the_body(proxy: S3Proxy, client: Any, direct: Any, bkt: str) -> None:
    direct.put_object(Bucket=bkt, Key="k", Body=os.urandom(100_000))
    proxy.add_fault("GetObject", "truncate")
    response = client.get_object(Bucket=bkt, Key="k")
    assert response["ContentLength"] == 100_000  # headers promise the full body
    with pytest.raises((IncompleteReadError, ResponseStreamingError)):
        response["Body"].read()
    assert proxy.requests[0].fault == "truncate"
    # botocore does not enforce Content-Length on parsed (non-streaming) responses; the
    # cut XML fails to parse and botocore calls it a (retryable) 500.
    proxy.add_fault("ListObjectsV2", "truncate")
    with pytest.raises(ClientError) as info:
        client.list_objects_v2(Bucket=bkt)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def _start_upload(client: Any, bkt: str, key: str) -> tuple[str, list[dict[str, Any]]]:
    upload_id = client.create_multipart_upload(Bucket=bkt, Key=key)["UploadId"]
    etag = client.upload_part(
        Bucket=bkt, Key=key, UploadId=upload_id, PartNumber=1, Body=b"only part"
    )["ETag"]
    return upload_id, [{"PartNumber": 1, "ETag": etag}]


def test_error_200_leaves_the_upload_pending(
    proxy: S3Proxy, client: Any, direct: Any, bkt: str
) -> None:
    upload_id, parts = _start_upload(client, bkt, "k")
    proxy.add_fault("CompleteMultipartUpload", "error_200")
    with pytest.raises(ClientError) as info:
        client.complete_multipart_upload(
            Bucket=bkt, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    assert info.value.response["Error"]["Code"] == "InternalError"
    assert _pending_uploads(direct, bkt) == [upload_id]
    assert not _exists(direct, bkt, "k")
    rec = proxy.of_kind("CompleteMultipartUpload")[0]
    assert (rec.fault, rec.status, rec.upstream_status) == ("error_200", 200, None)
    # A retry of the same complete succeeds once the fault is gone.
    proxy.clear_faults()
    client.complete_multipart_upload(
        Bucket=bkt, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert direct.get_object(Bucket=bkt, Key="k")["Body"].read() == b"only part"


def test_error_200_after_completes_upstream(
    proxy: S3Proxy, client: Any, direct: Any, bkt: str
) -> None:
    upload_id, parts = _start_upload(client, bkt, "k")
    proxy.add_fault("CompleteMultipartUpload", "error_200_after")
    with pytest.raises(ClientError) as info:
        client.complete_multipart_upload(
            Bucket=bkt, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    assert info.value.response["Error"]["Code"] == "InternalError"
    assert _pending_uploads(direct, bkt) == []
    assert direct.get_object(Bucket=bkt, Key="k")["Body"].read() == b"only part"
    rec = proxy.of_kind("CompleteMultipartUpload")[0]
    assert (rec.fault, rec.status, rec.upstream_status) == ("error_200_after", 200, 200)


def test_hold_forwards_only_after_release(
    proxy: S3Proxy, client: Any, direct: Any, bkt: str
) -> None:
    upload_id, parts = _start_upload(client, bkt, "k")
    rule = proxy.add_fault("CompleteMultipartUpload", "hold")
    result: dict[str, Any] = {}

    def complete() -> None:
        result["response"] = client.complete_multipart_upload(
            Bucket=bkt, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    thread = threading.Thread(target=complete)
    thread.start()
    assert rule.held.wait(30)
    assert not _exists(direct, bkt, "k") and _pending_uploads(direct, bkt) == [upload_id]
    proxy.release(rule)
    thread.join(30)
    assert not thread.is_alive() and result["response"]["Key"] == "k"
    assert direct.get_object(Bucket=bkt, Key="k")["Body"].read() == b"only part"
    # A released rule lets later requests straight through.
    client.put_object(Bucket=bkt, Key="k2", Body=b"")
    assert proxy.of_kind("CompleteMultipartUpload")[0].status == 200


def test_triggers_nth_every_times_part_number_key(proxy: S3Proxy, client: Any, bkt: str) -> None:
    def statuses(kind: str) -> list[int]:
        return [r.status for r in proxy.of_kind(kind)]

    def put(key: str) -> None:
        try:
            client.put_object(Bucket=bkt, Key=key, Body=b"x")
        except ClientError:
            pass

    proxy.add_fault("PutObject", "500", nth=2)
    proxy.add_fault("PutObject", "503", every=3, times=2)
    for i in range(10):
        put(f"k{i}")
    # nth counts its own matches; every counts those the first rule let through.
    assert statuses("PutObject") == [200, 500, 200, 503, 200, 200, 503, 200, 200, 200]

    proxy.clear_faults()
    proxy.clear()
    proxy.add_fault("PutObject", "500", key_contains="bad/")
    for key in ["good/a", "bad/a", "good/bad/", "x"]:
        put(key)
    assert statuses("PutObject") == [200, 500, 500, 200]

    upload_id = client.create_multipart_upload(Bucket=bkt, Key="mp")["UploadId"]
    proxy.add_fault("UploadPart", "500", part_number=2, times=1)
    for number in [1, 2, 2, 3]:
        try:
            client.upload_part(
                Bucket=bkt, Key="mp", UploadId=upload_id, PartNumber=number, Body=b"p"
            )
        except ClientError:
            pass
    assert statuses("UploadPart") == [200, 500, 200, 200]


def _share_pattern(upstream: str, bkt: str, seed: int) -> list[str | None]:
    with S3Proxy(upstream, seed=seed) as proxy:
        client = _client(proxy.url)
        proxy.add_fault("HeadBucket", "500", share=0.3)
        proxy.add_fault("HeadObject", "503", share=0.5)  # has its own draws from the same rng
        for _ in range(30):
            for call in (
                lambda: client.head_bucket(Bucket=bkt),
                lambda: client.head_object(Bucket=bkt, Key="missing"),
            ):
                try:
                    call()
                except ClientError:
                    pass
        return [r.fault for r in proxy.requests]


def test_share_is_deterministic_per_seed(upstream: str, bkt: str) -> None:
    first = _share_pattern(upstream, bkt, seed=7)
    assert first == _share_pattern(upstream, bkt, seed=7)
    assert first != _share_pattern(upstream, bkt, seed=8)
    fired = first[0::2].count("500")
    assert 3 <= fired <= 18  # about 30% of 30 HeadBucket requests


def test_add_fault_validates(proxy: S3Proxy) -> None:
    with pytest.raises(ValueError):
        proxy.add_fault("UploadPart", "explode")
    with pytest.raises(ValueError):
        proxy.add_fault("UploadParts", "500")
    with pytest.raises(ValueError):
        proxy.add_fault("UploadPart", "500", share=1.5)
