"""Two mounts of one bucket, each its own daemon, stand for two hosts. What one writes,
the other must never silently drop (docs/SEMANTICS.md, "Several hosts")."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
from helpers import STORE_DEADLINE, no_pending_uploads, random_bytes, wait_for

pytestmark = pytest.mark.mount

MiB = 1024 * 1024


def close_errno(fd: int) -> int:
    """0 if close() succeeds, else its errno."""
    try:
        os.close(fd)
    except OSError as exc:
        return exc.errno or -1
    return 0


def write_and_close(fd: int, data: bytes) -> int:
    """0 if the write and the close succeed, else the errno of the first that fails."""
    try:
        os.write(fd, data)
    except OSError as exc:
        os.close(fd)
        return exc.errno or -1
    return close_errno(fd)


def append(path: Any, data: bytes) -> bool:
    try:
        with open(path, "ab") as f:
            f.write(data)
    except OSError:
        return False
    return True


def nothing_pending(s3: Any, bucket: str) -> None:
    wait_for(lambda: not no_pending_uploads(s3, bucket), timeout=STORE_DEADLINE,
             message="no pending upload")


@pytest.mark.parametrize("size", [6 * MiB, 1000], ids=["copied-base", "small-base"])
def test_an_append_never_drops_another_hosts_append(
    s3: Any, bucket: str, hosts: Any, size: int
) -> None:
    base = random_bytes(size, seed=1)
    s3.put_object(Bucket=bucket, Key="log", Body=base)
    a, b = hosts("part_size=5M")
    fd = os.open(a.path / "log", os.O_WRONLY | os.O_APPEND)  # A builds on `base`
    with open(b.path / "log", "ab") as f:  # B appends first, and commits
        f.write(b"B\n")
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == base + b"B\n"
    # A's version would have dropped B's line: refused, at the write (a small base is read
    # back, pinned to its version) or at the close (a large one is copied server-side).
    assert write_and_close(fd, b"A\n") == errno.EIO
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == base + b"B\n"
    assert "another client changed" in a.log_text() or "PreconditionFailed" in a.log_text()
    nothing_pending(s3, bucket)
    # A, opened again once its cached view of the name expires, appends to what is there
    # (an attempt with the stale view fails the same way and changes nothing).
    wait_for(lambda: append(a.path / "log", b"A\n"), timeout=STORE_DEADLINE,
             message="A's append to succeed")
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == base + b"B\nA\n"


def test_a_new_large_file_never_replaces_one_another_host_created(
    s3: Any, bucket: str, hosts: Any
) -> None:
    a, b = hosts("part_size=5M")
    fd = os.open(a.path / "new.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, random_bytes(6 * MiB, seed=2))  # a part is on its way
    (b.path / "new.bin").write_bytes(b"theirs")  # B creates the name meanwhile
    assert close_errno(fd) == errno.EIO
    assert s3.get_object(Bucket=bucket, Key="new.bin")["Body"].read() == b"theirs"
    assert "another client created this object" in a.log_text()
    nothing_pending(s3, bucket)


def test_a_file_deleted_by_another_host_fails_reads_with_eio(
    s3: Any, bucket: str, hosts: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="big", Body=random_bytes(8 * MiB, seed=3))
    a, b = hosts("read_ahead=1M")
    with open(a.path / "big", "rb", buffering=0) as f:
        assert len(f.read(4096)) == 4096
        os.unlink(b.path / "big")
        with pytest.raises(OSError) as failure:
            os.pread(f.fileno(), 4096, 7 * MiB)
    assert failure.value.errno == errno.EIO
    assert "deleted while open" in a.log_text()


def test_a_failed_fsync_fails_the_descriptors_later_writes_and_close(
    s3: Any, bucket: str, hosts: Any
) -> None:
    """Found by test_two_hosts_generated (seeds 1 and 5). An fsync refused because another
    host created the file meanwhile left the descriptor going on: its next write started a
    new version of the file with zeros where the refused bytes were, and its next commit
    stored that, unconditionally, over the other host's file."""
    a, b = hosts("part_size=5M")
    fd = os.open(a.path / "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"A" * 1000)
    (b.path / "new").write_bytes(b"theirs")  # B creates the name meanwhile
    with pytest.raises(OSError) as refused:
        os.fsync(fd)
    assert refused.value.errno == errno.EIO
    for call in (lambda: os.write(fd, b"more"), lambda: os.fsync(fd)):
        try:  # what was written is lost: the descriptor must not go on as if it were not
            call()
        except OSError as exc:
            assert exc.errno == errno.EIO
    assert close_errno(fd) == errno.EIO  # nothing this descriptor wrote is stored
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"theirs"
    nothing_pending(s3, bucket)


@pytest.mark.parametrize("flags", [os.O_WRONLY | os.O_APPEND, os.O_RDWR],
                         ids=["append", "read-write"])
def test_a_version_built_on_an_empty_file_never_drops_another_hosts_write(
    s3: Any, bucket: str, hosts: Any, flags: int
) -> None:
    """Found by test_two_hosts_generated (seeds 4 and 7): a file opened on an empty
    object was committed with no condition (an empty base has no bytes to carry, and the
    condition went with those), so it replaced what another host had appended since."""
    s3.put_object(Bucket=bucket, Key="log", Body=b"")
    a, b = hosts("part_size=5M")
    fd = os.open(a.path / "log", flags)  # A builds on the empty version
    with open(b.path / "log", "ab") as f:  # B appends first, and commits
        f.write(b"B\n")
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"B\n"
    assert write_and_close(fd, b"A\n") == errno.EIO
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"B\n"
    assert "another client changed" in a.log_text()
    nothing_pending(s3, bucket)
    # Opened again once A's cached view expires, A appends to what is there.
    wait_for(lambda: append(a.path / "log", b"A\n"), message="A's append to succeed")
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"B\nA\n"


@pytest.mark.parametrize("flags", [os.O_WRONLY | os.O_TRUNC, os.O_RDWR | os.O_TRUNC],
                         ids=["write-only", "read-write"])
def test_a_descriptor_kept_open_after_fsync_never_writes_over_another_hosts_version(
    s3: Any, bucket: str, hosts: Any, flags: int
) -> None:
    """Found by a long run of test_two_hosts_generated on Ceph RGW (seed 11238). A stores
    its file with fsync and keeps the descriptor; B replaces the file; A's mount sees B's
    version (a stat, a listing). A's next writes started a new version built on B's,
    which A's descriptor never saw, and its close stored it over B's (on a server that
    ignores If-Match, the HEAD before the PUT found the version it was built on)."""
    a, b = hosts("part_size=5M")
    fd = os.open(a.path / "f", flags | os.O_CREAT, 0o644)
    os.write(fd, b"A" * 100)
    os.fsync(fd)  # stored; the descriptor goes on from that version
    (b.path / "f").write_bytes(b"B" * 3000)  # B replaces it
    wait_for(lambda: os.stat(a.path / "f").st_size == 3000, timeout=STORE_DEADLINE,
             message="A to see B's version")
    with pytest.raises(OSError) as refused:
        os.write(fd, b"more of A's")
    assert refused.value.errno == errno.EIO
    assert close_errno(fd) == errno.EIO  # (what it wrote is not stored)
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"B" * 3000
    assert "another client replaced this file" in a.log_text()
    nothing_pending(s3, bucket)


def test_a_new_file_whose_close_failed_is_not_written_again_through_its_old_entry(
    s3: Any, bucket: str, hosts: Any
) -> None:
    """Found by test_two_hosts_generated (seeds 191, 233, 297): after a new file's commit
    failed (another host created the name), the kernel still had the name's entry for
    the file that was never stored. Opening it again for writing reached that inode: it
    was built on no object and committed with no condition (the other host's object
    replaced, zeros where the failed bytes had been), and after a rename of the name it
    wrote to the old key. Such an open now fails with ESTALE, on which the kernel looks
    the name up again and opens the object S3 holds."""
    a, b = hosts("part_size=5M")
    fd = os.open(a.path / "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"A" * 1000)
    (b.path / "new").write_bytes(b"theirs")
    assert close_errno(fd) == errno.EIO
    assert append(a.path / "new", b"+A")  # (right away: the kernel's entry is still there)
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"theirs+A"

    fd = os.open(a.path / "x", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"A" * 1000)
    (b.path / "x").write_bytes(b"theirs")
    assert close_errno(fd) == errno.EIO
    os.rename(a.path / "x", a.path / "y")  # moves B's object
    assert append(a.path / "y", b"+A")
    assert s3.get_object(Bucket=bucket, Key="y")["Body"].read() == b"theirs+A"
    assert "x" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    nothing_pending(s3, bucket)


def test_a_rename_through_a_stale_view_keeps_the_size_of_what_it_moved(
    s3: Any, bucket: str, hosts: Any
) -> None:
    """Found by test_two_hosts_generated (seed 27): B renamed a file another host had just
    appended to. The rename moved the current object, and the file took the copy's ETag,
    but kept the size of B's older view: an append to it then read back that many bytes
    of the new version, its commit's condition (that ETag) held, and the tail of the other
    host's version was cut off. The moved file now has the size of what was moved."""
    a, b = hosts("part_size=5M")
    (b.path / "c").write_bytes(b"B" * 1000)
    assert os.stat(b.path / "c").st_size == 1000  # B's view, cached
    assert append(a.path / "c", b"A" * 500)
    os.rename(b.path / "c", b.path / "d")  # right away: B's view of c is 1000 B
    assert s3.get_object(Bucket=bucket, Key="d")["Body"].read() == b"B" * 1000 + b"A" * 500
    if append(b.path / "d", b"+B"):
        assert s3.get_object(Bucket=bucket, Key="d")["Body"].read() == \
            b"B" * 1000 + b"A" * 500 + b"+B"
    assert s3.get_object(Bucket=bucket, Key="d")["Body"].read().startswith(
        b"B" * 1000 + b"A" * 500)
    nothing_pending(s3, bucket)


def test_a_read_descriptor_reads_one_version_across_another_hosts_append(
    s3: Any, bucket: str, hosts: Any
) -> None:
    """From test_two_hosts_generated (tests/hosts/two_hosts_cases/read-switches-to-an-
    appended-version.txt): B appends to a file A has open, before A read a byte. A's
    first read finds the version it opened gone and reads the new one (nothing of the
    old was returned: SEMANTICS, "Reads over a flaky network"), stopping at the size the
    kernel knew; once fstat shows the new size, the rest is of that same version. Every
    byte through the descriptor is of one version, whole, or the read fails with EIO."""
    a, b = hosts("part_size=5M")
    first = random_bytes(26034, seed=11)
    (b.path / "f").write_bytes(first)
    wait_for(lambda: os.path.getsize(a.path / "f") == len(first), message="A to see f")
    fd = os.open(a.path / "f", os.O_RDONLY)
    try:
        with open(b.path / "f", "ab") as f:
            f.write(random_bytes(4072, seed=12))
        second = first + random_bytes(4072, seed=12)
        head = os.pread(fd, 65536, 24497)
        assert head == first[24497:]  # (the same bytes in both versions)
        wait_for(lambda: os.fstat(fd).st_size == len(second), timeout=STORE_DEADLINE,
                 message="A's fstat to show B's append")
        try:
            rest = os.pread(fd, 200001, 12072)
        except OSError as exc:
            assert exc.errno == errno.EIO
        else:
            assert rest in (first[12072:], second[12072:])
    finally:
        os.close(fd)

