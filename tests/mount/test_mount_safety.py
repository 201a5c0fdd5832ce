"""Mounting safely, the way fstab does it: objects anyone with write access to the bucket
can plant (a setuid-root program, a device file) give no privilege on the host, whatever
mount(8) passes; a crashed mount is recognised and cleared with the documented commands;
a directory is not mounted on twice, nor hidden when not empty."""

from __future__ import annotations

import json
import os
import shutil
import signal
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


# --------------------------------------------------------------------- after a crash


def unit_commands(key: str, mountpoint: Path) -> list[list[str]]:
    """The `key=` command lines of contrib/s3mpfs@.service for `mountpoint`, with s3mpfs
    run from this checkout."""
    unit = (REPO_ROOT / "contrib" / "s3mpfs@.service").read_text()
    commands = []
    for line in unit.splitlines():
        if line.startswith(f"{key}="):
            argv = line.split("=", 1)[1].lstrip("-").replace("%f", str(mountpoint)).split()
            if argv[0] == "/usr/local/bin/s3mpfs":
                argv = [sys.executable, "-m", "s3mpfs", *argv[1:]]
            commands.append(argv)
    return commands


def one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_recover_from_kill_9_with_the_documented_commands(
    mount: Any, run_cli: Any, s3: Any, bucket: str, s3_server: str
) -> None:
    m = mount(bucket)
    (m.path / "kept.txt").write_bytes(b"stored before the crash")
    m.proc.kill()  # kill -9
    m.proc.wait(timeout=10)
    assert is_mounted(m.path)  # dead: ENOTCONN
    opts = f"endpoint_url={s3_server},region={REGION}"

    again = run_cli(bucket, str(m.path), "-f", "-o", opts)
    one_line(again, "dead mount", f"s3mpfs unmount {m.path}")
    one_line(run_cli("status", str(m.path)), "dead mount", f"s3mpfs unmount {m.path}")

    # systemd's way: the unit's ExecStartPre lines clear it (and only a dead one)
    for argv in unit_commands("ExecStartPre", m.path):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                env=s3mpfs_env(), check=False)
        assert result.returncode == 0, (argv, result.stderr)
    assert not is_mounted(m.path)
    mounted = run_cli(bucket, str(m.path), "-o", opts)  # in the background
    assert mounted.returncode == 0, mounted.stderr
    try:
        assert (m.path / "kept.txt").read_bytes() == b"stored before the crash"
        pid = int(json.loads(run_cli("status", str(m.path), "--json").stdout)["mount"]["pid"])
        refused = subprocess.run(unit_commands("ExecStartPre", m.path)[0], capture_output=True,
                                 text=True, timeout=30, env=s3mpfs_env(), check=False)
        one_line(refused, "answers")  # a live mount is left alone
        assert is_mounted(m.path)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10, message="the kill")

        # by hand: s3mpfs unmount clears a dead mount
        cleared = run_cli("unmount", str(m.path))
        assert cleared.returncode == 0, cleared.stderr
        assert "dead mount" in cleared.stderr
        assert not is_mounted(m.path)
    finally:
        if is_mounted(m.path):
            subprocess.run([FUSERMOUNT, "-uz", str(m.path)], check=False, timeout=30)


# --------------------------------------------------------------------- mount point checks


def test_a_second_mount_on_the_same_directory_is_refused(
    mount: Any, run_cli: Any, bucket: str, s3_server: str
) -> None:
    m = mount(bucket)
    opts = f"endpoint_url={s3_server},region={REGION}"
    for mode in (["-f"], []):
        result = run_cli(bucket, str(m.path), *mode, "-o", opts)
        one_line(result, f"already mounted by s3mpfs pid {m.proc.pid}")
    assert m.is_mounted() and m.returncode is None
    assert len([line for line in Path("/proc/mounts").read_text().splitlines()
                if line.split()[1] == str(m.path)]) == 1


def test_a_non_empty_directory_needs_nonempty(
    run_cli: Any, bucket: str, s3: Any, s3_server: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="remote.txt", Body=b"in S3")
    mnt = tmp_path / "full"
    mnt.mkdir()
    (mnt / "local.txt").write_text("on the local disk")
    opts = f"endpoint_url={s3_server},region={REGION}"
    try:
        one_line(run_cli(bucket, str(mnt), "-o", opts), "not empty", "-o nonempty")
        assert not is_mounted(mnt)
        mounted = run_cli(bucket, str(mnt), "-o", f"{opts},nonempty")
        assert mounted.returncode == 0, mounted.stderr
        assert sorted(os.listdir(mnt)) == ["remote.txt"]
    finally:
        subprocess.run([FUSERMOUNT, "-u", str(mnt)], check=False, timeout=30)
        wait_for(lambda: not is_mounted(mnt), timeout=15, message="the unmount")
    assert (mnt / "local.txt").read_text() == "on the local disk"


# --------------------------------------------------------------------- credentials


def test_profile_option_picks_the_credentials(mount: Any, s3_backend: Any, s3: Any,
                                              bucket: str, tmp_path: Path) -> None:
    """Two identities on one host: profile= wins over the environment's keys (wrong ones
    here: a mount that used them would fail on a server that checks signatures)."""
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[backup]\naws_access_key_id = {s3_backend.access_key}\n"
                           f"aws_secret_access_key = {s3_backend.secret_key}\n")
    m = mount(bucket, "profile=backup",
              env={"AWS_SHARED_CREDENTIALS_FILE": str(credentials),
                   "AWS_ACCESS_KEY_ID": "WRONGWRONGWRONG", "AWS_SECRET_ACCESS_KEY": "wrong"})
    (m.path / "via-profile.txt").write_bytes(b"signed with the profile's keys")
    assert s3.get_object(Bucket=bucket, Key="via-profile.txt")["Body"].read() == (
        b"signed with the profile's keys")


# --------------------------------------------------------------------- logs


def test_without_syslog_the_background_mount_logs_to_a_file(
    run_cli: Any, proxy: Any, bucket: str, tmp_path: Path
) -> None:
    from s3proxy import FAULT_500

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    state = tmp_path / "state"
    proxy.add_fault("PutObject", FAULT_500, key_contains="doomed")
    result = run_cli(bucket, str(mnt), "-o", f"endpoint_url={proxy.url},retries=1",
                     env={"S3MPFS_SYSLOG_SOCKET": str(tmp_path / "no-such-socket"),
                          "XDG_STATE_HOME": str(state)})
    log_file = state / "s3mpfs" / (str(mnt).strip("/").replace("/", "-") + ".log")
    try:
        assert result.returncode == 0, result.stderr
        assert result.stderr == (f"s3mpfs: no syslog ({tmp_path / 'no-such-socket'}): "
                                 f"logging to {log_file}\n")
        with pytest.raises(OSError):
            with open(mnt / "doomed.txt", "wb") as f:
                f.write(b"never stored")
        wait_for(lambda: "ERROR" in log_file.read_text() and "doomed.txt" in
                 log_file.read_text(), timeout=15, message="the failed upload's ERROR line")
    finally:
        subprocess.run([FUSERMOUNT, "-u", str(mnt)], check=False, timeout=30)
    wait_for(lambda: "unmounted" in log_file.read_text(), timeout=30,
             message="the daemon's last line")


def test_a_mount_runs_with_huge_pages_and_imports_its_modules_once(
    mount: Any, bucket: str
) -> None:
    """The mount re-executes itself with glibc's huge-pages tunable (s3mpfs/launch.py),
    before importing trio, awscrt or boto3: those are imported by the exec'd process only."""
    m = mount(bucket, env={"PYTHONPROFILEIMPORTTIME": "1"})
    environ = (Path("/proc") / str(m.proc.pid) / "environ").read_bytes().split(b"\0")
    assert any(b"glibc.malloc.hugetlb=1" in entry for entry in environ
               if entry.startswith(b"GLIBC_TUNABLES=")), environ
    imports = [line for line in m.log_text().splitlines() if line.startswith("import time:")]
    assert imports
    for module in ("trio", "awscrt", "boto3"):
        top_level = [line for line in imports if line.rpartition("|")[2].strip() == module]
        assert len(top_level) == 1, (module, top_level)
