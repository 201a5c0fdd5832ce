"""A differential state machine: the same random sequence of file operations applied to a
file on an s3mpfs mount and to one in a local directory, every result compared after every
step (bytes read, sizes from fstat / lseek / stat, errno). At the end of each sequence
every descriptor is closed and the object in S3 must equal the local file.

Used by tests/mount/test_differential.py (bounded, for CI) and scripts/differential.py
(long mode: many seeds, many operations).
"""

from __future__ import annotations

import errno
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from helpers import Mapping
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB  # the mount's part_size
MAX_FDS = 3
NAMES = ("f", "g")

ACCESS = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}
EXTRA = [0, os.O_CREAT, os.O_CREAT | os.O_TRUNC, os.O_TRUNC, os.O_APPEND,
         os.O_CREAT | os.O_APPEND, os.O_CREAT | os.O_EXCL]

offsets = st.one_of(st.integers(0, 70_000), st.integers(0, 3 * PART + MiB),
                    st.sampled_from([PART - 1, PART, 2 * PART + 3, 3 * PART + 1]))
lengths = st.one_of(st.integers(0, 9_000), st.integers(0, 300_000))


def outcome(call: Any, *args: Any) -> Any:
    """What a call gave: its value, or ('errno', name) for an OSError."""
    try:
        return call(*args)
    except OSError as exc:
        return ("errno", errno.errorcode.get(exc.errno or 0, exc.errno))


class Side:
    """One of the two directories: the mount's or the local one."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name


class Differential(RuleBasedStateMachine):
    """Set `mount_root`, `local_root`, `s3`, `bucket` (class attributes) before running."""

    mount_root: Path
    local_root: Path
    s3: Any
    bucket: str
    key_prefix = ""
    steps_log: list[str] | None = None
    failures: list[str] = []  # (set a list per run) every difference found, with its steps
    limitations: list[str] = []  # documented differences met (SEMANTICS.md), each resynced

    def __init__(self) -> None:
        super().__init__()
        self.mnt = Side(self.mount_root)
        self.loc = Side(self.local_root)
        self.fds: list[tuple[int, int, int, str]] = []  # mount fd, local fd, flags, access
        self.history: list[str] = []
        self.deleted_while_open = False  # a name of an open file was removed (unlink, rename)
        for side in (self.mnt, self.loc):
            for name in NAMES:
                try:
                    os.unlink(side.path(name))
                except FileNotFoundError:
                    pass

    def note(self, text: str) -> None:
        self.history.append(text)
        if self.steps_log is not None:
            self.steps_log.append(f"{time.monotonic():.2f} {text}")

    def same(self, what: str, on_mount: Any, local: Any, *, unlinked: bool = False) -> None:
        """`unlinked`: the local descriptor's file has no name left (st_nlink 0)."""
        if on_mount == local:
            return
        if self._documented(what, on_mount, local) or (unlinked and _failed_read(on_mount,
                                                                                   local)):
            self.limitations.append(f"{what}: {on_mount}")
            self.note(f"  (documented: {what} gave {on_mount} on the mount; starting afresh)")
            self.resync()
            return
        where = ""
        if isinstance(on_mount, bytes) and isinstance(local, bytes):
            where = f" ({_difference(on_mount, local)})"
        message = (f"{what}: mount {_short(on_mount)} != local {_short(local)}{where}\n"
                   "steps:\n  " + "\n  ".join(self.history[-60:]))
        self.failures.append(message)  # hypothesis's replay of external state can differ
        raise AssertionError(message)

    def _documented(self, what: str, on_mount: Any, local: Any) -> bool:
        """A difference docs/SEMANTICS.md lists: a file opened write-only streams, and
        cannot shrink or take a write into a part sent and not kept (EOPNOTSUPP, EINVAL;
        also open(O_TRUNC) of it); writes to a streaming file after it was deleted, or
        another file renamed onto it (EIO); reads of a file deleted while open, once its
        object is gone (EIO: `same(unlinked=True)`)."""
        if local is not None and not isinstance(local, int):
            return False
        op = what.split("(")[0]
        if self.deleted_while_open and on_mount == ("errno", "EIO"):
            return True  # (documented for a file deleted while it streams)
        allowed = {"open": {"ENOTSUP"}, "ftruncate": {"ENOTSUP", "EINVAL"},
                   "pwrite": {"EINVAL"}, "msync": {"EINVAL"}}
        return isinstance(on_mount, tuple) and on_mount[1] in allowed.get(op, ())

    def resync(self) -> None:
        """Start again from nothing on both sides (after a documented difference)."""
        for on_mount, local, _, _ in self.fds:
            outcome(os.close, on_mount)
            outcome(os.close, local)
        self.fds.clear()
        self.deleted_while_open = False
        for side in (self.mnt, self.loc):
            for name in NAMES:
                outcome(os.unlink, side.path(name))

    # -- descriptors ---------------------------------------------------------------

    @precondition(lambda self: len(self.fds) < MAX_FDS)
    @rule(name=st.sampled_from(NAMES), access=st.sampled_from(sorted(ACCESS)),
          extra=st.sampled_from(EXTRA))
    def open(self, name: str, access: str, extra: int) -> None:
        flags = ACCESS[access] | extra
        if access == "r" and extra & os.O_TRUNC:
            return  # O_RDONLY|O_TRUNC is unspecified by POSIX
        self.note(f"open({name}, {access}, {_flags(extra)})")
        fds = [outcome(os.open, side.path(name), flags, 0o644) for side in (self.mnt, self.loc)]
        if isinstance(fds[0], int) and isinstance(fds[1], int):
            self.fds.append((fds[0], fds[1], flags, access))
            return
        for fd in fds:
            if isinstance(fd, int):
                os.close(fd)
        self.same("open", fds[0], fds[1])

    def _pick(self, index: int, want: str = "") -> tuple[int, int, int, str] | None:
        if not self.fds:
            return None
        candidates = [f for f in self.fds if not want or f[3] in _can(want)]
        return candidates[index % len(candidates)] if candidates else None

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_FDS))
    def close(self, index: int) -> None:
        picked = self._pick(index)
        assert picked is not None
        self.fds.remove(picked)
        self.note(f"close(fd{picked[0]})")
        self.same("close", outcome(os.close, picked[0]), outcome(os.close, picked[1]))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_FDS), offset=offsets, length=lengths)
    def pread(self, index: int, offset: int, length: int) -> None:
        picked = self._pick(index)
        assert picked is not None
        self.note(f"pread(fd{picked[0]}, {length} @ {offset})")
        self.same("pread", outcome(os.pread, picked[0], length, offset),
                  outcome(os.pread, picked[1], length, offset),
                  unlinked=os.fstat(picked[1]).st_nlink == 0)

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_FDS), offset=offsets, length=lengths,
          seed=st.integers(0, 2**16))
    def pwrite(self, index: int, offset: int, length: int, seed: int) -> None:
        picked = self._pick(index, "w")
        if picked is None:
            return
        data = random.Random(seed).randbytes(length)
        self.note(f"pwrite(fd{picked[0]}, {length} @ {offset})")
        self.same("pwrite", outcome(os.pwrite, picked[0], data, offset),
                  outcome(os.pwrite, picked[1], data, offset))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_FDS), size=offsets)
    def ftruncate(self, index: int, size: int) -> None:
        picked = self._pick(index, "w")
        if picked is None:
            return
        self.note(f"ftruncate(fd{picked[0]}, {size})")
        self.same("ftruncate", outcome(os.ftruncate, picked[0], size),
                  outcome(os.ftruncate, picked[1], size))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_FDS))
    def fsync(self, index: int) -> None:
        picked = self._pick(index)
        assert picked is not None
        self.note(f"fsync(fd{picked[0]})")
        self.same("fsync", outcome(os.fsync, picked[0]), outcome(os.fsync, picked[1]))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_FDS), offset=offsets, length=lengths)
    def mmap_read(self, index: int, offset: int, length: int) -> None:
        picked = self._pick(index, "r")
        if picked is None:
            return
        size = _mapped_size(picked[1])
        if not size:
            return
        offset %= size
        self.note(f"mmap_read(fd{picked[0]}, {length} @ {offset})")
        with Mapping(picked[0], size, writable=False) as on_mount, \
                Mapping(picked[1], size, writable=False) as local:
            self.same("mmap read", on_mount.read(offset, length), local.read(offset, length))

    @precondition(lambda self: self.fds)
    @rule(index=st.integers(0, MAX_FDS), offset=offsets, length=lengths,
          seed=st.integers(0, 2**16))
    def mmap_write(self, index: int, offset: int, length: int, seed: int) -> None:
        picked = self._pick(index, "rw")
        if picked is None:
            return
        size = _mapped_size(picked[1])
        if not size:
            return
        offset %= size
        data = random.Random(seed).randbytes(min(length, size - offset))
        self.note(f"mmap_write(fd{picked[0]}, {len(data)} @ {offset}) + msync")
        with Mapping(picked[0], size) as on_mount, Mapping(picked[1], size) as local:
            on_mount.write(offset, data)
            local.write(offset, data)
            self.same("msync", outcome(on_mount.sync), outcome(local.sync))

    # -- names ---------------------------------------------------------------------

    @rule(old=st.sampled_from(NAMES), new=st.sampled_from(NAMES))
    def rename(self, old: str, new: str) -> None:
        if old == new:
            return
        self.note(f"rename({old}, {new})")
        self.deleted_while_open |= self._open(new) and self.loc.path(old).exists()
        self.same("rename", outcome(os.rename, self.mnt.path(old), self.mnt.path(new)),
                  outcome(os.rename, self.loc.path(old), self.loc.path(new)))

    @rule(name=st.sampled_from(NAMES))
    def unlink(self, name: str) -> None:
        self.note(f"unlink({name})")
        self.deleted_while_open |= self._open(name)
        self.same("unlink", outcome(os.unlink, self.mnt.path(name)),
                  outcome(os.unlink, self.loc.path(name)))

    @rule()
    def listdir(self) -> None:
        """A listing of the directory: the names must agree, and what it shows the mount
        of the objects S3 holds (their versions) must change no open file's state."""
        self.note("listdir()")
        self.same("listdir", outcome(lambda p: sorted(os.listdir(p)), self.mnt.root),
                  outcome(lambda p: sorted(os.listdir(p)), self.loc.root))

    def _open(self, name: str) -> bool:
        """Whether the local file `name` is open (a rename onto it, or its unlink, makes
        it a file deleted while open; a rename of it does not)."""
        try:
            inode = os.stat(self.loc.path(name)).st_ino
        except FileNotFoundError:
            return False
        return any(os.fstat(local).st_ino == inode for _, local, _, _ in self.fds)

    # -- after every step ----------------------------------------------------------

    @invariant()
    def sizes_agree(self) -> None:
        for on_mount, local, _, _ in self.fds:
            self.same(f"fstat(fd{on_mount})", os.fstat(on_mount).st_size,
                      os.fstat(local).st_size)
            self.same(f"lseek(fd{on_mount}, 0, SEEK_END)", os.lseek(on_mount, 0, os.SEEK_END),
                      os.lseek(local, 0, os.SEEK_END))
        for name in NAMES:
            self.same(f"stat({name})", outcome(lambda p: os.stat(p).st_size, self.mnt.path(name)),
                      outcome(lambda p: os.stat(p).st_size, self.loc.path(name)))

    def teardown(self) -> None:
        self.note("close everything; compare S3 with the local files")
        try:
            while self.fds:
                self.close(0)
            for name in NAMES:
                local = self.loc.path(name)
                key = self.key_prefix + name
                if local.exists():
                    try:
                        stored = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                    except self.s3.exceptions.NoSuchKey:
                        stored = None
                    self.same(f"S3 object {key}", stored, local.read_bytes())
                    self.same(f"read back {name}", self.mnt.path(name).read_bytes(),
                              local.read_bytes())
                else:
                    listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key)
                    self.same(f"S3 keys {key}", [o["Key"] for o in listed.get("Contents", [])
                                                 if o["Key"] == key], [])
        finally:
            for on_mount, local, _, _ in self.fds:
                for fd in (on_mount, local):
                    outcome(os.close, fd)
            self.fds.clear()


def _failed_read(on_mount: Any, local: Any) -> bool:
    """A read of a file deleted while open that failed once its object was gone (EIO,
    documented): with EIO, or short, when the kernel had part of it in its page cache
    (a read that fails partway returns the bytes before the failure)."""
    if on_mount == ("errno", "EIO"):
        return True
    return (isinstance(on_mount, bytes) and isinstance(local, bytes)
            and len(on_mount) < len(local) and local.startswith(on_mount))


def _mapped_size(local_fd: int) -> int:
    """The size to map of a descriptor's file; 0 (not mapped) if it was unlinked: the
    mount's reads of such a file may fail (EIO, documented), which in a mapping is a
    SIGBUS that would end the whole run."""
    status = os.fstat(local_fd)
    return status.st_size if status.st_nlink else 0


def _can(want: str) -> tuple[str, ...]:
    return {"w": ("w", "rw"), "r": ("r", "rw"), "rw": ("rw",)}[want]


def _flags(extra: int) -> str:
    names = [n for n in ("O_CREAT", "O_TRUNC", "O_APPEND", "O_EXCL") if extra & getattr(os, n)]
    return "|".join(names) or "0"


def _difference(on_mount: bytes, local: bytes, page: int = 4096) -> str:
    """Where two byte strings differ, so that a difference explains itself: both sizes,
    the first and last differing bytes, and the pages holding them (a page read before
    a write, or zero-filled, and then written back shows as whole pages)."""
    common = min(len(on_mount), len(local))
    changed = [start for start in range(0, common, page)
               if on_mount[start:min(start + page, common)]
               != local[start:min(start + page, common)]]
    first = last = common  # (only the sizes differ)
    if changed:
        start, end = changed[0], min(changed[0] + page, common)
        first = next(i for i in range(start, end) if on_mount[i] != local[i])
        start, end = changed[-1], min(changed[-1] + page, common)
        last = next(i for i in reversed(range(start, end)) if on_mount[i] != local[i])
    if len(on_mount) != len(local):
        last = max(len(on_mount), len(local)) - 1
    span = on_mount[first:min(last + 1, common)]
    zeros = f"; the mount has zeros there: {not span.strip(bytes(1))}" if span else ""
    return (f"sizes: mount {len(on_mount)}, local {len(local)}; first difference at byte "
            f"{first}, last at byte {last} (pages {first // page} to {last // page}, "
            f"{len(changed)} page(s) within both sizes differ){zeros}")


def _short(value: Any) -> str:
    if isinstance(value, bytes) and len(value) > 64:
        return f"<{len(value)} bytes: {value[:24]!r}...>"
    return repr(value)


# -- replaying a printed sequence ----------------------------------------------------

_STEP = re.compile(r"(\w+)\((.*)\)")


def replay(machine: Differential, lines: list[str]) -> None:
    """Apply a sequence as the machine prints it (its `steps:` lines) to `machine`: a
    failure found by scripts/differential.py, replayed and cut down by hand. The bytes
    written are new random ones (the printed steps do not carry them). Printed
    descriptors (`fdN`) are mapped to this run's: an example starts with none open, and
    each open that succeeds takes the lowest free numbers, one on the mount and one
    local, from the lowest number the steps name."""
    steps = [line.strip() for line in lines if _STEP.fullmatch(line.strip().split(" + ")[0])]
    named = [int(n) for n in re.findall(r"\bfd(\d+)\b", " ".join(steps))]
    base = min(named, default=3)
    used: set[int] = set()
    actual: dict[int, tuple[int, int, int, str]] = {}  # printed mount fd -> this run's
    for number, step in enumerate(steps):
        name, args = _STEP.fullmatch(step.split(" + ")[0]).groups()
        parts = [a.strip() for a in args.split(",")]
        fd = int(parts[0][2:]) if parts[0].startswith("fd") else -1

        def index(want: str = "", fd: int = fd) -> int:
            return [f for f in machine.fds if not want or f[3] in _can(want)].index(actual[fd])

        if name == "open":
            extra = 0
            for flag in parts[2].split("|"):
                extra |= getattr(os, flag) if flag != "0" else 0
            before = len(machine.fds)
            machine.open(parts[0], parts[1], extra)
            if len(machine.fds) > before:
                pair = []
                for _ in range(2):
                    pair.append(next(n for n in range(base, 1 << 16) if n not in used))
                    used.add(pair[-1])
                actual[pair[0]] = machine.fds[-1]
        elif name in ("rename", "unlink"):
            getattr(machine, name)(*parts)
        elif name == "listdir":
            machine.listdir()
        elif name in ("close", "fsync"):
            getattr(machine, name)(index())
            if name == "close":
                del actual[fd]
                used -= {fd, fd + 1}
        elif name == "ftruncate":
            machine.ftruncate(index("w"), int(parts[1]))
        else:
            length, offset = (int(v) for v in parts[1].split(" @ "))
            if name == "pread":
                machine.pread(index(), offset, length)
            elif name == "pwrite":
                machine.pwrite(index("w"), offset, length, number)
            elif name == "mmap_read":
                machine.mmap_read(index("r"), offset, length)
            elif name == "mmap_write":
                machine.mmap_write(index("rw"), offset, length, number)
        machine.sizes_agree()
    machine.teardown()
