"""Backup workflows on a real mount: rsync, tar, cp -p, mv, shell redirections, truncate,
and a bucket that s3fs and rclone can read (x-amz-meta-mode/uid/gid/mtime).

Real tools run in subprocesses against a mount of moto's S3; the bucket is checked with
boto3. Tests that count requests mount through the recording proxy (tests/s3proxy.py).
Attribute changes on a closed file reach the bucket a moment later (a deferred CopyObject),
so header checks poll with `wait_for`.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import list_keys, random_bytes, random_file, sha256_file, sha256_object, wait_for
from s3proxy import S3Proxy

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
S_IFLNK_BITS = 0o120000
WRITE_KINDS = ("PutObject", "CreateMultipartUpload", "UploadPart", "CopyObject", "UploadPartCopy")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def proxy(s3_server: str) -> Iterator[S3Proxy]:
    """A recording proxy in front of moto. Request it before `mount` in a test's arguments
    so that the mount is unmounted before the proxy stops."""
    with S3Proxy(s3_server) as p:
        yield p


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


def mtime_close(value: str | None, expected: float, tolerance: float = 1e-6) -> bool:
    return value is not None and abs(float(value) - expected) <= tolerance


# Source trees: modes and mtimes a backup must keep. mtimes are old and carry fractions.
BASE_NS = 1_234_567_890_123_456_789
DIR_MODES = {"docs": 0o755, "docs/nested": 0o750, "docs/nested/deep": 0o700, "bin": 0o755}
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
    wait_for(lambda: headers_match(s3, bucket, "backup/", src, paths), timeout=15,
             message="mode/mtime headers of every object")
    assert sha256_object(s3_read, bucket, "backup/big.bin") == sha256_file(src / "big.bin")
    assert not [k for k in list_keys(s3, bucket) if "/." in k], "rsync temp files left"

    # Nothing changed: rsync finds nothing to do and the mount writes nothing.
    proxy.clear()
    out = run("rsync", "-a", "--itemize-changes", f"{src}/", f"{dst}/")
    assert itemized(out) == [], f"second rsync itemized changes:\n{out}"
    writes = {k: proxy.count(k) for k in WRITE_KINDS if proxy.count(k)}
    assert writes == {}, f"second rsync wrote to S3: {writes}"
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

    # One file changed: only that one is sent again.
    changed = src / "docs" / "page03.txt"
    mode = changed.stat().st_mode
    changed.write_bytes(b"new content for the third run\n")
    new_ns = BASE_NS + 123_456_789
    os.utime(changed, ns=(new_ns, new_ns))
    out = run("rsync", "-a", "--itemize-changes", f"{src}/", f"{dst}/")
    lines = itemized(out)
    assert [ln for ln in lines if not ln.startswith(".d")] == [">f.st...... docs/page03.txt"], out
    assert (dst / "docs" / "page03.txt").read_bytes() == b"new content for the third run\n"
    st = os.stat(dst / "docs" / "page03.txt")
    assert (st.st_mode, st.st_mtime_ns // 10**9) == (mode, new_ns // 10**9)
    wait_for(lambda: meta_is(s3, bucket, "backup/docs/page03.txt", mode=str(mode)),
             timeout=10, message="headers of the changed file")
    assert mtime_close(meta(s3, bucket, "backup/docs/page03.txt")["mtime"], new_ns / 1e9)
    run("diff", "-r", "--no-dereference", src, dst)
