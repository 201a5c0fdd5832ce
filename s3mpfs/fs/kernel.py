"""Kernel-side tuning of the mount: the read-ahead window of its backing device.

The kernel reads a FUSE file ahead in a window of the mount's `read_ahead_kb` (128 KiB by
default, whatever the filesystem asks for at init), and sends one READ request per window
step: a 1 GiB `cat` is 8,192 requests, each a round through pyfuse3 and trio. A larger
window lets the kernel send READs of up to max_pages (1 MiB with fuse3) and keep several in
flight, so the same file is 1,024 requests that overlap. Writing the window needs root (or
write access to /sys/class/bdi); without it the mount keeps the default and says so. It is
written once the kernel's INIT is answered (mount.py): the kernel sets the window from that
answer, to at most what it was when INIT was sent, so a window set before is cut back.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

READ_AHEAD_KIB = 4096


def _device_of(mountpoint: str) -> str | None:
    """The "major:minor" of the mount at `mountpoint` (from /proc/self/mountinfo: a stat
    would ask this very filesystem, which is not serving yet)."""
    wanted = os.path.abspath(mountpoint)  # no realpath: its lstat would ask this mount
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.readlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].encode().decode("unicode_escape")  # \040 for spaces, ...
            if point == wanted:
                found = fields[2]  # the last one mounted there is ours
    return found


def tune_read_ahead(mountpoint: str, kib: int = READ_AHEAD_KIB) -> bool:
    """Set the mount's read-ahead window; False (and a debug line) if it cannot be."""
    device = _device_of(mountpoint)
    if device is None:
        return False
    path = f"/sys/class/bdi/{device}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(kib))
    except OSError as exc:
        log.debug("cannot set %s (%s): reads go in 128 KiB requests", path, exc)
        return False
    return True
