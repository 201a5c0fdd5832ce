"""What other S3 filesystems' test suites check, through a real mount, in our own words.

s3fs-fuse's integration tests are the most likely to be run against s3mpfs; these are
the cases it found wrong:

- Growing a file that is being created with `ftruncate` before any write (`truncate -s`
  on a new name, `dd seek=N` without `conv=notrunc`) stores the grown file; the close
  that follows must not mistake that object for one another client created.
- A new object gets a Content-Type from its name's extension, as s3fs gives it (web
  servers and browsers in front of the bucket rely on it); a rename moves a type that was
  named after the old key to the one named after the new key, and keeps any other.
- Renaming a directory changes its ctime (stored in its marker), as renaming a file does;
  the files inside keep theirs.
- `chown` and `chmod` to the values a file already has still change its ctime (POSIX).
- A file renamed before it is closed (`(echo foo; mv f f.new) > f`, or a program that
  renames its temporary file before closing it) is stored under the new name.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from helpers import STORE_DEADLINE, random_bytes, wait_for

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
T0 = 1000000000  # 2001-09-09


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


# ------------------------------------------------------------------- Content-Type


def content_type(s3: Any, bucket: str, key: str) -> str:
    return s3.head_object(Bucket=bucket, Key=key)["ContentType"]


def test_new_files_get_a_content_type_from_their_extension(s3: Any, bucket: str,
                                                           mount: Any) -> None:
    m = mount(bucket)
    for name in ("page.txt", "photo.jpg", "data.bin", "noextension"):
        (m.path / name).write_bytes(b"")
    (m.path / "big.json").write_bytes(random_bytes(9 * MiB, seed=1))  # a multipart upload
    (m.path / "dir").mkdir()
    assert content_type(s3, bucket, "page.txt") == "text/plain"
    assert content_type(s3, bucket, "photo.jpg") == "image/jpeg"
    assert content_type(s3, bucket, "data.bin") == "application/octet-stream"
    assert content_type(s3, bucket, "noextension") == "application/octet-stream"
    assert content_type(s3, bucket, "big.json") == "application/json"
    assert content_type(s3, bucket, "dir/") == "application/x-directory"


def test_a_rename_moves_a_content_type_named_after_the_key(s3: Any, bucket: str,
                                                          mount: Any) -> None:
    m = mount(bucket)
    (m.path / "notes.txt").write_bytes(b"hello\n")
    (m.path / "notes.txt").rename(m.path / "notes.html")
    assert content_type(s3, bucket, "notes.html") == "text/html"
    (m.path / "notes.html").rename(m.path / "notes.html-old")
    assert content_type(s3, bucket, "notes.html-old") == "application/octet-stream"
    assert (m.path / "notes.html-old").read_bytes() == b"hello\n"


def test_a_rename_keeps_a_content_type_set_by_another_tool(s3: Any, bucket: str,
                                                          mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="report", Body=b"%PDF", ContentType="application/pdf")
    m = mount(bucket)
    (m.path / "report").rename(m.path / "report.txt")
    assert content_type(s3, bucket, "report.txt") == "application/pdf"


# ------------------------------------------------------------------- times


def test_renaming_a_directory_sets_its_ctime_only(s3: Any, bucket: str, mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="d/", Body=b"", ContentType="application/x-directory",
                  Metadata={"atime": str(T0), "ctime": str(T0), "mtime": str(T0)})
    s3.put_object(Bucket=bucket, Key="d/f", Body=b"x",
                  Metadata={"atime": str(T0), "ctime": str(T0), "mtime": str(T0)})
    m = mount(bucket)
    (m.path / "d").rename(m.path / "e")
    moved = os.stat(m.path / "e")
    assert (moved.st_atime, moved.st_mtime) == (T0, T0)
    assert moved.st_ctime > T0
    inside = os.stat(m.path / "e" / "f")  # the files inside are not changed
    assert (inside.st_atime, inside.st_ctime, inside.st_mtime) == (T0, T0, T0)
    stored = s3.head_object(Bucket=bucket, Key="e/")["Metadata"]
    assert float(stored["ctime"]) == pytest.approx(moved.st_ctime)
    assert stored["mtime"] == str(T0)


# ------------------------------------------------------------ rename before close


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_rename_before_close_in_a_shell(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    subprocess.run(["sh", "-c", "(echo foo; mv f f.new) > f"], cwd=m.path, check=True,
                   timeout=30)
    assert (m.path / "f.new").read_bytes() == b"foo\n"
    assert not (m.path / "f").exists()
    assert keys(s3, bucket) == ["f.new"]
    assert s3.get_object(Bucket=bucket, Key="f.new")["Body"].read() == b"foo\n"


def test_rename_before_close_then_more_writes(s3: Any, bucket: str, mount: Any) -> None:
    """The old name's previous version goes (the file was truncated), a replaced target
    is replaced, and writes after the rename land in the renamed file."""
    s3.put_object(Bucket=bucket, Key="draft", Body=b"previous draft")
    s3.put_object(Bucket=bucket, Key="final", Body=b"old final")
    m = mount(bucket)
    with open(m.path / "draft", "wb") as f:
        f.write(b"first half, ")
        f.flush()
        os.rename(m.path / "draft", m.path / "final")
        f.write(b"second half")
    assert (m.path / "final").read_bytes() == b"first half, second half"
    assert keys(s3, bucket) == ["final"]
    assert s3.get_object(Bucket=bucket, Key="final")["Body"].read() == \
        b"first half, second half"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# (a file renamed with parts uploaded: tests/mount/test_rename_open.py)


# --------------------------------------------------------- ctime of a same-value chown


def test_chown_and_chmod_to_the_same_values_change_ctime(s3: Any, bucket: str,
                                                          mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"data",
                  Metadata={"mode": "33188", "uid": str(os.getuid()),
                            "gid": str(os.getgid()), "mtime": str(T0), "ctime": str(T0)})
    m = mount(bucket)
    assert os.stat(m.path / "f").st_ctime == T0
    os.chown(m.path / "f", os.getuid(), -1)
    after_chown = os.stat(m.path / "f").st_ctime
    assert after_chown > T0
    wait_for(lambda: float(s3.head_object(Bucket=bucket, Key="f")["Metadata"]["ctime"]) > T0,
             timeout=STORE_DEADLINE, message="the new ctime to be stored")
    os.chmod(m.path / "f", 0o644)
    assert os.stat(m.path / "f").st_ctime >= after_chown
    assert os.stat(m.path / "f").st_mtime == T0  # only ctime moves
