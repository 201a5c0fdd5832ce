"""Mounting safely, the way fstab does it: objects anyone with write access to the bucket
can plant (a setuid-root program, a device file) give no privilege on the host, whatever
mount(8) passes; a crashed mount is recognised and cleared with the documented commands;
a directory is not mounted on twice, nor hidden when not empty."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REGION
from helpers import REPO_ROOT, is_mounted, s3mpfs_env, wait_for

pytestmark = pytest.mark.mount

FUSERMOUNT = shutil.which("fusermount3") or "fusermount3"
MOUNT_FUSE = shutil.which("mount.fuse3") or "/usr/sbin/mount.fuse3"
NOBODY = 65534


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory user nobody can traverse (pytest's tmp_path is root's alone); whatever
    is still mounted under it at the end is unmounted."""
    path = Path(tempfile.mkdtemp(prefix="s3mpfs-safety-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for entry in path.iterdir():
        if is_mounted(entry):
            subprocess.run([FUSERMOUNT, "-uz", str(entry)], check=False, timeout=30)
    shutil.rmtree(path, ignore_errors=True)


def fstab_mount(tmp: Path, source: str, mountpoint: Path, options: str) -> None:
    """Mount as an fstab line `SOURCE MOUNTPOINT fuse.s3mpfs OPTIONS` does: mount.fuse3
    runs `s3mpfs SOURCE MOUNTPOINT -o OPTIONS,dev,suid` (it appends those two)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "s3mpfs"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m s3mpfs \"$@\"\n")
    wrapper.chmod(0o755)
    env = s3mpfs_env({"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    result = subprocess.run([MOUNT_FUSE, source, str(mountpoint), "-t", "fuse.s3mpfs",
                             "-o", options], capture_output=True, text=True, timeout=60,
                            env=env, cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert is_mounted(mountpoint)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", "--", *argv], capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts with allow_other and runs as nobody")
def test_planted_setuid_root_program_gives_no_root(
    s3: Any, bucket: str, s3_server: str, tmp_path: Path, public_dir: Path
) -> None:
    # What anyone with write access to the bucket can store: a copy of id(1), setuid root.
    s3.put_object(Bucket=bucket, Key="id", Body=Path("/usr/bin/id").read_bytes(),
                  Metadata={"mode": str(stat.S_IFREG | 0o4755), "uid": "0", "gid": "0"})
    s3.put_object(Bucket=bucket, Key="gid", Body=Path("/usr/bin/id").read_bytes(),
                  Metadata={"mode": str(stat.S_IFREG | 0o2755), "uid": "0", "gid": "0"})
    # A world-writable device file: /dev/null's number here, a disk's in an attack.
    s3.put_object(Bucket=bucket, Key="null", Body=b"",
                  Metadata={"mode": str(stat.S_IFCHR | 0o666), "uid": "0", "gid": "0",
                            "rdev": str(os.makedev(1, 3))})
    mnt = public_dir / "mnt"
    mnt.mkdir()
    fstab_mount(tmp_path, bucket, mnt,
                f"allow_other,endpoint_url={s3_server},region={REGION}")

    assert stat.S_IMODE(os.stat(mnt / "id").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(mnt / "gid").st_mode) == 0o755
    euid = as_nobody(str(mnt / "id"), "-u")
    assert euid.returncode == 0, euid.stderr
    assert euid.stdout.strip() == str(NOBODY)
    egid = as_nobody(str(mnt / "gid"), "-g")
    assert egid.stdout.strip() == str(NOBODY)
    assert stat.S_ISCHR(os.stat(mnt / "null").st_mode)
    with pytest.raises(PermissionError):
        open(mnt / "null", "rb").close()
    options = next(line.split()[3] for line in Path("/proc/mounts").read_text().splitlines()
                   if line.split()[1] == str(mnt))
    assert {"nosuid", "nodev"} <= set(options.split(","))

    subprocess.run([FUSERMOUNT, "-u", str(mnt)], check=True, timeout=30)
    wait_for(lambda: not is_mounted(mnt), timeout=15, message="the unmount")


def test_allow_suid_shows_the_stored_bits(mount: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="tool", Body=b"#!/bin/sh\n",
                  Metadata={"mode": str(stat.S_IFREG | 0o4755)})
    m = mount(bucket, "allow_suid")
    assert stat.S_IMODE(os.stat(m.path / "tool").st_mode) == 0o4755
