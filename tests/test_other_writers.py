"""The bucket is shared: another client writes while the mount has the directory's
listing cached. A new file on the mount never replaces an object s3mpfs has not seen:
`>>` appends to it, O_EXCL fails (at open, or at close where only the server can tell),
and the other client's bytes stay."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

pytestmark = pytest.mark.mount


def prime_listing(directory: Path) -> None:
    """List the directory through the mount, so that its listing is cached."""
    assert "log.txt" not in os.listdir(directory)


def test_append_to_a_name_another_client_just_created(
    s3: Any, bucket: str, mount: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="logs/keep", Body=b"")
    m = mount(bucket)
    prime_listing(m.path / "logs")
    s3.put_object(Bucket=bucket, Key="logs/log.txt", Body=b"first line\n")
    result = subprocess.run(["sh", "-c", f"echo appended >> {m.path}/logs/log.txt"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr + m.log_text()
    body = s3.get_object(Bucket=bucket, Key="logs/log.txt")["Body"].read()
    assert body == b"first line\nappended\n"


def test_exclusive_create_of_a_name_another_client_just_created(
    s3: Any, bucket: str, mount: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="d/keep", Body=b"")
    m = mount(bucket)
    prime_listing(m.path / "d")
    s3.put_object(Bucket=bucket, Key="d/log.txt", Body=b"theirs")
    try:
        fd = os.open(m.path / "d" / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        pass  # the server cannot tell at commit time: s3mpfs looked first
    else:
        os.write(fd, b"ours")
        with pytest.raises(OSError) as failure:
            os.close(fd)
        assert failure.value.errno == errno.EIO
        assert [line for line in m.log_text().splitlines()
                if "another client created this object" in line]
    assert s3.get_object(Bucket=bucket, Key="d/log.txt")["Body"].read() == b"theirs"
    wait_for(lambda: not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
             message="nothing pending")


def test_plain_create_without_trunc_opens_the_existing_object(
    s3: Any, bucket: str, mount: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="d/keep", Body=b"")
    m = mount(bucket)
    prime_listing(m.path / "d")
    s3.put_object(Bucket=bucket, Key="d/log.txt", Body=b"theirs")
    fd = os.open(m.path / "d" / "log.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)  # nothing written: nothing replaced
    assert s3.get_object(Bucket=bucket, Key="d/log.txt")["Body"].read() == b"theirs"


def test_truncating_create_replaces_as_asked(s3: Any, bucket: str, mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="d/keep", Body=b"")
    m = mount(bucket)
    prime_listing(m.path / "d")
    s3.put_object(Bucket=bucket, Key="d/log.txt", Body=b"theirs")
    (m.path / "d" / "log.txt").write_bytes(b"ours")  # open(..., "wb"): O_TRUNC
    assert s3.get_object(Bucket=bucket, Key="d/log.txt")["Body"].read() == b"ours"
