"""The running mount's control socket: how `s3mpfs status` and `s3mpfs unmount` reach it.

A Unix socket per mount, named after the mount point, in a directory only the mounting
user can enter: `/run/s3mpfs` for root, `/run/user/UID/s3mpfs` (or `/tmp/s3mpfs-UID`)
for others. The mode of that directory is what keeps the status from other users; the
peer's credentials are checked too (the mounting user and root only). A client sends one
line (`status`) and reads one JSON document back. What the status holds comes from
`MountReport`: names, sizes, counters, never keys or credentials.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from typing import Any

import trio

from ..config import MountConfig
from ..s3.stats import MountStats
from ..write.upload import UploadShared

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # seconds a client may take to ask
SAMPLE_INTERVAL = 1.0  # seconds between samples of each upload's bytes (for rates)


class ControlError(Exception):
    """The status of a mount cannot be reached; the message says why."""


def runtime_dir(uid: int) -> str:
    """The directory of `uid`'s control sockets (the same for the daemon and clients)."""
    if uid == 0:
        return "/run/s3mpfs"
    if os.path.isdir(f"/run/user/{uid}"):
        return f"/run/user/{uid}/s3mpfs"
    return f"/tmp/s3mpfs-{uid}"


def mountpoint_path(mountpoint: str) -> str:
    """An absolute path for the mount point, without stat()ing it (a busy or broken FUSE
    mount must not hang the client): only its parent is resolved."""
    path = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def socket_path(mountpoint: str, uid: int) -> str:
    digest = hashlib.sha256(mountpoint_path(mountpoint).encode()).hexdigest()[:24]
    return os.path.join(runtime_dir(uid), f"{digest}.sock")


def _private_dir(path: str, uid: int) -> None:
    """Create `path` (mode 0700) or check that an existing one is private to `uid`."""
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        raise ControlError(f"{path} is not a directory private to uid {uid}")


class MountReport:
    """Builds the mount's status from its stats, live uploads, memory budget and pending
    attribute writes."""

    def __init__(self, config: MountConfig, stats: MountStats, shared: UploadShared,
                 pending_attributes: Callable[[], int],
                 caches: Callable[[], dict[str, int]] = dict) -> None:
        """`caches`: the sizes of the mount's caches (inodes, names in cached listings)."""
        self.config = config
        self.stats = stats
        self.shared = shared
        self.pending_attributes = pending_attributes
        self.caches = caches
        self.metrics_address = ""  # set once the metrics endpoint listens

    def snapshot(self) -> dict[str, Any]:
        c = self.config
        mount = {"source": c.prefix_display, "mountpoint": c.mountpoint, "pid": os.getpid(),
                 "started": self.stats.started, "metrics": self.metrics_address,
                 "part_size": c.part_size, "upload_concurrency": c.upload_concurrency,
                 **self.caches()}
        budget = self.shared.budget
        return self.stats.snapshot(
            list(self.shared.uploads), prefix=c.prefix, memory=(budget.used, budget.limit),
            pending_attributes=self.pending_attributes(), mount=mount)

    async def sample_forever(self) -> None:
        while True:
            self.stats.sample(list(self.shared.uploads))
            await trio.sleep(SAMPLE_INTERVAL)


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


async def serve(report: MountReport, *,
                task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer status requests on the mount's control socket until cancelled."""
    uid = os.getuid()
    path = socket_path(report.config.mountpoint, uid)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _private_dir(os.path.dirname(path), uid)
        if os.path.exists(path):
            if _answers(path):
                raise ControlError(f"another s3mpfs process answers on {path}")
            os.unlink(path)  # a crashed mount's
        old = os.umask(0o177)
        try:
            await listener.bind(path)
        finally:
            os.umask(old)
        listener.listen(16)
    except (OSError, ControlError) as exc:
        listener.close()
        log.warning("no control socket (s3mpfs status will not see this mount): %s", exc)
        task_status.started(None)
        return
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(report.sample_forever)
            task_status.started(path)
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_answer, conn, report, uid)
    finally:
        listener.close()
        try:
            os.unlink(path)
        except OSError:
            pass


async def _answer(conn: trio.socket.SocketType, report: MountReport, uid: int) -> None:
    with conn, trio.move_on_after(REQUEST_TIMEOUT):
        try:
            if _peer_uid(conn) not in (0, uid):
                return
            request = await conn.recv(256)
            if request.strip() != b"status":
                await conn.send(b'{"error": "unknown request"}\n')
                return
            data = json.dumps(report.snapshot()).encode() + b"\n"
            while data:
                sent = await conn.send(data)
                data = data[sent:]
        except OSError:
            pass  # the client went away


def mount_owner(mountpoint: str) -> int | None:
    """The uid that mounted the FUSE filesystem at `mountpoint` (None if not mounted)."""
    target = mountpoint_path(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            point = fields[4].replace("\\040", " ").replace("\\011", "\t") \
                .replace("\\134", "\\")
            if point != target or " - " not in line:
                continue
            options = line.split(" - ", 1)[1].split(" ")[2].strip().split(",")
            for option in options:
                if option.startswith("user_id="):
                    return int(option.removeprefix("user_id="))
            return 0
    return None


def request_status(mountpoint: str, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the mount at `mountpoint` for its status (blocking; used by the CLI)."""
    owner = mount_owner(mountpoint)
    if owner is None:
        raise ControlError(f"{mountpoint} is not mounted")
    path = socket_path(mountpoint, owner)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(b"status\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError
        except PermissionError:
            raise ControlError(f"permission denied: only the user who mounted {mountpoint} "
                               "(and root) may read its status") from None
        except FileNotFoundError:
            raise ControlError(f"{mountpoint} is not an s3mpfs mount, or it has no control "
                               "socket") from None
        except (TimeoutError, ConnectionRefusedError) as exc:
            raise ControlError(f"the s3mpfs process of {mountpoint} does not answer "
                               f"({os.strerror(exc.errno or errno.ETIMEDOUT)})") from None
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"the mount at {mountpoint} refused to answer") from None
    if "error" in answer:
        raise ControlError(f"the mount at {mountpoint} answered: {answer['error']}")
    return answer
