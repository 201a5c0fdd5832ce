"""Integration tests of the write path: real mounts (`python -m s3mpfs ... -f`) against
moto, files written with ordinary tools, the bucket checked afterwards with boto3."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    STORE_DEADLINE,
    list_keys,
    no_pending_uploads,
    random_bytes,
    random_file,
    sha256_file,
    sha256_object,
    wait_for,
)
from s3proxy import FAULT_500, S3Proxy

from s3mpfs.write.parts import part_size_for

pytestmark = pytest.mark.mount

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
DEFAULT_PART = 8 * MiB


def expected_parts(size: int, base: int) -> int:
    """How many parts s3mpfs cuts a file of `size` bytes into (1: a single PutObject).

    A part is cut only once the buffer holds more than the part size, so the last part is
    never empty: a file of exactly N part sizes has N parts."""
    number, left = 1, size
    while left > part_size_for(number, base):
        left -= part_size_for(number, base)
        number += 1
    return number


def etag_parts(etag: str) -> int | None:
    """The part count of a multipart ETag ('"abc-13"' -> 13); None for a plain ETag."""
    match = re.fullmatch(r'"?[0-9a-f]{32}-(\d+)"?', etag)
    return int(match.group(1)) if match else None


def cp(src: Path, dst: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cp", str(src), str(dst)], capture_output=True, text=True, timeout=120)


def assert_object(s3: Any, bucket: str, key: str, source: Path, parts: int) -> dict[str, Any]:
    """The object holds exactly `source`'s bytes, in `parts` parts (1: no multipart)."""
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == source.stat().st_size
    assert sha256_object(s3, bucket, key) == sha256_file(source)
    if parts == 1:
        assert "-" not in head["ETag"], head["ETag"]
    else:
        assert etag_parts(head["ETag"]) == parts, head["ETag"]
    assert no_pending_uploads(s3, bucket) == []
    return head


@pytest.fixture(scope="module")
def kms_key_id(s3_backend: Any) -> str:
    """A KMS key: RGW's (its "testing" KMS backend has fixed keys), or one created in moto's
    KMS (same endpoint as its S3)."""
    import boto3

    if s3_backend.kms_key_id:
        return s3_backend.kms_key_id
    kms = boto3.client("kms", endpoint_url=s3_backend.endpoint, region_name="us-east-1")
    return kms.create_key(Description="s3mpfs tests")["KeyMetadata"]["KeyId"]


def test_expected_parts_matches_the_planner() -> None:
    # The helper the other tests rely on, checked against s3mpfs's own rule.
    assert expected_parts(100 * MiB + 3, DEFAULT_PART) == 13
    assert expected_parts(20 * MiB + 1, 5 * MiB) == 5
    assert expected_parts(5 * MiB, 5 * MiB) == 1
    assert expected_parts(5 * MiB + 1, 5 * MiB) == 2
    assert expected_parts(0, 5 * MiB) == 1


# --------------------------------------------------------------------- cp of big files


def _encryption_cases() -> list[Any]:
    big = 100 * MiB + 3
    mid = 20 * MiB + 1
    return [
        pytest.param(["sse=AES256"], big, {"ServerSideEncryption": "AES256"}, id="sse-s3-100M"),
        pytest.param(
            ["sse=aws:kms", "sse_kms_key_id={kms}"],
            big,
            {"ServerSideEncryption": "aws:kms"},
            id="sse-kms-100M",
        ),
        pytest.param(
            ["sse=aws:kms:dsse"], mid, {"ServerSideEncryption": "aws:kms:dsse"}, id="dsse-kms"
        ),
        pytest.param(
            ["storage_class=standard_ia"], mid, {"StorageClass": "STANDARD_IA"}, id="standard-ia"
        ),
        pytest.param(
            ["storage_class=ONEZONE_IA"], mid, {"StorageClass": "ONEZONE_IA"}, id="onezone-ia"
        ),
        pytest.param(
            ["storage_class=Intelligent_Tiering"],
            mid,
            {"StorageClass": "INTELLIGENT_TIERING"},
            id="intelligent-tiering",
        ),
        pytest.param(
            ["storage_class=glacier_ir", "sse=AES256"],
            mid,
            {"StorageClass": "GLACIER_IR", "ServerSideEncryption": "AES256"},
            id="glacier-ir+sse-s3",
        ),
    ]


def _unsupported(s3_backend: Any, expected: dict[str, str]) -> str | None:
    """Which requested encryption the backend cannot do (Ceph 16.2: SSE-S3 is silently
    ignored, DSSE-KMS refused with 400), or None."""
    sse = expected.get("ServerSideEncryption")
    if sse == "AES256" and not s3_backend.sse_s3:
        return "AES256"
    if sse == "aws:kms:dsse" and not s3_backend.dsse_kms:
        return "aws:kms:dsse"
    return None


@pytest.mark.parametrize(("options", "size", "expected"), _encryption_cases())
def test_cp_big_file(
    s3_backend: Any,
    s3: Any,
    bucket: str,
    mount: Any,
    tmp_path: Path,
    kms_key_id: str,
    options: list[str],
    size: int,
    expected: dict[str, str],
) -> None:
    options = [o.format(kms=kms_key_id) for o in options]
    base = DEFAULT_PART if size > 50 * MiB else 5 * MiB
    if base != DEFAULT_PART:
        options.append("part_size=5M")
    unsupported = _unsupported(s3_backend, expected)
    if unsupported:
        # The server cannot store anything encrypted as asked (Ceph 16.2 refuses DSSE and
        # ignores SSE-S3): the mount is refused with one line naming the option, and no
        # object is left behind.
        m = mount(bucket, *options, expect_failure=True)
        lines = m.log_text().strip().splitlines()
        assert m.returncode != 0 and len(lines) == 1, lines
        assert lines[0].startswith(f"s3mpfs: sse={unsupported}:"), lines
        assert list_keys(s3, bucket) == []
        return
    src = random_file(tmp_path / "src.bin", size, seed=size)
    m = mount(bucket, *options)

    result = cp(src, m.path / "big.bin")
    assert result.returncode == 0, result.stderr

    parts = expected_parts(size, base)
    assert parts == (13 if size == 100 * MiB + 3 else 5)
    head = assert_object(s3, bucket, "big.bin", src, parts)
    for name, value in expected.items():
        assert head.get(name) == value, (name, head)
    if any(o.startswith("sse_kms_key_id=") for o in options):
        assert kms_key_id in head.get("SSEKMSKeyId", ""), head
    if "StorageClass" not in expected:
        assert head.get("StorageClass", "STANDARD") == "STANDARD"
    # And the mount reads back what it wrote.
    assert os.stat(m.path / "big.bin").st_size == size
    assert subprocess.run(["cmp", str(src), str(m.path / "big.bin")]).returncode == 0


# --------------------------------------------------------------------- small files


def test_small_file_is_one_put_object(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    subprocess.run(["sh", "-c", f"echo hello > '{m.path}/f'"], check=True, timeout=30)
    obj = s3.get_object(Bucket=bucket, Key="f")
    assert obj["Body"].read() == b"hello\n"
    assert "-" not in obj["ETag"]
    assert obj["ETag"].strip('"') == hashlib.md5(b"hello\n").hexdigest()
    assert no_pending_uploads(s3, bucket) == []


def test_empty_file(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    subprocess.run(["touch", str(m.path / "empty")], check=True, timeout=30)
    head = s3.head_object(Bucket=bucket, Key="empty")
    assert head["ContentLength"] == 0
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    assert os.stat(m.path / "empty").st_size == 0
    assert no_pending_uploads(s3, bucket) == []


@pytest.mark.parametrize(
    ("size", "parts"),
    [(5 * MiB, 1), (5 * MiB + 1, 2)],
    ids=["exactly-part-size", "part-size-plus-1"],
)
def test_part_size_boundary(
    s3: Any, bucket: str, mount: Any, tmp_path: Path, size: int, parts: int
) -> None:
    src = random_file(tmp_path / "src.bin", size, seed=7)
    m = mount(bucket, "part_size=5M")
    result = cp(src, m.path / "edge.bin")
    assert result.returncode == 0, result.stderr
    assert_object(s3, bucket, "edge.bin", src, parts)


# --------------------------------------------------------------------- bounded memory


def _memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a process, from /proc/<pid>/status."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


def test_1gib_copy_keeps_memory_bounded(
    s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    size = 1 * GiB
    spool = tmp_path / "spool"
    m = mount(bucket, f"cache_dir={spool}")
    spool_before = spool.stat().st_mtime_ns  # a spool file created (even unlinked) moves it
    pid = m.proc.pid
    baseline = _memory_kib(pid)
    peak = dict(baseline)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                for name, value in _memory_kib(pid).items():
                    peak[name] = max(peak[name], value)
            except OSError:
                return
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = subprocess.run(
            ["dd", "if=/dev/zero", f"of={m.path / 'big'}", "bs=1M", f"count={size // MiB}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop.set()
        sampler.join()
    assert result.returncode == 0, result.stderr
    peak_mib = max(*peak.values(), _memory_kib(pid)["VmHWM"]) / KiB
    print(f"mount memory: baseline {baseline} KiB, peak {peak_mib:.0f} MiB")

    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == size
    # 64 parts of 8 MiB, then 16 MiB parts (the schedule doubles every 64 parts).
    parts = expected_parts(size, DEFAULT_PART)
    assert parts == 64 + (size - 64 * DEFAULT_PART) // part_size_for(65, DEFAULT_PART) == 96
    assert etag_parts(head["ETag"]) == parts
    assert no_pending_uploads(s3, bucket) == []
    assert spool.stat().st_mtime_ns == spool_before, "a sequential copy touched the spool"
    assert list(spool.iterdir()) == []
    # Last, so that everything above is checked even while this is a known failure.
    assert peak_mib < 200, f"mount peaked at {peak_mib:.0f} MiB (baseline {baseline} KiB)"


# --------------------------------------------------------------------- streaming


def test_parts_are_uploaded_while_the_file_is_being_written(
    s3: Any, bucket: str, proxy: S3Proxy, mount: Any
) -> None:
    size, chunk = 40 * MiB, 1 * MiB
    data = random_bytes(size, seed=40)
    m = mount(bucket, f"endpoint_url={proxy.url}", "part_size=5M")
    proxy.clear()

    with open(m.path / "stream.bin", "wb", buffering=0) as f:
        f.write(data[: 12 * MiB])
        # Two parts are full: the first goes up while the writer still holds the file open.
        wait_for(
            lambda: any(r.status == 200 for r in proxy.of_kind("UploadPart")),
            timeout=20,
            message="an UploadPart answered while the file is open",
        )
        assert proxy.count("CompleteMultipartUpload") == 0
        assert [r for r in proxy.of_kind("PutObject") if r.key == "stream.bin"] == []
        for offset in range(12 * MiB, size, chunk):
            f.write(data[offset : offset + chunk])
        # Everything but the last part (still buffered) is uploaded before close().
        wait_for(
            lambda: (
                len({r.part_number for r in proxy.of_kind("UploadPart") if r.status == 200}) == 7
            ),
            timeout=30,
            message="7 parts uploaded before close()",
        )
        assert proxy.count("CompleteMultipartUpload") == 0
    # close() sent the 8th part and completed the upload.
    parts = sorted(r.part_number for r in proxy.of_kind("UploadPart") if r.status == 200)
    assert parts == list(range(1, 9))
    completes = proxy.of_kind("CompleteMultipartUpload")
    assert len(completes) == 1 and completes[0].status == 200
    assert proxy.count("CreateMultipartUpload") == 1
    head = s3.head_object(Bucket=bucket, Key="stream.bin")
    assert head["ContentLength"] == size
    assert etag_parts(head["ETag"]) == 8
    assert sha256_object(s3, bucket, "stream.bin") == hashlib.sha256(data).hexdigest()
    assert no_pending_uploads(s3, bucket) == []


# --------------------------------------------------------------------- failures


def test_failed_upload_reports_error_and_keeps_old_version(
    s3: Any, bucket: str, proxy: S3Proxy, mount: Any, tmp_path: Path
) -> None:
    key = "victim.bin"
    old = b"the previous version\n" * 1000
    old_etag = s3.put_object(Bucket=bucket, Key=key, Body=old)["ETag"]
    src = random_file(tmp_path / "src.bin", 30 * MiB, seed=30)
    m = mount(bucket, f"endpoint_url={proxy.url}", "part_size=5M", "retries=2")
    proxy.add_fault("UploadPart", FAULT_500, part_number=3)  # permanent: every attempt

    result = cp(src, m.path / key)

    assert result.returncode != 0, "cp succeeded although part 3 could never be uploaded"
    assert key in result.stderr
    assert proxy.faults(), "the fault never fired"
    assert all(r.part_number == 3 for r in proxy.faults())
    assert proxy.count("CompleteMultipartUpload") == 0
    # The previous version is intact, nothing is left pending.
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert obj["ETag"] == old_etag
    assert obj["Body"].read() == old
    assert no_pending_uploads(s3, bucket) == []
    aborts = [r for r in proxy.of_kind("AbortMultipartUpload") if r.key == key]
    assert len(aborts) == 1 and aborts[0].status in (200, 204)
    # One line in the mount's log says which file failed.
    lines = wait_for(
        lambda: [ln for ln in m.log_text().splitlines() if key in ln],
        timeout=STORE_DEADLINE,
        message="the failure in the mount log",
    )
    assert len(lines) == 1, lines
    assert "ERROR" in lines[0]
    # The mount still works, and shows the old version again.
    assert (m.path / key).read_bytes() == old


def _write_at(fd: int, offset: int, data: bytes) -> int:
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, data)


@pytest.mark.parametrize(
    ("gap", "options"),
    [(1 * MiB, []), (12 * MiB, ["part_size=5M"])],
    ids=["small-gap", "gap-spanning-parts"],
)
def test_write_past_the_end_leaves_zeros(
    s3: Any, bucket: str, mount: Any, gap: int, options: list[str]
) -> None:
    m = mount(bucket, *options)
    fd = os.open(m.path / "sparse", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert _write_at(fd, 0, b"head") == 4
        assert _write_at(fd, 4 + gap, b"tail") == 4
    finally:
        os.close(fd)
    expected = b"head" + bytes(gap) + b"tail"
    head = s3.head_object(Bucket=bucket, Key="sparse")
    assert head["ContentLength"] == len(expected)
    assert sha256_object(s3, bucket, "sparse") == hashlib.sha256(expected).hexdigest()
    parts = expected_parts(len(expected), 5 * MiB if options else DEFAULT_PART)
    assert (etag_parts(head["ETag"]) or 1) == parts
    assert no_pending_uploads(s3, bucket) == []
