"""S3-compatible servers that differ from AWS: a real mount, talking to moto through the
proxy (tests/s3proxy.py) made to answer as such a server does.

- A server that ignores flexible checksums (Ceph RGW: no x-amz-checksum-* in its answers):
  the default `checksum=auto` falls back to Content-MD5 once, with one log line, and a
  part damaged on its way is still caught (its ETag is not the MD5 of what was sent) and
  sent again; an algorithm chosen explicitly refuses the mount with one line.
- A server that refuses CopyObject (Ceph RGW answers 501 for SSE-KMS and SSE-C sources):
  rename, chmod and touch copy part by part with UploadPartCopy, keeping every header;
  (without UploadPartCopy too: tests/mount/test_no_part_copy.py); when even reading the
  object back fails, the change is not shown as stored.
- A renamed multipart object reads back whatever checksum the server reports for it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from helpers import (
    STORE_DEADLINE,
    random_file,
    sha256_file,
    sha256_object,
    wait_for,
    wait_for_mode,
)
from s3proxy import CORRUPT, FAULT_400, FAULT_500, FAULT_501, S3Proxy
from test_faults import assert_object, assert_settled, cp, log_lines, via

pytestmark = pytest.mark.mount

MiB = 1024 * 1024


def uploaded_parts(proxy: S3Proxy, number: int) -> list[Any]:
    return [r for r in proxy.of_kind("UploadPart") if r.part_number == number]


# ------------------------------------------------------------------- checksums


def test_default_falls_back_to_content_md5_where_checksums_are_ignored(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    proxy.strip_checksums = True
    src = random_file(tmp_path / "src.bin", 12 * MiB + 7, seed=1)
    m = mount(bucket, via(proxy), "part_size=5M")
    small = random_file(tmp_path / "small.bin", 70_001, seed=2)
    assert cp(src, m.path / "big.bin").returncode == 0, m.log_text()
    assert cp(small, m.path / "small.bin").returncode == 0, m.log_text()
    assert_object(s3, bucket, "big.bin", src, parts=3)
    assert_object(s3, bucket, "small.bin", small, parts=None)
    assert_settled(s3, bucket)
    for r in proxy.of_kind("UploadPart") + proxy.of_kind("PutObject"):
        if r.key and not r.key.startswith(".s3mpfs/"):
            assert "content-md5" in r.headers, (r.kind, r.key, r.headers)
    assert len(log_lines(m, "falls back") + log_lines(m, "Content-MD5 from now on")) == 1


def test_default_falls_back_to_content_md5_where_crc32c_is_refused(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    """A server that answers 400 to a CRC32C it does not support (rather than ignoring
    it): the mount-time probe finds it, and the mount sends Content-MD5 from then on."""
    refusal = proxy.add_fault("PutObject", FAULT_400, header="x-amz-checksum-crc32c",
                              key_contains=".s3mpfs/probe-", error_code="InvalidRequest")
    src = random_file(tmp_path / "src.bin", 12 * MiB + 7, seed=1)
    m = mount(bucket, via(proxy), "part_size=5M")
    assert refusal.fired == 1
    assert cp(src, m.path / "big.bin").returncode == 0, m.log_text()
    assert_object(s3, bucket, "big.bin", src, parts=3)
    for r in proxy.of_kind("UploadPart"):
        assert "content-md5" in r.headers and "x-amz-checksum-crc32c" not in r.headers
    [line] = log_lines(m, "Content-MD5 from now on")
    assert "refused (InvalidRequest)" in line, line


def test_default_sends_crc32c_where_the_server_echoes_it(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path, s3_backend: Any
) -> None:
    if not s3_backend.flexible_checksums:
        pytest.skip("the server ignores flexible checksums (the fallback is tested above)")
    src = random_file(tmp_path / "src.bin", 12 * MiB + 7, seed=5)
    m = mount(bucket, via(proxy), "part_size=5M")
    assert cp(src, m.path / "big.bin").returncode == 0, m.log_text()
    assert_object(s3, bucket, "big.bin", src, parts=3)
    parts = proxy.of_kind("UploadPart")
    assert len(parts) == 3
    assert all("x-amz-checksum-crc32c" in r.headers and "content-md5" not in r.headers
               for r in parts), [r.headers for r in parts]
    assert not log_lines(m, "Content-MD5 from now on")


def test_a_part_damaged_on_its_way_is_sent_again(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    proxy.strip_checksums = True  # the server verifies nothing s3mpfs can see
    proxy.add_fault("UploadPart", CORRUPT, part_number=2, times=1)
    src = random_file(tmp_path / "src.bin", 12 * MiB + 7, seed=3)
    m = mount(bucket, via(proxy), "part_size=5M")
    assert cp(src, m.path / "f.bin").returncode == 0, m.log_text()
    assert_object(s3, bucket, "f.bin", src, parts=3)
    assert len(uploaded_parts(proxy, 2)) == 2
    # caught by s3mpfs (the ETag is not the MD5 sent: moto verifies nothing), or by the
    # server's own Content-MD5 check (Ceph RGW answers BadDigest)
    assert (log_lines(m, "part 2 of f.bin", "other bytes than were sent")
            or log_lines(m, "part 2 of f.bin", "damaged in transit"))


def test_a_part_damaged_every_time_fails_the_file_and_keeps_the_old_one(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    proxy.strip_checksums = True
    s3.put_object(Bucket=bucket, Key="f.bin", Body=b"previous")
    proxy.add_fault("UploadPart", CORRUPT, part_number=2)
    src = random_file(tmp_path / "src.bin", 12 * MiB + 7, seed=4)
    m = mount(bucket, via(proxy), "part_size=5M")
    result = cp(src, m.path / "f.bin")
    assert result.returncode != 0
    assert "Input/output error" in result.stderr
    assert s3.get_object(Bucket=bucket, Key="f.bin")["Body"].read() == b"previous"
    wait_for(lambda: not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
             message="the failed upload to be aborted", timeout=STORE_DEADLINE)


def test_an_explicit_checksum_the_server_ignores_refuses_the_mount(
    proxy: S3Proxy, bucket: str, mount: Any
) -> None:
    proxy.strip_checksums = True
    m = mount(bucket, via(proxy), "checksum=crc32c", expect_failure=True)
    assert m.returncode != 0
    lines = m.log_text().strip().splitlines()
    assert "checksum=md5" in lines[-1] and "does not verify checksum=crc32c" in lines[-1]


def test_a_renamed_multipart_file_reads_back(
    s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    # moto's CopyObject keeps the source's composite checksum and reports it as a
    # full-object one: the model test found reads of renamed files failing on it.
    src = random_file(tmp_path / "src.bin", 5 * MiB + 1, seed=5)
    m = mount(bucket, "part_size=5M")
    assert cp(src, m.path / "a").returncode == 0, m.log_text()
    os.rename(m.path / "a", m.path / "b")
    assert sha256_file(m.path / "b") == sha256_file(src)
    unchecked = boto3.client("s3", endpoint_url=s3.meta.endpoint_url,
                             config=Config(response_checksum_validation="when_required"))
    assert sha256_object(unchecked, bucket, "b") == sha256_file(src)


# ------------------------------------------------------------------- copies


FOREIGN = {
    "ContentType": "text/html",
    "CacheControl": "max-age=60",
    "ContentDisposition": "attachment; filename=x.html",
    "ContentEncoding": "identity",
    "ContentLanguage": "de",
    "Metadata": {"foreign": "keepme"},
}


def put_foreign(s3: Any, bucket: str, key: str, size: int) -> bytes:
    """An object another tool wrote, with headers and tags s3mpfs does not own."""
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key=key, Body=data, Tagging="team=backup", **FOREIGN)
    return data


def assert_foreign_kept(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    head = s3.head_object(Bucket=bucket, Key=key)
    for name, value in FOREIGN.items():
        if name == "Metadata":
            assert head["Metadata"]["foreign"] == "keepme", head["Metadata"]
        else:
            assert head.get(name) == value, (name, head.get(name))
    # (on servers that drop tags on copies they are set again right after the copy)
    wait_for(lambda: s3.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
             == [{"Key": "team", "Value": "backup"}], message="the tags",
             timeout=STORE_DEADLINE)
    return head


@pytest.mark.parametrize("copy_object", ["works", "refused"])
@pytest.mark.parametrize("size", [1000, 6 * MiB])
def test_rename_chmod_touch_keep_every_header(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, copy_object: str, size: int
) -> None:
    if copy_object == "refused":
        proxy.add_fault("CopyObject", FAULT_501)
    data = put_foreign(s3, bucket, "a.html", size)
    m = mount(bucket, via(proxy))
    os.chmod(m.path / "a.html", 0o600)
    os.utime(m.path / "a.html", (1262304000, 1262304000))
    wait_for(lambda: s3.head_object(Bucket=bucket, Key="a.html")["Metadata"].get("mtime")
             == "1262304000", message="the attributes to be stored", timeout=STORE_DEADLINE)
    head = assert_foreign_kept(s3, bucket, "a.html")
    assert int(head["Metadata"]["mode"]) & 0o7777 == 0o600
    os.rename(m.path / "a.html", m.path / "b.html")
    head = assert_foreign_kept(s3, bucket, "b.html")
    assert int(head["Metadata"]["mode"]) & 0o7777 == 0o600
    assert s3.get_object(Bucket=bucket, Key="b.html")["Body"].read() == data
    if copy_object == "refused":
        assert proxy.count("UploadPartCopy") >= 2
        assert len(log_lines(m, "does not implement CopyObject")) == 1
        assert "None" not in "".join(log_lines(m, "NotImplemented"))


def refuse_every_copy_of(proxy: S3Proxy, key: str) -> None:
    """No copy of `key` can be made: the server implements neither CopyObject nor
    UploadPartCopy, and reading it back (the fallback) fails too."""
    proxy.add_fault("CopyObject", FAULT_501)
    proxy.add_fault("UploadPartCopy", FAULT_501)
    proxy.add_fault("GetObject", FAULT_501, key_contains=key)


def test_attributes_that_cannot_be_stored_are_not_shown_as_stored(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    refuse_every_copy_of(proxy, "unstorable")
    s3.put_object(Bucket=bucket, Key="unstorable", Body=b"data",
                  Metadata={"mode": str(0o100644)})
    m = mount(bucket, via(proxy))
    os.chmod(m.path / "unstorable", 0o600)
    wait_for(lambda: stat.S_IMODE(os.stat(m.path / "unstorable").st_mode) == 0o644,
             timeout=40, message="the mount to show what S3 holds again")
    assert s3.head_object(Bucket=bucket, Key="unstorable")["Metadata"]["mode"] \
        == str(0o100644)
    line = log_lines(m, "could not store the attributes of unstorable", "showing what S3 holds")
    assert line and "NotImplemented (HTTP 501)" in line[0]
    # a refusal is not retried: one try, then the mount gives up
    assert len(log_lines(m, "could not store the attributes of unstorable (")) == 1


def test_attributes_whose_copy_failed_are_stored_by_a_retry(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    """A failure (not a refusal) is tried again: two attempts of the copy fail, the
    attribute writer's second try stores the mode."""
    s3.put_object(Bucket=bucket, Key="flaky", Body=b"data", Metadata={"mode": str(0o100644)})
    proxy.add_fault("CopyObject", FAULT_500, times=2)
    m = mount(bucket, via(proxy), "retries=2")
    os.chmod(m.path / "flaky", 0o600)
    wait_for(lambda: s3.head_object(Bucket=bucket, Key="flaky")["Metadata"]["mode"]
             == str(0o100600), timeout=STORE_DEADLINE, message="the retry to store the mode")
    assert len(log_lines(m, "could not store the attributes of flaky (")) == 1
    assert not log_lines(m, "gave up")
    assert stat.S_IMODE(os.stat(m.path / "flaky").st_mode) == 0o600
    assert s3.get_object(Bucket=bucket, Key="flaky")["Body"].read() == b"data"


def test_rename_refused_entirely_fails_cleanly(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    refuse_every_copy_of(proxy, "unstorable")
    s3.put_object(Bucket=bucket, Key="unstorable", Body=b"data")
    m = mount(bucket, via(proxy))
    result = subprocess.run(["mv", str(m.path / "unstorable"), str(m.path / "g")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert s3.get_object(Bucket=bucket, Key="unstorable")["Body"].read() == b"data"
    assert "g" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert log_lines(m, "does not implement UploadPartCopy")


@pytest.mark.parametrize("change", ["truncate", "overwrite", "append", "large overwrite"])
def test_a_new_version_keeps_every_header(
    s3: Any, bucket: str, mount: Any, tmp_path: Path, change: str
) -> None:
    put_foreign(s3, bucket, "a.html", 1000)
    m = mount(bucket, "part_size=5M")
    path = m.path / "a.html"
    if change == "truncate":
        os.truncate(path, 10)
    elif change == "overwrite":
        path.write_bytes(b"<html>new</html>")
    elif change == "append":
        with open(path, "ab") as f:
            f.write(b"more")
    else:
        src = random_file(tmp_path / "big", 11 * MiB, seed=9)
        assert cp(src, path).returncode == 0, m.log_text()
    head = assert_foreign_kept(s3, bucket, "a.html")
    assert "mode" in head["Metadata"]


def test_directory_markers_keep_their_headers(s3: Any, bucket: str, mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="d/", Body=b"", ContentType="application/x-directory",
                  Metadata={"foreign": "keepme"})
    m = mount(bucket)
    os.chmod(m.path / "d", 0o700)
    head = wait_for_mode(s3, bucket, "d/", stat.S_IFDIR | 0o700)
    assert head["ContentType"] == "application/x-directory"
    assert head["Metadata"]["foreign"] == "keepme"
    (m.path / "new").mkdir()
    assert s3.head_object(Bucket=bucket, Key="new/")["ContentType"] == "application/x-directory"
