"""What /proc says of the processes using the mount's files: whether the process that
opened a file still has it open for writing (commits wait for its last close: forked
children and duplicated descriptors flush too), and which process a FUSE thread id is.
Read with readlink and fdinfo only: a stat would come back to this filesystem."""

from __future__ import annotations

import os


def holds_for_writing(pid: int, path: str) -> bool:
    """Whether process `pid` has a descriptor open for writing on `path` (a read-only
    one of the same file does not hold its commit back). False for pid 0 (unknown)."""
    if not pid:
        return False
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False  # gone, or exiting: its descriptors are closed
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") == path and _writes(pid, fd):
                return True
        except OSError:
            continue
    return False


def _writes(pid: int, fd: str) -> bool:
    with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as info:
        for line in info:
            if line.startswith(b"flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    return True


def process_of(pid: int) -> int:
    """The process (thread group) of a thread id that FUSE reported (0: unknown)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0 if pid == 0 else -pid  # gone: matches only itself
