"""Helpers shared by the tests: `from helpers import wait_for, random_file, ...`.

No fixed sleeps in tests: poll a condition with a deadline (`wait_for`).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent

# random_file / random_bytes generate in chunks of this size; it is part of the definition
# of the byte stream for a given seed, so do not change it.
RANDOM_CHUNK = 1024 * 1024


def s3mpfs_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `python -m s3mpfs`: ours, plus the repo on PYTHONPATH (so the package
    is found even from an interpreter it is not installed in), unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class WaitTimeout(AssertionError):
    """`wait_for` gave up: the condition was still false at the deadline."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    Raises `WaitTimeout` (an AssertionError) naming `message` when `timeout` seconds pass
    first. The predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(min(interval, remaining))


def random_bytes(size: int, seed: int) -> bytes:
    """The same bytes `random_file(path, size, seed)` writes, in memory."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(min(RANDOM_CHUNK, size - len(out)))
    return bytes(out)


def random_file(path: str | os.PathLike[str], size: int, seed: int) -> Path:
    """Write `size` deterministic pseudo-random bytes (a function of `seed`) to `path`.

    Written in chunks, so large files cost little memory. Returns the path.
    """
    path = Path(path)
    rng = random.Random(seed)
    left = size
    with open(path, "wb") as f:
        while left > 0:
            n = min(RANDOM_CHUNK, left)
            f.write(rng.randbytes(n))
            left -= n
    return path


def sha256_file(path: str | os.PathLike[str], chunk: int = RANDOM_CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_object(s3: Any, bucket: str, key: str, **get_kwargs: Any) -> str:
    """Hex SHA-256 of an object's body, streamed (extra kwargs go to get_object, e.g. SSE-C)."""
    h = hashlib.sha256()
    body = s3.get_object(Bucket=bucket, Key=key, **get_kwargs)["Body"]
    for block in body.iter_chunks(RANDOM_CHUNK):
        h.update(block)
    return h.hexdigest()


def no_pending_uploads(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    """The multipart uploads still pending in `bucket` (under `prefix`).

    Despite the name it returns the list, so a failing `assert not no_pending_uploads(...)`
    shows what was left behind.
    """
    uploads: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        uploads.extend(page.get("Uploads", []))
    return uploads


pending_uploads = no_pending_uploads


def list_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key in `bucket` under `prefix`, sorted."""
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(keys)


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def mount_points() -> set[str]:
    """Mount points listed in /proc/self/mountinfo (without touching any filesystem)."""
    points = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                points.add(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """True if `path` is a mount point. Unlike os.path.ismount it never stats `path`, so it
    cannot hang on an unresponsive FUSE filesystem."""
    path = os.path.abspath(path)
    # Resolve symlinks in the parent only: resolving `path` itself would stat it.
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return real in mount_points()


# Seconds to wait for what s3mpfs stores in the background (attribute copies ~0.5 s after
# a change, aborts): generous, because a loaded 2-core machine can stretch them a lot.
STORE_DEADLINE = 30.0


def wait_for_mode(s3: Any, bucket: str, key: str, mode: int) -> dict[str, Any]:
    """The HeadObject answer of `key` once its metadata holds `mode` (a full st_mode, file
    type included): s3mpfs stores a chmod in the background."""
    return wait_for(lambda: (h := s3.head_object(Bucket=bucket, Key=key))["Metadata"].get(
        "mode") == str(mode) and h, message="the mode to be stored", timeout=STORE_DEADLINE)


class Mapping:
    """A shared mmap of a file through libc, for tests of a mounted file: Python's `mmap`
    copies and msyncs holding the GIL, so a page fault or msync that needs S3 would wait
    on a moto server running in this very process; ctypes calls release it."""

    def __init__(self, fd: int, length: int, *, writable: bool = True) -> None:
        import ctypes
        import mmap as _mmap

        self._ctypes = ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._libc = libc
        self.length = length
        prot = _mmap.PROT_READ | (_mmap.PROT_WRITE if writable else 0)
        address = libc.mmap(None, max(length, 1), prot, _mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.address: int = address

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.length - offset))
        buffer = self._ctypes.create_string_buffer(length)
        self._ctypes.memmove(buffer, self.address + offset, length)
        return buffer.raw[:length]

    def write(self, offset: int, data: bytes) -> None:
        assert offset + len(data) <= self.length
        self._ctypes.memmove(self.address + offset, data, len(data))

    def sync(self) -> None:
        MS_SYNC = 4
        if self._libc.msync(self.address, max(self.length, 1), MS_SYNC) != 0:
            err = self._ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def close(self) -> None:
        if self.address:
            self._libc.munmap(self.address, max(self.length, 1))
            self.address = 0

    def __enter__(self) -> Mapping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drop_kernel_caches() -> None:
    """Make the kernel drop its dentries and inodes (it sends FORGET for each one a FUSE
    mount gave it). Skips the calling test where /proc/sys/vm/drop_caches cannot be
    written (not root, or a container that mounts /proc/sys read-only): that is the only
    way to make the kernel forget on demand, and CI runs as root."""
    import pytest

    try:
        Path("/proc/sys/vm/drop_caches").write_text("2")
    except OSError as exc:
        pytest.skip(f"needs to write /proc/sys/vm/drop_caches (root, /proc/sys writable) to "
                    f"make the kernel forget inodes: {exc.strerror or exc}")
