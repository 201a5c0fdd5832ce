"""POSIX attributes and file types through a real mount, checked in the bucket too:
atime and ctime (stored as s3fs stores them), mtime on truncate and on creation,
FIFOs, sockets and device nodes, reads of files opened O_RDWR, extended attributes,
directories' mtime, and st_nlink of unlinked files.

Attribute changes on closed files reach S3 about half a second later (coalesced), so
the bucket is polled with a deadline; the mount's own view must be right at once.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import STORE_DEADLINE, wait_for, wait_for_mode

pytestmark = pytest.mark.mount

T2010 = 1262304000  # 2010-01-01


def meta(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return s3.head_object(Bucket=bucket, Key=key)["Metadata"]


def stored(s3: Any, bucket: str, key: str, name: str, value: str) -> dict[str, str]:
    """Wait until the object's metadata entry `name` is `value`; return the metadata."""
    return wait_for(lambda: (m := meta(s3, bucket, key)).get(name) == value and m,
                    message=f"x-amz-meta-{name}={value} on {key}", timeout=STORE_DEADLINE)


def remount(m: Any, mount: Any, bucket: str) -> Any:
    assert m.unmount() == 0
    return mount(bucket)


# ------------------------------------------------------------------- times


def test_atime_is_stored_and_survives_a_remount(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    (m.path / "f").write_bytes(b"x")
    subprocess.run(["touch", "-a", "-d", f"@{T2010}", str(m.path / "f")], check=True)
    assert os.stat(m.path / "f").st_atime == T2010
    stored(s3, bucket, "f", "atime", str(T2010))
    m = remount(m, mount, bucket)
    assert os.stat(m.path / "f").st_atime == T2010


@pytest.mark.parametrize("change", ["chmod", "chown", "utime", "truncate", "rename"])
def test_ctime_moves_with_every_change(s3: Any, bucket: str, mount: Any, change: str) -> None:
    m = mount(bucket)
    path = m.path / "f"
    path.write_bytes(b"hello")
    os.utime(path, (T2010, T2010))
    stored(s3, bucket, "f", "mtime", str(T2010))
    before = os.stat(path).st_ctime
    if change == "chmod":
        os.chmod(path, 0o600)
    elif change == "chown":
        os.chown(path, 1234, 1234)
    elif change == "utime":
        os.utime(path, (T2010 + 5, T2010 + 5))
    elif change == "truncate":
        os.truncate(path, 2)
    else:
        path = path.rename(m.path / "g")
    after = os.stat(path).st_ctime
    assert after > before
    key = path.name
    wait_for(lambda: float(meta(s3, bucket, key).get("ctime", "0")) == pytest.approx(after),
             message="the new ctime to be stored", timeout=STORE_DEADLINE)


def test_truncate_sets_mtime(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    path = m.path / "t"
    path.write_bytes(b"hello\n")
    os.utime(path, (T2010, T2010))
    os.truncate(path, 123)
    now = time.time()
    assert abs(os.stat(path).st_mtime - now) < 5
    assert abs(float(meta(s3, bucket, "t")["mtime"]) - now) < 5
    assert os.stat(path).st_size == 123


def test_an_empty_file_keeps_its_creation_mtime(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    path = m.path / "m"
    path.write_bytes(b"")  # ': > m'
    shown = os.stat(path).st_mtime
    # what the mount shows once its caches expire is what S3 stores
    assert float(meta(s3, bucket, "m")["mtime"]) == pytest.approx(shown, abs=1e-6)


# ------------------------------------------------------------------- file types


def test_mkfifo_mknod_and_sockets(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    os.mkfifo(m.path / "fifo", 0o640)
    os.mknod(m.path / "regular", 0o600 | stat.S_IFREG)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(m.path / "sock"))
    os.mknod(m.path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    assert stat.S_ISFIFO(os.stat(m.path / "fifo").st_mode)
    assert stat.S_ISREG(os.stat(m.path / "regular").st_mode)
    assert stat.S_ISSOCK(os.stat(m.path / "sock").st_mode)
    assert os.stat(m.path / "null").st_rdev == os.makedev(1, 3)
    assert int(meta(s3, bucket, "fifo")["mode"]) == stat.S_IFIFO | 0o640
    assert meta(s3, bucket, "null")["rdev"] == str(os.makedev(1, 3))
    m = remount(m, mount, bucket)
    assert stat.S_ISFIFO(os.stat(m.path / "fifo").st_mode)
    assert stat.S_ISCHR(os.stat(m.path / "null").st_mode)
    assert os.stat(m.path / "null").st_rdev == os.makedev(1, 3)


@pytest.mark.parametrize("tool", ["tar", "rsync"])
def test_special_files_round_trip_through_tar_and_rsync(
    bucket: str, mount: Any, tmp_path: Path, tool: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo", 0o600)
    (src / "file").write_bytes(b"data")
    m = mount(bucket)
    if tool == "tar":
        subprocess.run(["tar", "-C", str(src), "-cf", str(m.path / "a.tar"), "."], check=True)
        out = tmp_path / "out"
        out.mkdir()
        subprocess.run(["tar", "-C", str(out), "-xf", str(m.path / "a.tar")], check=True)
        subprocess.run(["tar", "-C", str(m.path), "-xf", str(m.path / "a.tar")], check=True)
        assert stat.S_ISFIFO(os.stat(out / "fifo").st_mode)
    else:
        subprocess.run(["rsync", "-a", f"{src}/", f"{m.path}/"], check=True)
    assert stat.S_ISFIFO(os.stat(m.path / "fifo").st_mode)
    assert (m.path / "file").read_bytes() == b"data"


# ------------------------------------------------------------------- O_RDWR


def test_a_file_opened_read_write_reads_until_written(s3: Any, bucket: str,
                                                      mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"content")
    m = mount(bucket)
    with open(m.path / "f", "r+b") as f:
        assert f.read() == b"content"
    with open(m.path / "g", "w+b") as f:
        assert f.read() == b""
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"content"


# ------------------------------------------------------------------- xattrs


def test_xattrs_are_stored_in_s3fs_form(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    path = m.path / "f"
    path.write_bytes(b"x")
    os.setxattr(path, "user.color", b"blue")
    os.setxattr(path, "user.bin", b"\x00bin")
    assert sorted(os.listxattr(path)) == ["user.bin", "user.color"]
    assert os.getxattr(path, "user.color") == b"blue"
    wait_for(lambda: "xattr" in meta(s3, bucket, "f"), message="xattrs to be stored",
             timeout=STORE_DEADLINE)
    os.removexattr(path, "user.bin")
    with pytest.raises(OSError) as missing:
        os.getxattr(path, "user.bin")
    assert missing.value.errno == errno.ENODATA
    with pytest.raises(OSError) as other:
        os.setxattr(path, "trusted.x", b"1")
    assert other.value.errno in (errno.EOPNOTSUPP, errno.EPERM)
    for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):  # `ls -l`'s
        with pytest.raises(OSError) as unsupported:
            os.getxattr(path, name)
        assert unsupported.value.errno == errno.EOPNOTSUPP, name
    with pytest.raises(OSError) as big:
        os.setxattr(path, "user.big", b"x" * 3000)
    assert big.value.errno == errno.ENOSPC
    assert os.listxattr(path) == ["user.color"]
    wait_for(lambda: "AGJpbg" not in meta(s3, bucket, "f").get("xattr", ""),
             message="the removal to be stored", timeout=STORE_DEADLINE)
    m = remount(m, mount, bucket)
    assert os.getxattr(m.path / "f", "user.color") == b"blue"
    assert os.listxattr(m.path / "f") == ["user.color"]


def test_ls_l_asks_one_entry_for_labels_and_acls_not_each(bucket: str, mount: Any,
                                                          tmp_path: Path) -> None:
    """`ls -l` asks each entry for its SELinux label and its ACL unless the device said
    it supports neither: the mount says so (EOPNOTSUPP, as setxattr of those names), so
    a listing of 40 files makes one such request of each kind, not 40 (each is a round
    trip through the daemon)."""
    m = mount(bucket)
    for i in range(40):
        (m.path / f"f{i:02d}").write_bytes(b"x")
    trace = tmp_path / "trace"
    listed = subprocess.run(["strace", "-f", "-o", str(trace), "-e",
                             "trace=getxattr,lgetxattr", "ls", "-l", str(m.path)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 41, listed.stdout
    calls = [line for line in trace.read_text().splitlines() if "getxattr(" in line]
    assert calls, "ls -l asked for no label or ACL at all: the test shows nothing"
    assert all("EOPNOTSUPP" in line for line in calls), calls
    for name in ("security.selinux", "system.posix_acl_access"):
        assert sum(name in line for line in calls) <= 1, calls


@pytest.mark.parametrize("tool", [["cp", "-a"], ["rsync", "-aAX"], ["tar", "--xattrs"]])
def test_xattrs_survive_backup_tools(bucket: str, mount: Any, tmp_path: Path,
                                     tool: list[str]) -> None:
    """Into the mount and, after a remount, back out, ACLs asked for too (rsync -A, tar
    --acls): the user.* attribute survives both ways, and the mount's "no ACLs, no
    labels here" (EOPNOTSUPP) is taken as such, without a warning."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    os.setxattr(src / "f", "user.tag", b"keep")
    m = mount(bucket)
    if tool[0] == "cp":
        subprocess.run([*tool, str(src / "f"), str(m.path / "f")], check=True)
    elif tool[0] == "rsync":
        subprocess.run([*tool, f"{src}/", f"{m.path}/"], check=True)
    else:
        archive = tmp_path / "a.tar"
        subprocess.run(["tar", "--xattrs", "-C", str(src), "-cf", str(archive), "f"],
                       check=True)
        subprocess.run(["tar", "--xattrs", "--xattrs-include=user.*", "-C", str(m.path),
                        "-xf", str(archive)], check=True)
    assert os.getxattr(m.path / "f", "user.tag") == b"keep"
    m = remount(m, mount, bucket)
    assert os.getxattr(m.path / "f", "user.tag") == b"keep"
    back = tmp_path / "back"
    back.mkdir()
    if tool[0] == "cp":
        copied = subprocess.run([*tool, str(m.path / "f"), str(back / "f")],
                                capture_output=True, text=True)
    elif tool[0] == "rsync":
        copied = subprocess.run([*tool, f"{m.path}/", f"{back}/"], capture_output=True,
                                text=True)
    else:
        archive = tmp_path / "b.tar"
        copied = subprocess.run(["tar", "--xattrs", "--acls", "-C", str(m.path), "-cf",
                                 str(archive), "f"], capture_output=True, text=True)
        assert copied.returncode == 0 and copied.stderr == "", copied.stderr
        copied = subprocess.run(["tar", "--xattrs", "--xattrs-include=user.*", "-C",
                                 str(back), "-xf", str(archive)], capture_output=True,
                                text=True)
    assert copied.returncode == 0 and copied.stderr == "", copied.stderr
    assert (back / "f").read_bytes() == b"data"
    assert os.getxattr(back / "f", "user.tag") == b"keep"


# ------------------------------------------------------------------- directories, unlink


def test_a_directory_mtime_moves_when_entries_change(bucket: str, mount: Any) -> None:
    m = mount(bucket)
    (m.path / "d").mkdir()
    os.utime(m.path / "d", (T2010, T2010))
    (m.path / "d" / "f").write_bytes(b"x")
    assert os.stat(m.path / "d").st_mtime > T2010 + 1000
    os.utime(m.path / "d", (T2010, T2010))
    (m.path / "d" / "f").unlink()
    assert os.stat(m.path / "d").st_mtime > T2010 + 1000


def test_fstat_of_an_unlinked_open_file_has_no_links(s3: Any, bucket: str,
                                                     mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"data")
    m = mount(bucket)
    with open(m.path / "f", "rb") as f:
        assert os.fstat(f.fileno()).st_nlink == 1
        os.unlink(m.path / "f")
        assert os.fstat(f.fileno()).st_nlink == 0


def test_a_truncate_past_the_limit_leaves_nothing_pending(s3: Any, bucket: str,
                                                          mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="f", Body=b"x" * (6 * 1024 * 1024))
    m = mount(bucket, "part_size=5M")
    with pytest.raises(OSError) as failure:
        os.truncate(m.path / "f", 2**62)
    assert failure.value.errno == errno.EFBIG
    wait_for(lambda: not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
             message="no upload pending", timeout=STORE_DEADLINE)
    assert s3.head_object(Bucket=bucket, Key="f")["ContentLength"] == 6 * 1024 * 1024


def test_reads_of_a_file_deleted_while_being_written_fail(bucket: str, mount: Any) -> None:
    m = mount(bucket)
    path = m.path / "f"
    with open(path, "wb") as writer:
        writer.write(b"data")
        writer.flush()
        with open(path, "rb") as reader:
            os.unlink(path)
            # its bytes are all here (nothing sent yet): it stays readable, as POSIX has it
            assert reader.read() == b"data"
    with open(m.path / "g", "w+b") as f:
        f.write(b"data")
        f.flush()
        os.unlink(m.path / "g")
        f.seek(0)
        try:
            got = f.read()
        except OSError:
            got = None
        assert got in (None, b"data")  # an error or the data, never an empty file


def test_chmod_keeps_storage_class_and_encryption(
    s3: Any, bucket: str, mount: Any, s3_backend: Any
) -> None:
    encryption = {"ServerSideEncryption": "AES256"} if s3_backend.sse_s3 else {
        "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": s3_backend.kms_key_id}
    s3.put_object(Bucket=bucket, Key="f", Body=b"data", StorageClass="STANDARD_IA",
                  **encryption)
    m = mount(bucket)
    os.chmod(m.path / "f", 0o600)
    head = wait_for_mode(s3, bucket, "f", stat.S_IFREG | 0o600)
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ServerSideEncryption"] == encryption["ServerSideEncryption"]
