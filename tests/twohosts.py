"""Two hosts, one bucket: fixtures for mounts of one bucket that stand for different hosts.

Imported by tests/conftest.py, so that every test can use them. Each mount is its own
s3mpfs daemon (the `mount` factory of tests/conftest.py); nothing is
shared between them but the bucket, as between two machines. `pidns_mount` starts one in
a PID namespace of its own (`unshare --pid --fork --mount-proc`, as a container would):
its mount is in a mount namespace of its own too, reached through /proc/PID/root.

    hosts(*options) -> (a, b)     two mounts of the test's bucket
    pidns_mount(*options)         a mount in new PID and mount namespaces (needs root)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import s3mpfs_env, wait_for

MOUNT_TIMEOUT = 20.0


@pytest.fixture
def hosts(mount: Any, bucket: str) -> Callable[..., tuple[Any, Any]]:
    def two(*options: str) -> tuple[Any, Any]:
        return mount(bucket, *options), mount(bucket, *options)

    return two


class NamespacedMount:
    """s3mpfs in new PID and mount namespaces; `path` is its mount point as seen from
    here (through /proc/PID/root of the `unshare` process, which shares its namespaces)."""

    def __init__(self, proc: subprocess.Popen[bytes], mountpoint: Path, log_path: Path):
        self.proc = proc
        self.mountpoint = mountpoint
        self.log_path = log_path
        self.path = Path(f"/proc/{proc.pid}/root{mountpoint}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def is_mounted(self) -> bool:
        try:
            with open(f"/proc/{self.proc.pid}/mountinfo") as f:
                return any(line.split(" ")[4] == str(self.mountpoint) for line in f)
        except OSError:
            return False

    def daemon_pid(self) -> int:
        """s3mpfs's PID as seen from here (pid 1 of its namespace)."""
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return int(f.read().split()[0])

    def run_inside(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """A process in the mount's PID and mount namespaces (a container's own process),
        where `self.mountpoint` is the mount."""
        return subprocess.Popen(["nsenter", "-t", str(self.daemon_pid()), "-p", "-m", *argv],
                                text=True, **kwargs)

    def stop(self) -> None:
        """End unshare: --kill-child sends SIGTERM to s3mpfs (pid 1 of its namespace),
        which unmounts; then wait for it to exit."""
        if self.proc.poll() is not None:
            return
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                children = [int(pid) for pid in f.read().split()]
        except OSError:
            children = []
        self.proc.kill()
        self.proc.wait(timeout=10)
        for pid in children:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), timeout=60,
                     message="s3mpfs in the PID namespace to exit")


@pytest.fixture
def pidns_mount(s3_server: str, bucket: str, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[Callable[..., NamespacedMount]]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for PID namespaces")
    mounts: list[NamespacedMount] = []

    def factory(*options: str) -> NamespacedMount:
        n = len(mounts)
        mountpoint = tmp_path / f"nsmnt{n}"
        mountpoint.mkdir()
        log_path = tmp_path / f"nsmount{n}.log"
        opts = ",".join([f"endpoint_url={s3_server}", "region=us-east-1", *options])
        argv = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM",
                sys.executable, "-m", "s3mpfs", bucket, str(mountpoint), "-f", "-o", opts]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=s3mpfs_env(),
                                    cwd=tmp_path, start_new_session=True)
        m = NamespacedMount(proc, mountpoint, log_path)
        mounts.append(m)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not m.is_mounted():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"s3mpfs in a PID namespace did not mount:\n{m.log_text()}",
                            pytrace=False)
            time.sleep(0.05)
        wait_for(lambda: m.path.is_dir(), timeout=MOUNT_TIMEOUT,
                 message="the namespaced mount to answer")
        return m

    yield factory
    for m in mounts:
        m.stop()
    if getattr(getattr(request.node, "rep_call", None), "failed", False):
        for m in mounts:
            print(f"\n===== s3mpfs log (PID namespace) exit={m.proc.returncode}\n"
                  f"{m.log_text()}", file=sys.stderr)
