"""The bucket is shared: another client writes while the mount has the directory's
listing cached. A new file on the mount never replaces an object s3mpfs has not seen:
`>>` appends to it, O_EXCL fails (at open, or at close where only the server can tell),
and the other client's bytes stay."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import STORE_DEADLINE, wait_for

from s3mpfs.fs.listings import LISTING_TTL, OWN_LISTING_TTL

pytestmark = pytest.mark.mount


def created_behind_the_listing(s3: Any, bucket: str, mount: Any, body: bytes) -> Path:
    """Mount, list `d/` through the mount (its listing is now cached), then let another
    client create `d/log.txt`; returns that file's path on the mount."""
    s3.put_object(Bucket=bucket, Key="d/keep", Body=b"")
    m = mount(bucket)
    assert "log.txt" not in os.listdir(m.path / "d")
    s3.put_object(Bucket=bucket, Key="d/log.txt", Body=body)
    return m.path / "d" / "log.txt"


def theirs(s3: Any, bucket: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key="d/log.txt")["Body"].read()


def test_append_to_a_name_another_client_just_created(
    s3: Any, bucket: str, mount: Any
) -> None:
    path = created_behind_the_listing(s3, bucket, mount, b"first line\n")
    result = subprocess.run(["sh", "-c", f"echo appended >> {path}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert theirs(s3, bucket) == b"first line\nappended\n"


def test_exclusive_create_of_a_name_another_client_just_created(
    s3: Any, bucket: str, mount: Any
) -> None:
    path = created_behind_the_listing(s3, bucket, mount, b"theirs")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        pass  # the server cannot tell at commit time: s3mpfs looked first
    else:
        os.write(fd, b"ours")
        with pytest.raises(OSError) as failure:
            os.close(fd)
        assert failure.value.errno == errno.EIO
    assert theirs(s3, bucket) == b"theirs"
    wait_for(lambda: not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
             message="nothing pending", timeout=STORE_DEADLINE)


def test_plain_create_without_trunc_opens_the_existing_object(
    s3: Any, bucket: str, mount: Any
) -> None:
    path = created_behind_the_listing(s3, bucket, mount, b"theirs")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))  # nothing written
    assert theirs(s3, bucket) == b"theirs"


def test_truncating_create_replaces_as_asked(s3: Any, bucket: str, mount: Any) -> None:
    path = created_behind_the_listing(s3, bucket, mount, b"theirs")
    path.write_bytes(b"ours")  # open(..., "wb"): O_TRUNC
    assert theirs(s3, bucket) == b"ours"


@pytest.mark.parametrize("new", [b"a longer new version\n", b"new\n", b"same length\n"])
def test_reading_a_file_another_client_just_replaced(
    s3: Any, bucket: str, mount: Any, new: bytes
) -> None:
    old = b"old version\n"
    s3.put_object(Bucket=bucket, Key="d/a.txt", Body=old)
    m = mount(bucket)
    assert (m.path / "d" / "a.txt").stat().st_size == len(old)  # listed and cached
    s3.put_object(Bucket=bucket, Key="d/a.txt", Body=new)
    result = subprocess.run(["cat", str(m.path / "d" / "a.txt")], capture_output=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr.decode() + m.log_text()
    assert result.stdout in (old, new)


def test_an_object_another_client_creates_is_found_at_once(
    s3: Any, bucket: str, mount: Any
) -> None:
    """A name missing from a cached listing is asked about again once the mount is not
    busy in that directory (negative_ttl, 0.25 s), not after the listing expires (2 s)."""
    s3.put_object(Bucket=bucket, Key="d/keep", Body=b"")
    m = mount(bucket)
    listed = time.monotonic()  # at most when the mount takes the listing
    assert os.listdir(m.path / "d") == ["keep"]  # the listing is cached now
    s3.put_object(Bucket=bucket, Key="d/new.txt", Body=b"theirs")
    wait_for(lambda: (m.path / "d" / "new.txt").exists(), timeout=STORE_DEADLINE,
             message="the other client's object to show")
    # Seen before the listing could expire: it was asked about, not listed again for its
    # age. (Measured from before the listing, not from the put: the put's own time, and
    # the 0.25 s, are then the only slack a loaded machine eats into, not a 1.5 s bound.)
    assert time.monotonic() - listed < LISTING_TTL
    assert (m.path / "d" / "new.txt").read_bytes() == b"theirs"


def test_in_a_directory_the_mount_created_too(s3: Any, bucket: str, mount: Any) -> None:
    """s3fs-fuse's own tests: a directory made through the mount, then objects written
    into it with the aws CLI and read through the mount straight away."""
    m = mount(bucket)
    (m.path / "run").mkdir()
    (m.path / "run" / "mine").write_bytes(b"mine")
    s3.put_object(Bucket=bucket, Key="run/external", Body=b"theirs")
    s3.put_object(Bucket=bucket, Key="run/sub/deep", Body=b"deeper")
    # (well within the 30 s a directory the mount made trusts its own listing)
    wait_for(lambda: (m.path / "run" / "external").exists(), timeout=OWN_LISTING_TTL / 2,
             message="the other client's object to show")
    assert (m.path / "run" / "external").read_bytes() == b"theirs"
    assert (m.path / "run" / "sub" / "deep").read_bytes() == b"deeper"
    assert sorted(os.listdir(m.path / "run")) == ["external", "mine", "sub"]


def test_a_name_this_mount_just_removed_is_never_replaced(
    s3: Any, bucket: str, mount: Any
) -> None:
    """SQLite deletes its journal and creates it again a moment later: that create makes no
    lookup (this mount removed the name itself, less than negative_ttl ago). An object
    another client created in that moment is still not replaced: the commit fails with EIO
    and their bytes stay (pinned negative_ttl: the moment lasts as long as the test)."""
    m = mount(bucket, "negative_ttl=30")
    path = m.path / "d" / "app.db-journal"
    path.parent.mkdir()
    path.write_bytes(b"ours, first")
    path.unlink()
    s3.put_object(Bucket=bucket, Key="d/app.db-journal", Body=b"theirs")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"ours, second")
    with pytest.raises(OSError) as failure:
        os.fsync(fd)
    assert failure.value.errno == errno.EIO
    try:
        os.close(fd)
    except OSError:
        pass  # (the same error again: what was written was not stored)
    assert s3.get_object(Bucket=bucket, Key="d/app.db-journal")["Body"].read() == b"theirs"
