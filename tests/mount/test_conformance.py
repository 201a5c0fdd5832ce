"""POSIX behaviours a conformance suite (pjdfstest and the like) checks, through a real
mount: the cases where s3mpfs once differed from a local Linux filesystem.

Times are compared the way such suites compare them: stat, wait for the next second of
the clock, act, stat again.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Any

import pytest
from helpers import STORE_DEADLINE, wait_for

pytestmark = pytest.mark.mount


def wait_for_the_next_second(st: os.stat_result) -> None:
    """Until the wall clock is past the second of `st`'s mtime and ctime: times set from
    now on are later, in whole seconds too."""
    second = int(max(st.st_mtime, st.st_ctime))
    wait_for(lambda: int(time.time()) > second, timeout=3, interval=0.01,
             message="the next second")


def test_open_o_trunc_of_an_empty_file_updates_its_times(s3: Any, bucket: str,
                                                          mount: Any) -> None:
    """POSIX: open() with O_TRUNC of a file that exists marks mtime and ctime for update,
    whatever its size; the new times are stored with the (empty) object at close."""
    m = mount(bucket)
    path = m.path / "empty"
    path.write_bytes(b"")
    before = os.stat(path)
    wait_for_the_next_second(before)
    os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))
    after = os.stat(path)
    assert after.st_size == 0
    assert int(after.st_mtime) > int(before.st_mtime)
    assert int(after.st_ctime) > int(before.st_ctime)
    stored = s3.head_object(Bucket=bucket, Key="empty")["Metadata"]
    assert float(stored["mtime"]) == pytest.approx(after.st_mtime, abs=1e-6)


def test_utimensat_keeps_every_nanosecond(s3: Any, bucket: str, mount: Any) -> None:
    """Times set with nanoseconds read back exactly, through the mount and after a remount
    (rsync and `cp -p` compare st_mtim to the nanosecond: a time off by some nanoseconds
    makes rsync copy the file again on every run)."""
    atime_ns, mtime_ns = 1900000000_123456789, 1900000000_987654321
    m = mount(bucket)
    path = m.path / "f"
    path.write_bytes(b"x")
    os.utime(path, ns=(atime_ns, mtime_ns))
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime_ns, mtime_ns)
    wait_for(lambda: s3.head_object(Bucket=bucket, Key="f")["Metadata"].get("mtime")
             == "1900000000.987654321", message="the exact mtime stored",
             timeout=STORE_DEADLINE)
    assert m.unmount() == 0
    st = os.stat(mount(bucket).path / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime_ns, mtime_ns)


def test_truncate_to_the_same_size_changes_nothing(bucket: str, mount: Any) -> None:
    """As on Linux (and POSIX: truncate() updates the times "if the file size is changed"):
    truncating a file to the size it has leaves its times as they were; another size
    updates them, and so does ftruncate() to the same size (Linux passes it mtime now)."""
    m = mount(bucket)
    path = m.path / "f"
    path.write_bytes(b"hello")
    before = os.stat(path)
    wait_for_the_next_second(before)
    os.truncate(path, 5)
    same = os.stat(path)
    assert (same.st_mtime_ns, same.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
    os.truncate(path, 3)
    after = os.stat(path)
    assert after.st_size == 3
    assert after.st_mtime > before.st_mtime and after.st_ctime > before.st_ctime
    wait_for_the_next_second(after)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, 3)
    finally:
        os.close(fd)
    last = os.stat(path)
    assert last.st_size == 3
    assert last.st_mtime > after.st_mtime and last.st_ctime > after.st_ctime


def test_a_set_group_id_directory_passes_on_its_group(s3: Any, bucket: str,
                                                       mount: Any) -> None:
    """As on Linux: entries created in a set-group-ID directory get its group (not the
    creator's), and new directories inherit the set-group-ID bit; the group is stored."""
    m = mount(bucket)
    shared = m.path / "shared"
    shared.mkdir()
    os.chown(shared, 0, 4321)
    os.chmod(shared, 0o2775)
    (shared / "f").write_bytes(b"x")
    (shared / "d").mkdir(0o755)
    os.symlink("f", shared / "l")
    os.mkfifo(shared / "p")
    for name in ("f", "d", "l", "p"):
        assert os.lstat(shared / name).st_gid == 4321, name
    assert stat.S_IMODE(os.stat(shared / "d").st_mode) == 0o2755
    assert os.stat(shared / "f").st_mode & stat.S_ISGID == 0
    assert s3.head_object(Bucket=bucket, Key="shared/f")["Metadata"]["gid"] == "4321"
    (m.path / "plain").mkdir()
    (m.path / "plain" / "g").write_bytes(b"x")
    assert os.stat(m.path / "plain" / "g").st_gid == 0


def test_an_unlinked_file_open_read_write_keeps_working(s3: Any, bucket: str,
                                                         mount: Any) -> None:
    """POSIX (pjdfstest's unlink/14): a file unlinked while open stays usable through its
    descriptor: what was written reads back, writes and fsync go on, fstat says no links;
    its name is gone at once and nothing is stored at close."""
    m = mount(bucket)
    path = m.path / "d" / "tmp"
    path.parent.mkdir()
    path.write_bytes(b"")  # exists in S3 already, empty
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, b"Hello, World!")
        os.unlink(path)
        assert not path.exists() and os.listdir(m.path / "d") == []
        assert os.pread(fd, 100, 0) == b"Hello, World!"
        os.pwrite(fd, b"there", 7)
        os.fsync(fd)
        assert os.pread(fd, 100, 0) == b"Hello, there!"
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    assert not path.exists()
    os.rmdir(m.path / "d")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="d/")
    assert listing.get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
