"""Options the server refuses, or accepts and ignores (s3mpfs/s3/optioncheck.py): a mount
that could store nothing is refused with one line naming the option and the server's
answer; a storage class stored as another one is one ERROR line, and the mount goes on.

Refusals are the server's own where it has them (Ceph RGW 16.2 refuses DSSE-KMS), and
made by the test proxy (tests/s3proxy.py, FAULT_400 on requests carrying the option's
header) where it has none (moto takes every storage class)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import list_keys
from s3proxy import FAULT_400, S3Proxy
from test_faults import log_lines, via

pytestmark = pytest.mark.mount


def refuse(proxy: S3Proxy, header: str, code: str) -> None:
    """The proxy answers 400 `code` to every request creating an object with `header`."""
    for kind in ("PutObject", "CreateMultipartUpload", "CopyObject"):
        proxy.add_fault(kind, FAULT_400, header=header, error_code=code)


def refusal_line(m: Any) -> str:
    """The mount failed, and said why in exactly one line."""
    lines = m.log_text().strip().splitlines()
    assert m.returncode != 0 and len(lines) == 1, lines
    assert lines[0].startswith("s3mpfs: "), lines
    return lines[0]


def test_an_encryption_the_server_refuses_refuses_the_mount(
    s3_backend: Any, proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    if s3_backend.dsse_kms:  # Ceph RGW refuses it itself; moto takes it
        refuse(proxy, "x-amz-server-side-encryption: aws:kms:dsse", "InvalidArgument")
    m = mount(bucket, via(proxy), "sse=aws:kms:dsse", expect_failure=True)
    line = refusal_line(m)
    assert line.startswith("s3mpfs: sse=aws:kms:dsse: the server refuses it"), line
    assert "InvalidArgument (HTTP 400)" in line, line
    assert list_keys(s3, bucket) == []  # the test objects are gone


def test_a_storage_class_the_server_refuses_is_named_among_several_options(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    refuse(proxy, "x-amz-storage-class", "InvalidStorageClass")
    m = mount(bucket, via(proxy), "storage_class=GLACIER_IR", "acl=private",
              expect_failure=True)
    line = refusal_line(m)
    assert line.startswith("s3mpfs: storage_class=GLACIER_IR: the server refuses it"), line
    assert "InvalidStorageClass" in line, line
    assert list_keys(s3, bucket) == []


def test_an_acl_the_server_refuses_refuses_the_mount(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    refuse(proxy, "x-amz-acl", "AccessControlListNotSupported")
    m = mount(bucket, via(proxy), "acl=public-read", expect_failure=True)
    line = refusal_line(m)
    assert line.startswith("s3mpfs: acl=public-read: the server refuses it"), line


def test_options_the_server_takes_cost_no_line(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    m = mount(bucket, via(proxy), "storage_class=STANDARD_IA")
    (m.path / "f").write_bytes(b"data")
    assert s3.head_object(Bucket=bucket, Key="f")["StorageClass"] == "STANDARD_IA"
    assert log_lines(m, "s3mpfs.s3.optioncheck") == [] and log_lines(m, "s3mpfs.s3.gaps") == []


def test_a_storage_class_stored_as_another_is_one_error_line(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    proxy.strip_headers = {"x-amz-storage-class"}  # a server that stores STANDARD
    m = mount(bucket, via(proxy), "storage_class=STANDARD_IA")
    errors = log_lines(m, "ERROR")
    assert len(errors) == 1 and "storage_class=STANDARD_IA" in errors[0], errors
    assert "stores new objects as STANDARD" in errors[0], errors
    (m.path / "f").write_bytes(b"data")  # the mount goes on
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"data"


def test_a_storage_class_refused_by_put_object_refuses_the_mount(
    s3_backend: Any, bucket: str, mount: Any
) -> None:
    if s3_backend.name != "rgw":
        pytest.skip("moto stores every storage class it is given")
    m = mount(bucket, "storage_class=OUTPOSTS", expect_failure=True)  # Ceph RGW: 400
    line = refusal_line(m)
    assert line.startswith("s3mpfs: storage_class=OUTPOSTS: the server refuses it"), line
