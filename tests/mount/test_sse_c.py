"""SSE-C through a real mount. moto does not enforce SSE-C, so a recording proxy in front
of the backend checks that every request that writes or reads the object's data carries the
key; on RGW, which enforces it, the object cannot be read without the key."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import no_pending_uploads, random_file, sha256_file, sha256_object
from s3proxy import Recorded, S3Proxy

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
KEY = "secret/file.bin"
ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
KEY_HEADER = "x-amz-server-side-encryption-customer-key"
MD5_HEADER = "x-amz-server-side-encryption-customer-key-md5"


@pytest.fixture
def sse_c_key(tmp_path: Path) -> tuple[bytes, Path]:
    key = os.urandom(32)
    path = tmp_path / "sse-c.key"
    path.write_bytes(key)
    os.chmod(path, 0o600)
    return key, path


def assert_carries_key(requests: list[Recorded], key: bytes) -> None:
    expected = {
        ALGORITHM: "AES256",
        KEY_HEADER: base64.b64encode(key).decode(),
        MD5_HEADER: base64.b64encode(hashlib.md5(key).digest()).decode(),
    }
    for rec in requests:
        got = {name: rec.headers.get(name) for name in expected}
        assert got == expected, f"{rec.kind} {rec.key} part={rec.part_number}: {got}"


@pytest.mark.parametrize("route", ["boto3", "crt"])
def test_sse_c_key_on_every_data_request(
    s3_backend: Any,
    s3: Any,
    bucket: str,
    proxy: S3Proxy,
    mount: Any,
    tmp_path: Path,
    sse_c_key: tuple[bytes, Path],
    route: str,
) -> None:
    """Every request on the object's data carries the key, whichever way its body goes:
    parts and blocks through boto3 (http), or through awscrt's S3 client (https;
    S3MPFS_HTTP=crt here)."""
    key, key_file = sse_c_key
    src = random_file(tmp_path / "src.bin", 12 * MiB, seed=12)
    options = (f"endpoint_url={proxy.url}", f"sse_c_key_file={key_file}", "part_size=5M", "debug")
    env = {"S3MPFS_HTTP": "crt"} if route == "crt" else None
    writer = mount(bucket, *options, env=env)
    os.mkdir(writer.path / "secret")

    subprocess.run(["cp", str(src), str(writer.path / KEY)], check=True, timeout=120)
    read_back = subprocess.run(
        ["cmp", str(src), str(writer.path / KEY)], capture_output=True, text=True, timeout=120
    )
    assert read_back.returncode == 0, read_back.stdout + read_back.stderr

    # A second mount knows nothing yet: stat and reads must HEAD and GET with the key.
    reader = mount(bucket, *options, env=env)
    assert os.stat(reader.path / KEY).st_size == 12 * MiB
    stat = subprocess.run(
        ["stat", "-c", "%s %F", str(reader.path / KEY)], capture_output=True, text=True, timeout=30
    )
    assert stat.stdout.split()[0] == str(12 * MiB), stat.stdout + stat.stderr
    cat = subprocess.run(
        f"cat '{reader.path / KEY}' | sha256sum",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.split()[0] == sha256_file(src)

    def of(kind: str) -> list[Recorded]:
        return [r for r in proxy.of_kind(kind) if r.key == KEY]

    assert len(of("CreateMultipartUpload")) == 1
    assert sorted(r.part_number for r in of("UploadPart")) == [1, 2, 3]
    assert len(of("CompleteMultipartUpload")) == 1
    assert of("PutObject") == []
    assert len(of("GetObject")) >= 2  # both mounts read it
    assert len(of("HeadObject")) >= 1  # the second mount's stat
    agents = {r.headers.get("user-agent", "").partition("/")[0] for r in of("UploadPart")}
    assert agents == {"CRTS3NativeClient" if route == "crt" else "Boto3"}, agents
    for kind in (
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "GetObject",
        "HeadObject",
    ):
        assert_carries_key(of(kind), key)
    # Every other request on the object that carries object data does too.
    for rec in proxy.requests:
        if rec.key == KEY and rec.kind in ("UploadPartCopy", "CopyObject"):
            assert_carries_key([rec], key)

    # The object is what was written (moto does not encrypt, but keeps the bytes).
    sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    assert sha256_object(s3, bucket, KEY, **sse) == sha256_file(src)
    head = s3.head_object(Bucket=bucket, Key=KEY, **sse)
    assert head["ContentLength"] == 12 * MiB
    assert head["ETag"].strip('"').endswith("-3")
    assert no_pending_uploads(s3, bucket) == []
    if s3_backend.sse_c_enforced:  # really encrypted: useless without the key
        with pytest.raises(ClientError):
            s3.head_object(Bucket=bucket, Key=KEY)
        with pytest.raises(ClientError):
            s3.get_object(Bucket=bucket, Key=KEY)

    # The key never reaches the logs, in any form, even with debug logging.
    for m in (writer, reader):
        log = m.log_text()
        assert "DEBUG" in log  # debug logging was on: the check below means something
        for secret in (base64.b64encode(key).decode(), key.hex(), key.hex().upper(), repr(key)):
            assert secret not in log
        assert base64.b64encode(hashlib.md5(key).digest()).decode() not in log


def test_small_file_put_object_carries_the_key(
    s3: Any, bucket: str, proxy: S3Proxy, mount: Any, sse_c_key: tuple[bytes, Path]
) -> None:
    key, key_file = sse_c_key
    m = mount(bucket, f"endpoint_url={proxy.url}", f"sse_c_key_file={key_file}")
    subprocess.run(["sh", "-c", f"echo secret > '{m.path}/small'"], check=True, timeout=30)
    puts = [r for r in proxy.of_kind("PutObject") if r.key == "small"]
    assert len(puts) == 1
    assert_carries_key(puts, key)
    m.unmount()  # the writer keeps what it stored: a fresh mount reads it from S3
    m = mount(bucket, f"endpoint_url={proxy.url}", f"sse_c_key_file={key_file}")
    assert (m.path / "small").read_bytes() == b"secret\n"
    gets = [r for r in proxy.of_kind("GetObject") if r.key == "small"]
    assert gets
    assert_carries_key(gets, key)
    body = s3.get_object(
        Bucket=bucket, Key="small", SSECustomerAlgorithm="AES256", SSECustomerKey=key
    )["Body"].read()
    assert body == b"secret\n"
