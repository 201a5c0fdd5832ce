"""A server without UploadPartCopy and CopyObject (s3rver; here the test proxy answering
501 to both): in-place edits, appends, renames and attribute changes of a multipart
object still work, built from ranged GETs of the unchanged bytes plus UploadPart, one
part at a time, with one log line saying why it is slower. A server without
AbortMultipartUpload or ListMultipartUploads gets one line saying what to do about the
parts of failed uploads."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import list_keys, random_bytes, sha256_file, sha256_object, wait_for_mode
from s3proxy import FAULT_501, S3Proxy
from test_faults import assert_settled, cp, log_lines, via

pytestmark = pytest.mark.mount

MiB = 1024 * 1024


def ranged_get_sizes(proxy: S3Proxy) -> list[int]:
    sizes = []
    for r in proxy.of_kind("GetObject"):
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", r.headers.get("range", ""))
        sizes.append(int(match.group(2)) - int(match.group(1)) + 1 if match else -1)
    return sizes


def test_edit_append_rename_and_chmod_without_part_copies(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    proxy.add_fault("UploadPartCopy", FAULT_501)
    proxy.add_fault("CopyObject", FAULT_501)
    data = random_bytes(12 * MiB, seed=20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    m = mount(bucket, via(proxy), "part_size=5M")
    assert cp(src, m.path / "a.bin").returncode == 0, m.log_text()

    patch = os.urandom(4096)
    with open(m.path / "a.bin", "r+b") as f:  # in place, in the middle part
        f.seek(6 * MiB)
        f.write(patch)
    expected = data[:6 * MiB] + patch + data[6 * MiB + len(patch):]
    assert sha256_object(s3, bucket, "a.bin") == hashlib.sha256(expected).hexdigest()

    with open(m.path / "a.bin", "ab") as f:  # an append to an object over 5 MiB
        f.write(b"tail")
    expected += b"tail"
    assert sha256_object(s3, bucket, "a.bin") == hashlib.sha256(expected).hexdigest()

    os.rename(m.path / "a.bin", m.path / "b.bin")
    assert "a.bin" not in list_keys(s3, bucket)
    assert sha256_object(s3, bucket, "b.bin") == hashlib.sha256(expected).hexdigest()

    os.chmod(m.path / "b.bin", 0o600)
    wait_for_mode(s3, bucket, "b.bin", stat.S_IFREG | 0o600)
    assert sha256_object(s3, bucket, "b.bin") == hashlib.sha256(expected).hexdigest()
    assert s3.head_object(Bucket=bucket, Key="b.bin")["ETag"].endswith('-3"')  # multipart
    assert sha256_file(m.path / "b.bin") == hashlib.sha256(expected).hexdigest()

    copies = proxy.of_kind("UploadPartCopy") + proxy.of_kind("CopyObject")
    assert copies and all(r.status == 501 for r in copies)
    assert max(ranged_get_sizes(proxy)) <= 8 * MiB  # a part (or a read-ahead block) at a time
    assert len(log_lines(m, "does not implement UploadPartCopy")) == 1
    assert_settled(s3, bucket)


def test_a_server_without_abort_or_listing_says_what_to_do_about_leftovers(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    proxy.add_fault("AbortMultipartUpload", FAULT_501)
    proxy.add_fault("ListMultipartUploads", FAULT_501)
    m = mount(bucket, via(proxy))
    lines = log_lines(m, "does not implement AbortMultipartUpload or ListMultipartUploads")
    assert len(lines) == 1 and "lifecycle rule" in lines[0], m.log_text()
    (m.path / "f").write_bytes(b"data")  # the mount works
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"data"
    assert list_keys(s3, bucket) == ["f"]  # the probe left nothing behind
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
