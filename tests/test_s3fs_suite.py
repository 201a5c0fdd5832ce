"""What other S3 filesystems' test suites check, through a real mount, in our own words.

s3fs-fuse's integration tests are the most likely to be run against s3mpfs; these are
the cases it found wrong:

- Growing a file that is being created with `ftruncate` before any write (`truncate -s`
  on a new name, `dd seek=N` without `conv=notrunc`) stores the grown file; the close
  that follows must not mistake that object for one another client created.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

pytestmark = pytest.mark.mount

MiB = 1024 * 1024


# ------------------------------------------------------------- growing a new file


def test_truncate_s_creates_a_file_of_that_size(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    subprocess.run(["truncate", "-s", str(20 * MiB), str(m.path / "big")], check=True)
    assert os.stat(m.path / "big").st_size == 20 * MiB
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == 20 * MiB
    body = s3.get_object(Bucket=bucket, Key="big", Range="bytes=-4096")["Body"].read()
    assert body == bytes(4096)


def test_dd_seek_into_a_new_file_writes_after_zeros(s3: Any, bucket: str,
                                                    mount: Any) -> None:
    m = mount(bucket)
    subprocess.run(["dd", "if=/dev/zero", f"of={m.path / 'f'}", "bs=1024", "seek=1",
                    "count=1", "status=none"], check=True)  # ftruncate(1024), write at 1024
    assert os.stat(m.path / "f").st_size == 2048
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == bytes(2048)


def test_writes_after_growing_a_new_file_are_kept(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, 100)
        os.pwrite(fd, b"tail", 100)
    finally:
        os.close(fd)
    assert (m.path / "f").read_bytes() == bytes(100) + b"tail"
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == bytes(100) + b"tail"
