"""Backup workflows on a real mount: rsync, tar, cp -p, mv, shell redirections, truncate,
and a bucket that s3fs and rclone can read (x-amz-meta-mode/uid/gid/mtime).

Real tools run in subprocesses against a mount of the test backend (moto or Ceph RGW); the
bucket is checked with
boto3. Tests that count requests mount through the recording proxy (tests/s3proxy.py).
Attribute changes on a closed file reach the bucket a moment later (a deferred CopyObject),
so header checks poll with `wait_for`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    STORE_DEADLINE,
    list_keys,
    random_bytes,
    random_file,
    sha256_file,
    sha256_object,
    wait_for,
)
from test_request_counts import settle

from s3mpfs.fs.listings import LISTING_TTL
from s3mpfs.fs.statwriter import DEBOUNCE

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
S_IFLNK_BITS = 0o120000
WRITE_KINDS = ("PutObject", "CreateMultipartUpload", "UploadPart", "CopyObject", "UploadPartCopy")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def s3_read(s3_server: str) -> Any:
    """A boto3 client for reading object bodies that does not validate full-object
    checksums: moto gives a CopyObject of a multipart object the composite checksum of its
    parts without the "-N" suffix, which botocore would then reject."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                        config=Config(response_checksum_validation="when_required"))


def run(*argv: str | os.PathLike[str], check: bool = True, **kwargs: Any) -> str:
    """Run a tool; return its stdout; fail the test with its output if it fails."""
    result = subprocess.run(
        [os.fspath(a) for a in argv], capture_output=True, text=True, timeout=120, **kwargs
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, argv))} exited with {result.returncode}\n"
            f"--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}",
            pytrace=False,
        )
    return result.stdout


def sh(script: str, cwd: Path) -> str:
    return run("bash", "-c", script, cwd=cwd)


def meta(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return s3.head_object(Bucket=bucket, Key=key)["Metadata"]


def meta_is(s3: Any, bucket: str, key: str, **expected: str) -> dict[str, str] | None:
    """The object's metadata if every expected header has the expected value, else None
    (for wait_for)."""
    m = meta(s3, bucket, key)
    return m if all(m.get(k) == v for k, v in expected.items()) else None


def attrs_stored(s3: Any, bucket: str, key: str, mode: int, mtime_ns: int) -> dict | None:
    """The object's metadata once it carries this st_mode and mtime (for wait_for)."""
    m = meta(s3, bucket, key)
    ok = m.get("mode") == str(mode) and mtime_close(m.get("mtime"), mtime_ns / 1e9)
    return m if ok else None


def mtime_close(value: str | None, expected: float, tolerance: float = 1e-6) -> bool:
    return value is not None and abs(float(value) - expected) <= tolerance


# Source trees: modes and mtimes a backup must keep. mtimes are old and carry fractions.
BASE_NS = 1_234_567_890_123_456_789
DIR_MODES = {"docs": 0o755, "docs/nested": 0o750, "docs/nested/deep": 0o700, "bin": 0o755,
             "empty dir": 0o711}
# Names that need URL encoding in requests and listings.
ODD_NAMES = ("with space.txt", "ünïcödé ☃.txt", "plus+amp&pct%20=eq,#?.txt", "~tilde")
ODD_MODES = {"secret.key": 0o600, "bin/tool": 0o750, "readonly.txt": 0o444}


def make_tree(root: Path, big: int = 0) -> dict[str, int]:
    """A source tree: nested dirs, ~20 small files, odd modes, a symlink, old sub-second
    mtimes, and a `big`-byte file if big > 0. Returns {relative path: mtime_ns}."""
    root.mkdir(parents=True)
    for d in DIR_MODES:
        (root / d).mkdir(parents=True, exist_ok=True)
    files: list[str] = ["secret.key", "bin/tool", "readonly.txt", "empty"]
    files += [f"docs/page{i:02}.txt" for i in range(8)]
    files += [f"docs/nested/n{i}.dat" for i in range(5)]
    files += [f"docs/nested/deep/d{i}" for i in range(3)]
    files += [f"docs/{name}" for name in ODD_NAMES]
    for i, rel in enumerate(files):
        size = 0 if rel == "empty" else 100 + 997 * i
        (root / rel).write_bytes(random_bytes(size, seed=i))
    if big:
        random_file(root / "big.bin", big, seed=99)
        files.append("big.bin")
    os.symlink("docs/page00.txt", root / "link")
    mtimes: dict[str, int] = {}
    for i, rel in enumerate(files):
        (root / rel).chmod(ODD_MODES.get(rel, 0o644))
        ns = BASE_NS - i * 86_400_000_000_000 - i * 7_654_321  # days apart, odd fractions
        os.utime(root / rel, ns=(ns, ns))
        mtimes[rel] = ns
    ns = BASE_NS - 999_999_999_999
    os.utime(root / "link", ns=(ns, ns), follow_symlinks=False)
    mtimes["link"] = ns
    for i, d in enumerate(sorted(DIR_MODES, key=len, reverse=True)):  # children first
        (root / d).chmod(DIR_MODES[d])
        ns = BASE_NS - 5 * 86_400_000_000_000 - i * 3_333_333
        os.utime(root / d, ns=(ns, ns))
        mtimes[d] = ns
    return mtimes


def assert_same_attrs(src: Path, dst: Path, paths: dict[str, int]) -> None:
    """Type, permission bits, mtime (to the microsecond) and symlink targets match."""
    problems = []
    for rel in sorted(paths):
        a, b = os.lstat(src / rel), os.lstat(dst / rel)
        if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
            problems.append(f"{rel}: type {a.st_mode:o} != {b.st_mode:o}")
        elif not stat.S_ISLNK(a.st_mode) and stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode):
            problems.append(f"{rel}: mode {a.st_mode:o} != {b.st_mode:o}")
        if int(a.st_mtime) != int(b.st_mtime) or abs(a.st_mtime_ns - b.st_mtime_ns) > 1000:
            problems.append(f"{rel}: mtime {a.st_mtime_ns} != {b.st_mtime_ns}")
        if stat.S_ISLNK(a.st_mode) and os.readlink(src / rel) != os.readlink(dst / rel):
            problems.append(f"{rel}: link {os.readlink(src / rel)!r} != {os.readlink(dst / rel)!r}")
        if stat.S_ISREG(a.st_mode) and a.st_size != b.st_size:
            problems.append(f"{rel}: size {a.st_size} != {b.st_size}")
    assert not problems, "\n".join(problems)


def headers_match(s3: Any, bucket: str, prefix: str, src: Path, paths: dict[str, int]) -> bool:
    """Every path's object carries the source's mode and mtime headers (s3fs layout)."""
    for rel in paths:
        st = os.lstat(src / rel)
        key = prefix + rel + ("/" if stat.S_ISDIR(st.st_mode) else "")
        try:
            m = meta(s3, bucket, key)
        except Exception:
            return False
        if stat.S_ISLNK(st.st_mode):
            if int(m.get("mode", "0")) & 0o170000 != S_IFLNK_BITS:
                return False
        elif m.get("mode") != str(st.st_mode):
            return False
        if not mtime_close(m.get("mtime"), st.st_mtime_ns / 1e9):
            return False
    return True


def itemized(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


# --------------------------------------------------------------------------- rsync


def test_rsync_backup_is_complete_and_incremental(s3, s3_read, bucket, proxy, mount, tmp_path):
    src = tmp_path / "src"
    paths = make_tree(src, big=30 * MiB)
    m = mount(bucket, f"endpoint_url={proxy.url}")
    dst = m.path / "backup"

    run("rsync", "-a", f"{src}/", f"{dst}/")
    run("diff", "-r", "--no-dereference", src, dst)
    assert_same_attrs(src, dst, paths)
    # The bucket holds what s3fs/rclone read: mode and mtime headers on every object.
    wait_for(lambda: headers_match(s3, bucket, "backup/", src, paths), timeout=STORE_DEADLINE,
             message="mode/mtime headers of every object")
    assert sha256_object(s3_read, bucket, "backup/big.bin") == sha256_file(src / "big.bin")
    assert not [k for k in list_keys(s3, bucket) if "/." in k], "rsync temp files left"

    # Nothing changed: rsync finds nothing to do and the mount writes nothing. (The
    # first one's last writes first: the metadata rsync set, stored in the background,
    # and the stat index written DEBOUNCE after the directory's last change.)
    settle(proxy, quiet=DEBOUNCE + 1)
    proxy.clear()
    out = run("rsync", "-a", "--itemize-changes", f"{src}/", f"{dst}/")
    assert itemized(out) == [], f"second rsync itemized changes:\n{out}"
    writes = [(r.kind, r.key) for r in proxy.requests if r.kind in WRITE_KINDS]
    assert writes == [], f"second rsync wrote to S3: {writes}"
    assert proxy.count("DeleteObject") == 0

    # The same after a remount (cold caches, like tonight's cron job): everything rsync
    # compares comes back from the objects' headers.
    m.unmount()
    m = mount(bucket, f"endpoint_url={proxy.url}")
    dst = m.path / "backup"
    proxy.clear()
    out = run("rsync", "-a", "--itemize-changes", f"{src}/", f"{dst}/")
    assert itemized(out) == [], f"rsync after a remount itemized changes:\n{out}"
    writes = {k: proxy.count(k) for k in WRITE_KINDS if proxy.count(k)}
    assert writes == {}, f"rsync after a remount wrote to S3: {writes}"
    assert_same_attrs(src, dst, paths)

    # One file changed and one deleted: only that one is sent again, the other deleted.
    changed = src / "docs" / "page03.txt"
    mode = changed.stat().st_mode
    changed.write_bytes(b"new content for the third run\n")
    new_ns = BASE_NS + 123_456_789
    os.utime(changed, ns=(new_ns, new_ns))
    (src / "docs" / "page07.txt").unlink()
    out = run("rsync", "-a", "--delete", "--itemize-changes", f"{src}/", f"{dst}/")
    lines = sorted(ln for ln in itemized(out) if not ln.startswith(".d"))  # docs/ has a new mtime
    assert lines == ["*deleting   docs/page07.txt", ">f.st...... docs/page03.txt"], out
    assert (dst / "docs" / "page03.txt").read_bytes() == b"new content for the third run\n"
    st = os.stat(dst / "docs" / "page03.txt")
    assert (st.st_mode, st.st_mtime_ns // 10**9) == (mode, new_ns // 10**9)
    wait_for(lambda: attrs_stored(s3, bucket, "backup/docs/page03.txt", mode, new_ns),
             timeout=STORE_DEADLINE, message="headers of the changed file")
    assert "backup/docs/page07.txt" not in list_keys(s3, bucket)
    run("diff", "-r", "--no-dereference", src, dst)


# --------------------------------------------------------------------------- tar


def test_tar_archive_on_the_mount_and_extraction_onto_it(s3, s3_read, bucket, mount, tmp_path):
    src = tmp_path / "src"
    paths = make_tree(src, big=10 * MiB)
    m = mount(bucket)

    # An archive written into the mount (streamed: ~10 MiB, so multipart) reads back.
    # posix (pax) format keeps sub-second mtimes.
    run("tar", "--format=posix", "-cf", m.path / "backup.tar", "-C", src, ".")
    assert sha256_file(m.path / "backup.tar") == sha256_object(s3_read, bucket, "backup.tar")
    run("tar", "--compare", "-f", m.path / "backup.tar", "-C", src)  # contents, modes, times
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run("tar", "-xpf", m.path / "backup.tar", "-C", elsewhere)
    run("diff", "-r", "--no-dereference", src, elsewhere)
    assert_same_attrs(src, elsewhere, paths)

    # Extracting onto the mount restores contents, modes, mtimes and the symlink.
    restore = m.path / "restore"
    restore.mkdir()
    run("tar", "--format=posix", "-cf", tmp_path / "local.tar", "-C", src, ".")
    run("tar", "-xpf", tmp_path / "local.tar", "-C", restore)
    run("diff", "-r", "--no-dereference", src, restore)
    assert_same_attrs(src, restore, paths)
    wait_for(lambda: headers_match(s3, bucket, "restore/", src, paths), timeout=STORE_DEADLINE,
             message="mode/mtime headers of the extracted objects")



# --------------------------------------------------------------------------- cp -p, mv


def test_cp_p_keeps_mode_and_mtime(s3, bucket, mount, tmp_path):
    m = mount(bucket)
    small = tmp_path / "small.conf"
    small.write_bytes(b"key = value\n")
    big = random_file(tmp_path / "big.img", 9 * MiB, seed=3)  # multipart: > one 8 MiB part
    for path, mode, ns in ((small, 0o640, 1_100_000_000_250_000_000),
                           (big, 0o600, 1_000_000_000_987_654_321)):
        path.chmod(mode)
        os.utime(path, ns=(ns, ns))
        run("cp", "-p", path, m.path / path.name)
        st = os.stat(m.path / path.name)
        assert stat.S_IMODE(st.st_mode) == mode
        assert abs(st.st_mtime_ns - ns) <= 1000
        assert sha256_file(m.path / path.name) == sha256_file(path)
        headers = wait_for(
            lambda p=path, mo=mode, t=ns: attrs_stored(s3, bucket, p.name, stat.S_IFREG | mo, t),
            timeout=STORE_DEADLINE, message=f"mode and mtime headers of {path.name}")
        assert headers.get("uid") == str(os.getuid()) and headers.get("gid") == str(os.getgid())


def test_mv_large_file_is_a_server_side_copy(s3_backend, s3, s3_read, bucket, proxy, mount,
                                             tmp_path):
    # Encrypted with SSE-S3, or with SSE-KMS where the server has no SSE-S3 (Ceph 16.2).
    if s3_backend.sse_s3:
        sse, sse_options = "AES256", ["sse=AES256"]
    else:
        sse, sse_options = "aws:kms", ["sse=aws:kms", f"sse_kms_key_id={s3_backend.kms_key_id}"]
    m = mount(bucket, f"endpoint_url={proxy.url}", *sse_options, "storage_class=STANDARD_IA")
    local = random_file(tmp_path / "big.bin", 40 * MiB, seed=40)
    (m.path / "a").mkdir()
    (m.path / "b").mkdir()
    run("cp", local, m.path / "a" / "big.bin")
    run("chmod", "640", m.path / "a" / "big.bin")
    run("touch", "-d", "@1000000000.5", m.path / "a" / "big.bin")
    wait_for(lambda: meta_is(s3, bucket, "a/big.bin", mode="33184", mtime="1000000000.5"),
             timeout=STORE_DEADLINE, message="attributes of a/big.bin stored")
    before = s3.head_object(Bucket=bucket, Key="a/big.bin")

    proxy.clear()
    run("mv", m.path / "a" / "big.bin", m.path / "b" / "moved.bin")
    kinds = {r.kind for r in proxy.requests}
    assert proxy.count("CopyObject") + proxy.count("UploadPartCopy") >= 1, kinds
    resent = {k: proxy.count(k) for k in ("PutObject", "UploadPart", "GetObject")}
    assert resent == {"PutObject": 0, "UploadPart": 0, "GetObject": 0}, kinds

    assert "a/big.bin" not in list_keys(s3, bucket)
    assert not (m.path / "a" / "big.bin").exists()
    after = s3.head_object(Bucket=bucket, Key="b/moved.bin")
    assert after["ContentLength"] == 40 * MiB
    assert after.get("StorageClass") == "STANDARD_IA"
    assert after.get("ServerSideEncryption") == sse
    assert after["Metadata"]["mode"] == "33184" == before["Metadata"]["mode"]
    assert after["Metadata"]["mtime"] == "1000000000.5"
    st = os.stat(m.path / "b" / "moved.bin")
    assert (st.st_mode, st.st_mtime, st.st_size) == (0o100640, 1000000000.5, 40 * MiB)
    digest = sha256_file(local)
    assert sha256_object(s3_read, bucket, "b/moved.bin") == digest
    assert sha256_file(m.path / "b" / "moved.bin") == digest


def test_mv_directory_moves_every_object(s3, bucket, mount, tmp_path):
    m = mount(bucket)
    src = m.path / "project"
    files = {"a.txt": b"a" * 10, "b.txt": b"", "sub/c.txt": b"c" * 1000,
             "sub/deeper/d.bin": random_bytes(70_000, seed=5)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "sub" / "c.txt").chmod(0o600)
    wait_for(lambda: meta_is(s3, bucket, "project/sub/c.txt", mode=str(0o100600)),
             timeout=STORE_DEADLINE, message="mode of project/sub/c.txt")

    run("mv", src, m.path / "renamed")
    keys = list_keys(s3, bucket)
    assert not [k for k in keys if k.startswith("project/")], keys
    for rel, data in files.items():
        assert f"renamed/{rel}" in keys
        assert (m.path / "renamed" / rel).read_bytes() == data
    assert meta(s3, bucket, "renamed/sub/c.txt")["mode"] == str(0o100600)
    assert stat.S_IMODE(os.stat(m.path / "renamed" / "sub" / "c.txt").st_mode) == 0o600
    assert not src.exists()
    assert sorted(os.listdir(m.path)) == ["renamed"]


def test_rename_onto_an_existing_file_replaces_it(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "new").write_bytes(b"the new version\n")
    (m.path / "current").write_bytes(b"the old version, longer than the new one\n")
    assert (m.path / "current").read_bytes().startswith(b"the old")  # cached by the kernel
    run("mv", m.path / "new", m.path / "current")
    assert (m.path / "current").read_bytes() == b"the new version\n"
    assert os.stat(m.path / "current").st_size == len(b"the new version\n")
    assert sorted(os.listdir(m.path)) == ["current"]
    assert list_keys(s3, bucket) == ["current"]
    assert s3.get_object(Bucket=bucket, Key="current")["Body"].read() == b"the new version\n"


# --------------------------------------------------------------------------- s3fs / rclone


def test_chmod_and_touch_are_stored_as_s3fs_headers(s3, bucket, mount):
    m = mount(bucket)
    f = m.path / "report.txt"
    f.write_bytes(b"quarterly numbers\n")
    run("chmod", "640", f)
    run("touch", "-d", "2001-02-03", f, env={**os.environ, "TZ": "UTC"})
    headers = wait_for(lambda: meta_is(s3, bucket, "report.txt", mode="33184", mtime="981158400"),
                       timeout=STORE_DEADLINE, message="mode=33184 and mtime=981158400 headers")
    assert headers["uid"] == str(os.getuid()) and headers["gid"] == str(os.getgid())
    assert s3.get_object(Bucket=bucket, Key="report.txt")["Body"].read() == b"quarterly numbers\n"
    st = os.stat(f)
    assert (st.st_mode, st.st_mtime) == (33184, 981158400)


def test_objects_written_by_s3fs_and_rclone_show_their_attributes(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="s3fs.txt", Body=b"by s3fs",
                  Metadata={"mode": "33152", "uid": "1234", "gid": "5678",
                            "mtime": "1000000000.5"})
    s3.put_object(Bucket=bucket, Key="rclone.txt", Body=b"by rclone",
                  Metadata={"mtime": "1234567890.123456789"})
    s3.put_object(Bucket=bucket, Key="s3fs-dir/", Body=b"",
                  Metadata={"mode": str(stat.S_IFDIR | 0o750), "uid": "1234", "gid": "5678",
                            "mtime": "1100000000"})
    m = mount(bucket)
    st = os.stat(m.path / "s3fs.txt")
    assert (st.st_mode, st.st_uid, st.st_gid) == (0o100600, 1234, 5678)
    assert abs(st.st_mtime - 1000000000.5) < 1e-6
    st = os.stat(m.path / "rclone.txt")
    assert abs(st.st_mtime_ns - 1_234_567_890_123_456_789) < 1000, st.st_mtime_ns
    assert st.st_mode == 0o100644
    st = os.stat(m.path / "s3fs-dir")
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime) == (0o40750, 1234, 5678, 1100000000)
    assert (m.path / "s3fs.txt").read_bytes() == b"by s3fs"


@pytest.mark.parametrize("options", [(), ("uid=1234", "gid=5678", "file_mode=0600",
                                          "dir_mode=0700")], ids=["defaults", "options"])
def test_objects_without_metadata_get_defaults_and_last_modified(s3, bucket, mount, options):
    s3.put_object(Bucket=bucket, Key="plain.txt", Body=b"no metadata")
    s3.put_object(Bucket=bucket, Key="marker/", Body=b"")
    s3.put_object(Bucket=bucket, Key="implied/inner.txt", Body=b"x")  # a dir with no marker
    s3.put_object(Bucket=bucket, Key="owned.txt", Body=b"y",
                  Metadata={"mode": "33261", "uid": "42", "gid": "43", "mtime": "1200000000"})
    modified = s3.head_object(Bucket=bucket, Key="plain.txt")["LastModified"].timestamp()
    m = mount(bucket, *options)
    uid, gid = (1234, 5678) if options else (os.getuid(), os.getgid())
    file_mode, dir_mode = (0o600, 0o700) if options else (0o644, 0o750)

    st = os.stat(m.path / "plain.txt")
    assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFREG | file_mode, uid, gid)
    assert abs(st.st_mtime - modified) < 1.0
    for d in ("marker", "implied"):
        st = os.stat(m.path / d)
        assert (st.st_mode, st.st_uid, st.st_gid) == (stat.S_IFDIR | dir_mode, uid, gid), d
    assert stat.S_IMODE(os.stat(m.path).st_mode) == dir_mode
    st = os.stat(m.path / "owned.txt")  # stored attributes win over the mount's defaults
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime) == (33261, 42, 43, 1200000000)
    assert sorted(os.listdir(m.path)) == ["implied", "marker", "owned.txt", "plain.txt"]


def test_symlinks_are_stored_the_s3fs_way(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="from-s3fs", Body=b"../some/target file",
                  Metadata={"mode": str(stat.S_IFLNK | 0o777), "mtime": "1300000000"})
    m = mount(bucket)
    os.symlink("dir/target.txt", m.path / "made-here")
    obj = s3.get_object(Bucket=bucket, Key="made-here")
    assert obj["Body"].read() == b"dir/target.txt"
    assert int(obj["Metadata"]["mode"]) & 0o170000 == S_IFLNK_BITS
    assert os.readlink(m.path / "made-here") == "dir/target.txt"

    assert os.readlink(m.path / "from-s3fs") == "../some/target file"
    st = os.lstat(m.path / "from-s3fs")
    assert stat.S_ISLNK(st.st_mode) and st.st_mtime == 1300000000
    assert st.st_size == len(b"../some/target file")


# --------------------------------------------------------------------------- overwrite


def test_reader_sees_the_old_version_while_a_new_one_is_written(s3, s3_read, bucket, mount,
                                                                 tmp_path):
    m = mount(bucket)
    old = random_file(tmp_path / "old", 20 * MiB, seed=20)
    run("cp", old, m.path / "db.dump")
    old_digest = sha256_file(old)
    new = random_bytes(20 * MiB, seed=21)

    fd = os.open(m.path / "db.dump", os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(new)
        for offset in range(0, 10 * MiB, MiB):
            os.write(fd, view[offset:offset + MiB])
        # Half of the new version is written and the file is still open: a reader in
        # another process (a restore, a checksum job) gets the previous version, complete.
        assert run("sha256sum", m.path / "db.dump").split()[0] == old_digest
        assert sha256_object(s3_read, bucket, "db.dump") == old_digest
        for offset in range(10 * MiB, 20 * MiB, MiB):
            os.write(fd, view[offset:offset + MiB])
    finally:
        os.close(fd)
    new_digest = hashlib.sha256(new).hexdigest()
    assert sha256_object(s3_read, bucket, "db.dump") == new_digest
    assert sha256_file(m.path / "db.dump") == new_digest
    assert os.stat(m.path / "db.dump").st_size == 20 * MiB


def test_shell_redirections(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "existing").write_bytes(b"old content that is longer\n")
    sh("echo new > existing", cwd=m.path)
    assert (m.path / "existing").read_bytes() == b"new\n"
    assert s3.get_object(Bucket=bucket, Key="existing")["Body"].read() == b"new\n"

    sh("echo more >> existing", cwd=m.path)
    assert (m.path / "existing").read_bytes() == b"new\nmore\n"
    assert s3.get_object(Bucket=bucket, Key="existing")["Body"].read() == b"new\nmore\n"

    # Two writers through one redirection: the builtin, then a child process (a cron job
    # running a script with its output redirected to a log file on the mount).
    sh("{ echo a; /bin/echo b; } > f", cwd=m.path)
    assert (m.path / "f").read_bytes() == b"a\nb\n"
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"a\nb\n"
    sh("{ echo c; /bin/echo d; } >> f", cwd=m.path)
    assert (m.path / "f").read_bytes() == b"a\nb\nc\nd\n"
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"a\nb\nc\nd\n"


# --------------------------------------------------------------------------- truncate


def test_truncate(s3, s3_read, bucket, mount, tmp_path):
    m = mount(bucket)
    (m.path / "empty-me").write_bytes(b"some bytes\n")
    run("truncate", "-s", "0", m.path / "empty-me")
    assert os.stat(m.path / "empty-me").st_size == 0
    assert (m.path / "empty-me").read_bytes() == b""
    assert s3.head_object(Bucket=bucket, Key="empty-me")["ContentLength"] == 0

    (m.path / "grow").write_bytes(b"head")
    run("truncate", "-s", "10M", m.path / "grow")
    expected = hashlib.sha256(b"head" + bytes(10 * MiB - 4)).hexdigest()
    assert os.stat(m.path / "grow").st_size == 10 * MiB
    assert sha256_file(m.path / "grow") == expected
    assert sha256_object(s3_read, bucket, "grow") == expected

    random_file(tmp_path / "big", 12 * MiB, seed=12)
    run("cp", tmp_path / "big", m.path / "shrink")
    run("truncate", "-s", "3", m.path / "shrink")
    first3 = (tmp_path / "big").read_bytes()[:3]
    assert os.stat(m.path / "shrink").st_size == 3
    assert (m.path / "shrink").read_bytes() == first3
    assert s3_read.get_object(Bucket=bucket, Key="shrink")["Body"].read() == first3


# --------------------------------------------------------------------------- limits


def test_hard_links_df_and_long_names(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "a").write_bytes(b"a")
    with pytest.raises(OSError) as info:
        os.link(m.path / "a", m.path / "b")
    assert info.value.errno in (errno.EOPNOTSUPP, errno.EPERM), info.value
    result = subprocess.run(["ln", m.path / "a", m.path / "b"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert os.strerror(info.value.errno) in result.stderr, result.stderr
    assert not (m.path / "b").exists()
    assert list_keys(s3, bucket) == ["a"]

    out = run("df", "-P", "-k", m.path)
    available_kib = int(out.splitlines()[-1].split()[3])
    assert available_kib >= 2**40, out  # 1 PiB and more: S3 has no practical limit

    long_name = "n" * 300
    for attempt in (lambda: (m.path / long_name).write_bytes(b"x"),
                    lambda: (m.path / long_name).mkdir(),
                    lambda: os.stat(m.path / long_name)):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.ENAMETOOLONG
    assert list_keys(s3, bucket) == ["a"]


# --------------------------------------------------------------------------- ls -l


def test_ls_l_of_a_large_directory_without_a_head_storm(s3, bucket, proxy, mount):
    count = 200
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"logs/f{i:03}.log",
                                              Body=b"x" * i), range(count)))
    m = mount(bucket, f"endpoint_url={proxy.url}")
    # Metadata read within the second its object was last modified is confirmed again
    # later (a metadata-only copy in that second would not show): let that second pass,
    # so that the second listing below can rely on what the first one read.
    newest = max(o["LastModified"].timestamp()
                 for o in s3.list_objects_v2(Bucket=bucket, Prefix="logs/")["Contents"])
    wait_for(lambda: time.time() >= int(newest) + 1, timeout=5,
             message="the objects' last second to pass")
    proxy.clear()

    # Hold every HEAD at the proxy: several arriving together proves they are in parallel.
    hold = proxy.add_fault("HeadObject", "hold", key_contains="logs/f")
    started = time.monotonic()
    ls = subprocess.Popen(["ls", "-l", m.path / "logs"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        proxy.wait_for(lambda recs: sum(r.kind == "HeadObject" and r.fault == "hold"
                                        for r in recs) >= 8, timeout=20)
    finally:
        proxy.release(hold)
        out, err = ls.communicate(timeout=60)
    took = time.monotonic() - started
    assert ls.returncode == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("-")]
    assert len(lines) == count
    assert all(ln.startswith("-rw-r--r--") for ln in lines), lines[:3]
    assert " 199 " in next(ln for ln in lines if ln.endswith("f199.log"))
    lists, heads = proxy.count("ListObjectsV2"), proxy.count("HeadObject")
    # The root's listing, the directory's, and one more each time the directory's 2 s
    # listing cache expires while ls still looks names up (a loaded machine): 5 in all
    # for an ls of up to 6 s, one more per LISTING_TTL of a slower one.
    assert 1 <= lists <= max(5, 3 + int(took / LISTING_TTL)), \
        f"{lists} ListObjectsV2 requests in {took:.1f} s"
    assert heads <= count + 1, f"{heads} HEAD requests for {count} files and their directory"
    head_keys = [r.key for r in proxy.of_kind("HeadObject")]
    assert len(head_keys) == len(set(head_keys)), "an object was HEADed twice"

    # Again a moment later: the metadata is cached (same ETags), no HEAD at all.
    proxy.clear()
    out2 = run("ls", "-l", m.path / "logs")
    assert out2 == out
    assert proxy.count("HeadObject") == 0, [r.key for r in proxy.of_kind("HeadObject")][:5]
    assert proxy.count("GetObject") == 0


# --------------------------------------------------------------------------- cron, restic


def test_cron_dump_with_rotation(s3, bucket, mount):
    """A nightly job: dump through a pipe into a temporary name, publish it with mv, and
    delete dumps older than a week by their mtime (find -newermt ... -delete)."""
    m = mount(bucket)
    dumps = m.path / "dumps"
    dumps.mkdir()
    # Dumps of earlier nights, one of them written by s3fs (its mtime header only).
    s3.put_object(Bucket=bucket, Key="dumps/db-2023-12-01.sql.gz", Body=b"old",
                  Metadata={"mode": "33188", "mtime": "1701399600"})
    for day in range(1, 15):
        name = f"db-2024-01-{day:02}.sql.gz"
        sh(f"seq 1 {day * 20000} | gzip -1 > {name}.tmp && "
           f"touch -d '2024-01-{day:02} 03:00 UTC' {name}.tmp && mv {name}.tmp {name}",
           cwd=dumps)
    sh("find . -type f ! -newermt '2024-01-08 00:00 UTC' -delete", cwd=dumps)

    kept = [f"db-2024-01-{day:02}.sql.gz" for day in range(8, 15)]
    assert sorted(os.listdir(dumps)) == kept
    assert list_keys(s3, bucket, "dumps/") == ["dumps/"] + [f"dumps/{n}" for n in kept]
    assert sh("zcat db-2024-01-14.sql.gz | tail -n 1", cwd=dumps) == "280000\n"
    assert sh("gzip -t *.gz && echo ok", cwd=dumps) == "ok\n"
    wait_for(lambda: meta_is(s3, bucket, "dumps/db-2024-01-14.sql.gz", mtime="1705201200"),
             timeout=STORE_DEADLINE, message="mtime header of the newest dump")


def test_restic_like_repository(s3, bucket, mount):
    """What restic's local backend does: write a pack under a temporary name, fsync it and
    its directory, rename it into place, make it read-only; take and drop a lock file;
    later read blobs back at random offsets."""
    m = mount(bucket)
    repo = m.path / "repo"
    for sub in ("data/00", "data/01", "index", "keys", "locks", "snapshots"):
        (repo / sub).mkdir(parents=True)
    packs: dict[str, bytes] = {}
    for i in range(4):
        data = random_bytes(i * 4 * MiB + 1234, seed=100 + i)  # up to ~12 MiB: multipart
        name = f"data/0{i % 2}/{hashlib.sha256(data).hexdigest()}"
        tmp = repo / f"data/0{i % 2}/.tmp-{i}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            for offset in range(0, len(data), MiB):
                os.write(fd, data[offset:offset + MiB])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, repo / name)
        dir_fd = os.open(repo / name.rpartition("/")[0], os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        os.chmod(repo / name, 0o400)
        packs[name] = data
    lock = repo / "locks" / "9f86d081884c7d65"
    lock.write_text('{"hostname": "backup-host", "pid": 4242}')
    lock.unlink()

    rng = random.Random(7)
    for name, data in packs.items():
        fd = os.open(repo / name, os.O_RDONLY)
        try:
            assert os.fstat(fd).st_size == len(data)
            for _ in range(10):
                offset = rng.randrange(len(data))
                length = rng.randrange(1, 400_000)
                assert os.pread(fd, length, offset) == data[offset:offset + length], name
        finally:
            os.close(fd)
    for name in packs:
        wait_for(lambda n=name: meta_is(s3, bucket, f"repo/{n}", mode=str(0o100400)),
                 timeout=STORE_DEADLINE, message=f"read-only mode of {name}")
    keys = list_keys(s3, bucket, "repo/")
    assert not [k for k in keys if ".tmp-" in k or k.startswith("repo/locks/9f")], keys
    assert sorted(k for k in keys if not k.endswith("/")) == sorted(f"repo/{n}" for n in packs)


# --------------------------------------------------------------------------- known bugs


def test_touch_of_an_existing_file_is_stored(s3, bucket, mount):
    """`touch -d DATE file` (GNU touch opens the file O_WRONLY, then futimens) on a closed
    file with no other pending change: the new mtime reaches the object's header."""
    m = mount(bucket)
    f = m.path / "existing.txt"
    f.write_bytes(b"content\n")
    wait_for(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="existing").get("KeyCount") == 1,
             timeout=STORE_DEADLINE,
             message="the object")
    run("touch", "-d", "@981158400", f)
    assert os.stat(f).st_mtime == 981158400
    wait_for(lambda: meta_is(s3, bucket, "existing.txt", mtime="981158400"), timeout=STORE_DEADLINE,
             message="mtime=981158400 header")


def test_attributes_set_just_before_a_directory_rename_are_kept(s3, bucket, proxy, mount):
    """`chmod -R go-rwx staging && mv staging final`: the modes and mtimes set a moment
    before the rename end up on the objects under the new name."""
    m = mount(bucket, f"endpoint_url={proxy.url}")
    staging = m.path / "staging"
    staging.mkdir()
    names = ("a.txt", "b.txt", "c.txt")
    for name in names:
        (staging / name).write_bytes(name.encode())
    # Hold the rename's delete of staging/a.txt: the directory is then half moved (a.txt
    # copied to final/) for as long as needed, deterministically.
    hold = proxy.add_fault("DeleteObject", "hold", key_contains="staging/a.txt")
    run("chmod", "600", *(staging / n for n in names))
    run("touch", "-d", "@1000000000", *(staging / n for n in names))
    mv = subprocess.Popen(["mv", staging, m.path / "final"], stderr=subprocess.PIPE, text=True)
    try:
        hold.held.wait(timeout=STORE_DEADLINE)

        def attributes_in_flight(records: list[Any]) -> bool:
            # The pending attributes of a.txt went out: as their own CopyObject (while the
            # rename is half done), or carried by the rename's copy to final/a.txt.
            return any(r.kind == "CopyObject" and (
                r.key == "staging/a.txt"
                or (r.key == "final/a.txt" and r.headers.get("x-amz-meta-mode") == "33152"))
                for r in records)

        proxy.wait_for(attributes_in_flight, timeout=STORE_DEADLINE)
    finally:
        proxy.release(hold)
        _, err = mv.communicate(timeout=60)
    assert mv.returncode == 0, err
    assert not [k for k in list_keys(s3, bucket) if k.startswith("staging/")]
    for name in names:
        wait_for(lambda n=name: meta_is(s3, bucket, f"final/{n}", mode="33152",
                                        mtime="1000000000"),
                 timeout=STORE_DEADLINE, message=f"mode and mtime headers of final/{name}")
    m.unmount()
    m = mount(bucket)
    for name in names:
        st = os.stat(m.path / "final" / name)
        assert (st.st_mode, st.st_mtime) == (0o100600, 1000000000), name


def test_reader_of_a_replaced_file_never_gets_a_mix_of_versions(s3, bucket, mount):
    """rsync replaces a file by renaming a new one over it. A reader that opened the old
    file (a restore, a verify job) must get the old bytes or an error, never a mix."""
    m = mount(bucket)
    old = random_bytes(20 * MiB, seed=30)
    (m.path / "data.bin").write_bytes(old)
    (m.path / ".data.bin.tmp").write_bytes(random_bytes(20 * MiB, seed=31))
    with open(m.path / "data.bin", "rb", buffering=0) as reader:
        first = reader.read(MiB)
        os.rename(m.path / ".data.bin.tmp", m.path / "data.bin")
        try:
            rest = reader.readall()
        except OSError:
            return  # an error is an acceptable answer
    got = first + rest
    assert len(got) == len(old)
    mixed_at = next((i for i in range(0, len(old), MiB) if got[i:i + MiB] != old[i:i + MiB]),
                    None)
    assert mixed_at is None, f"the reader got the new version's bytes from offset {mixed_at}"


def test_content_changed_by_another_tool_is_visible(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="shared.txt", Body=b"v1",
                  Metadata={"mode": "33188", "mtime": "1000000000"})
    m = mount(bucket)
    assert os.stat(m.path / "shared.txt").st_mtime == 1000000000
    s3.put_object(Bucket=bucket, Key="shared.txt", Body=b"v2 by s3fs",
                  Metadata={"mode": "33152", "mtime": "1100000000"})

    def updated() -> bool:
        os.listdir(m.path)
        st = os.stat(m.path / "shared.txt")
        return (st.st_mode, st.st_mtime, st.st_size) == (0o100600, 1100000000, 10)

    wait_for(updated, timeout=STORE_DEADLINE, message="the new version's attributes")
    assert (m.path / "shared.txt").read_bytes() == b"v2 by s3fs"


def test_attributes_changed_by_another_tool_are_visible(s3, bucket, mount):
    """s3fs on another host runs chmod/touch: a server-side copy onto the same key with new
    metadata; the content, so the ETag, stays the same. The mount shows it once its caches
    expire (a listing with a new LastModified)."""
    s3.put_object(Bucket=bucket, Key="shared.txt", Body=b"same bytes",
                  Metadata={"mode": "33188", "mtime": "1000000000"})
    m = mount(bucket)
    assert os.stat(m.path / "shared.txt").st_mode == 0o100644
    etag = s3.head_object(Bucket=bucket, Key="shared.txt")["ETag"]
    s3.copy_object(Bucket=bucket, Key="shared.txt",
                   CopySource={"Bucket": bucket, "Key": "shared.txt"},
                   MetadataDirective="REPLACE",
                   Metadata={"mode": "33152", "mtime": "1100000000"})
    assert s3.head_object(Bucket=bucket, Key="shared.txt")["ETag"] == etag

    def updated() -> bool:
        os.listdir(m.path)
        st = os.stat(m.path / "shared.txt")
        return (st.st_mode, st.st_mtime) == (0o100600, 1100000000)

    wait_for(updated, timeout=STORE_DEADLINE, message="the attributes another tool stored")
