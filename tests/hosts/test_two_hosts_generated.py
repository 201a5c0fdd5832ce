"""Two hosts, one bucket, generated: interleaved sessions on two mounts, checked against an
exact model of the bucket (docs/SEMANTICS.md, "Several hosts", "What you can rely on",
"One state per open file", "Consistency").

What is generated (from one seed, by `generate`, before anything runs: the list of steps
does not depend on outcomes, so a seed, or a file of steps, replays the same operations):
sessions on two mounts A and B of one bucket (`hosts`, each its own daemon, `part_size=5M`),
interleaved from this one thread. A session is one descriptor of one key
(`gN/d0/a` ... `gN/d1/c`, three names in two directories whose markers boto3 puts, so
that neither mount created them: SEMANTICS, "Consistency", keeps a mount's own new
directory's listing up to 30 s):

    replace   open(O_WRONLY|O_CREAT|O_TRUNC), sequential writes          (cp, >)
    excl      open(O_WRONLY|O_CREAT|O_EXCL), sequential writes           (mkstemp)
    append    open(O_WRONLY|O_CREAT|O_APPEND), writes                    (>>)
    rmw       open(O_RDWR), pwrite anywhere, ftruncate (mostly keeping a prefix)
    read      open(O_RDONLY), pread of chunks across other steps

with fsync in the middle of write sessions and a close at the end, and between them, on
either host, unlink, rename within a directory, listdir and stat. Sizes go from 0 to a bit
over one part (most are small). At most one session per host and key, and a host renames
or unlinks no key it has a session on (those are the single-mount differential test's
business: tests/differential.py): every cross-host effect is what is tested here.

The model: for each key, the bytes S3 holds (or absent), every version it ever held, and
when (time.monotonic) and by which host it last changed. Every change goes through the
mounts, so after every step the bucket, read with boto3, must equal the model except for
the key(s) the step touched, whose new value is checked against the step's outcome and
then taken into the model:

 1. A commit (close, fsync) that succeeds of a session built on a version (append, rmw,
    any session after an fsync) stored exactly the version S3 held just before + the
    session's edits, and that version is the one it opened (same size; after an fsync,
    the bytes it stored). A commit that fails (EIO) changed nothing in S3 and leaves no
    multipart upload pending; later writes and commits of that descriptor change nothing.
 2. A replace that succeeds stores exactly its bytes (the last commit wins, whole).
 3. An excl session (and an append opened on no object) never replaces an object another
    host created meanwhile: EEXIST at open or EIO at close, the other's bytes stay.
 4. Every chunk read through one descriptor is bytes of one version the key has held,
    and all chunks of a descriptor fit the same version; or the read fails with EIO.
 5. Liveness: an operation on a key no other host changed during its session and in the
    STALE seconds before it opened (listing TTL 2 s + kernel attribute timeout 1 s) must
    succeed (and an open, stat, unlink or rename must see the key as the model has it).
    Nothing sleeps for this: it is asserted only where the condition holds.
 6. No success is lost: the bucket equals the model after every step and at the end,
    when no upload is pending and both mounts read every key as the model has it.

Outcomes the model cannot predict (a stale cache refusing a conditional commit) may be
success or EIO, but each must satisfy 1-4 exactly. Accepted, as documented:
 - where the server ignores a condition the mount HEADs right before the commit
   (SEMANTICS, "What they cannot rely on"); single-threaded steps never fall in that window;
 - a host whose view of a file is stale (changed by the other host less than STALE ago)
   renames it with that view's attributes (SEMANTICS, "Several hosts": "Caches" and
   "Attribute copies and renames"): the bytes at the new name are the current version's,
   but its `stat` may show the stale size and its reads fail with EIO until the cache
   expires (`Run.stale_sizes`);
 - after a commit fails, its host may show the file it failed to store (empty, or of the
   size written) until the kernel's attribute timeout: `stat` that size, reads of a new
   one EOF at 0 (`Run.ghosts`; a stale view of the host's own, within "Caches"). Opening
   it for writing again must not build on it (fixed: ESTALE, the kernel looks it up).

Running it:

    pytest tests/hosts/test_two_hosts_generated.py --backend moto      # SEEDS[backend]
    S3MPFS_HOSTSGEN_SEEDS=0-999 S3MPFS_HOSTSGEN_MINUTES=10 pytest ... -s  # a long run
    S3MPFS_HOSTSGEN_SEEDS=17 pytest ...                                  # one seed again
    S3MPFS_HOSTSGEN_REPLAY=steps.txt pytest ...   # steps cut from a failure's log

S3MPFS_HOSTSGEN_STEPS sets the steps per seed. Every seed runs (one after the other, on
the same two mounts, each under its own prefix gN/); the test fails at the end with the
first failing seed's step log, how to replay it and the mounts' logs. With
S3MPFS_HOSTSGEN_SEEDS or _MINUTES set it prints a line per seed (operations, outcome).
"""

from __future__ import annotations

import ast
import errno
import hashlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from helpers import STORE_DEADLINE, no_pending_uploads, wait_for

pytestmark = pytest.mark.mount

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB  # the mounts' part_size
STALE = 3.2  # s: listing TTL (2 s) + kernel attribute timeout (1 s), and a margin
HOSTS = ("A", "B")
DIRS = ("d0", "d1")
NAMES = ("a", "b", "c")
KEYS = tuple(f"{d}/{n}" for d in DIRS for n in NAMES)
KINDS = ("replace", "excl", "append", "rmw", "read")
KIND_WEIGHTS = (3, 2, 4, 3, 3)
MAX_SESSIONS = 4
READ_SIZES = (4096, 65_536, 200_001, MiB + 5)
SEEDS = {"moto": "0-19", "rgw": "0-7"}  # about 35 s each on a 2-core machine
STEPS = 60
WRITE_KINDS = ("replace", "excl", "append", "rmw")

Step = tuple[Any, ...]


# ----------------------------------------------------------------------------- generation


def write_size(rng: random.Random) -> int:
    """Mostly small; a few a part or a bit over (multipart, copied bases)."""
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.75:
        return rng.randint(1, 20_000)
    if r < 0.95:
        return rng.randint(20_000, 400_000)
    return PART + rng.randint(-100_000, 400_000)


def generate(seed: int, steps: int = STEPS) -> list[Step]:
    """The steps of a seed. They depend on the seed only, never on outcomes: a session
    whose open failed makes its later steps no-ops. Ends by closing every session."""
    rng = random.Random(seed)
    home = {k: rng.choice(HOSTS) for k in KEYS}  # most work on a key comes from one host
    sessions: dict[int, list[Any]] = {}  # sid -> [host, kind, key, bytes written]
    out: list[Step] = []
    next_sid = 0
    made: set[str] = set()  # keys some write session was opened on

    def host_for(key: str) -> str:
        return home[key] if rng.random() < 0.65 else other(home[key])

    def busy(host: str, *keys: str) -> bool:
        return any(s[0] == host and s[2] in keys for s in sessions.values())

    while len(out) < steps:
        r = rng.random()
        if sessions and r < 0.55:
            sid = rng.choice(sorted(sessions))
            host, kind, key, written = sessions[sid]
            if kind == "read":
                if rng.random() < 0.85:
                    out.append(("read", sid, round(rng.random(), 3), rng.choice(READ_SIZES)))
                else:
                    out.append(("close", sid))
                    del sessions[sid]
                continue
            r = rng.random()
            if r < 0.3 and (written or kind != "append"):
                out.append(("close", sid))
                del sessions[sid]
            elif r < 0.4:
                out.append(("fsync", sid))
            elif kind == "rmw" and r < 0.6:
                out.append(("truncate", sid, round(rng.uniform(0, 1.1), 3)))
                sessions[sid][3] += 1
            else:
                n = write_size(rng) or (1 if kind == "append" else 0)
                if kind == "rmw":
                    out.append(("pwrite", sid, round(rng.uniform(0, 1.05), 3), n,
                                rng.getrandbits(32)))
                else:
                    out.append(("write", sid, n, rng.getrandbits(32)))
                sessions[sid][3] += n
        elif len(sessions) < MAX_SESSIONS and r < 0.8:
            kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
            # Reads and rmw mostly of keys a session wrote (likely to exist).
            pool = sorted(made) if kind in ("read", "rmw") and made \
                and rng.random() < 0.8 else KEYS
            key = rng.choice(pool)
            host = host_for(key)
            if busy(host, key):
                continue
            if kind != "read":
                made.add(key)
            out.append(("open", next_sid, host, kind, key))
            sessions[next_sid] = [host, kind, key, 0]
            next_sid += 1
        else:
            op = rng.choices(("unlink", "rename", "listdir", "stat"), (3, 3, 2, 3))[0]
            key = rng.choice(KEYS)
            host = host_for(key)
            if op == "listdir":
                out.append(("listdir", host, key.split("/")[0]))
            elif op == "stat":
                out.append(("stat", host, key))
            elif op == "unlink" and not busy(host, key):
                out.append(("unlink", host, key))
            elif op == "rename":
                d = key.split("/")[0]
                dst = f"{d}/{rng.choice([n for n in NAMES if f'{d}/{n}' != key])}"
                if not busy(host, key, dst):
                    out.append(("rename", host, key, dst))
    for sid in sorted(sessions):
        if sessions[sid][1] == "append" and not sessions[sid][3]:
            out.append(("write", sid, rng.randint(1, 1000), rng.getrandbits(32)))
        out.append(("close", sid))
    return out


def other(host: str) -> str:
    return "B" if host == "A" else "A"


def data_of(size: int, dseed: int) -> bytes:
    return random.Random(dseed).randbytes(size)


def apply(edits: list[tuple[Any, ...]], base: bytes) -> bytes:
    """A version: `base` with a session's edits."""
    out = bytearray(base)
    for edit in edits:
        if edit[0] == "append":
            out += edit[1]
        elif edit[0] == "pwrite":
            offset, data = edit[1], edit[2]
            if not data:
                continue  # (a write of nothing does not extend the file)
            if offset > len(out):
                out += bytes(offset - len(out))
            out[offset:offset + len(data)] = data
        else:  # truncate
            size = edit[1]
            if size < len(out):
                del out[size:]
            else:
                out += bytes(size - len(out))
    return bytes(out)


# ----------------------------------------------------------------------------- running


class Violation(AssertionError):
    """A promise of docs/SEMANTICS.md broken."""


@dataclass
class Session:
    host: str
    kind: str
    key: str
    fd: int
    opened: float  # time.monotonic() just before the open
    size0: int  # fstat at open: the size of the version it builds on (0: none, or empty)
    size_now: int = 0  # fstat after its last edit
    edits: list[tuple[Any, ...]] = field(default_factory=list)
    committed: bytes | None = None  # what its last successful commit stored
    broken: str = ""  # why: a write or commit failed; nothing it does may change S3 now
    excluded: set[bytes] = field(default_factory=set)  # read: digests of versions ruled out
    ghosts: list[bytes] = field(default_factory=list)  # read: see Run.ghosts


@dataclass
class Stats:
    steps: int = 0
    commits: int = 0
    refused: int = 0  # commits that failed (EIO), all allowed
    live: int = 0  # operations where liveness was asserted
    chunks: int = 0
    open_refused: int = 0


def describe(data: bytes | None) -> str:
    if data is None:
        return "absent"
    return f"{len(data)} B {data[:6].hex()}..{data[-4:].hex()}" if data else "0 B"


def errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


class Run:
    """One seed's steps on two mounts, checked against the model after every step."""

    def __init__(self, seed: int, roots: dict[str, Path], s3: Any, bucket: str,
                 echo: Callable[[str], None] | None = None) -> None:
        self.prefix = f"g{seed}/"
        self.roots = {h: root / f"g{seed}" for h, root in roots.items()}
        self.s3, self.bucket = s3, bucket
        self.model: dict[str, bytes | None] = dict.fromkeys(KEYS)
        self.history: dict[str, list[bytes]] = {k: [] for k in KEYS}
        self.changes: dict[str, list[tuple[float, str]]] = {k: [] for k in KEYS}
        # Sizes a key may show that none of its versions had: a rename by a host whose
        # view of the source was stale carries that view's attributes to the new name
        # until its cache expires (SEMANTICS, "Several hosts": "Caches", and "Attribute
        # copies and renames": the bytes are the current version's; reads never mix).
        self.stale_sizes: dict[str, set[int]] = {k: set() for k in KEYS}
        # After a commit fails, its host may show the file it failed to store (as the
        # kernel cached it: empty, or of the size it had) until its attribute timeout:
        # (host, key) -> versions a read may see (b"") and sizes a stat may show.
        self.ghosts: dict[tuple[str, str], tuple[list[bytes], set[int]]] = {}
        self.sessions: dict[int, Session] = {}
        self.etags: dict[str, tuple[str, bytes]] = {}
        self.log: list[str] = []
        self.stats = Stats()
        self.started = time.monotonic()
        self.echo = echo

    # -- helpers -------------------------------------------------------------------

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:7.2f}  {text}"
        self.log.append(line)
        if self.echo:
            self.echo(line)

    def path(self, host: str, key: str) -> Path:
        return self.roots[host] / key

    def fail(self, why: str) -> None:
        raise Violation(why)

    def stable(self, key: str, host: str, since: float) -> bool:
        """No host but `host` changed `key` from STALE s before `since` until now."""
        return all(h == host or t < since - STALE for t, h in self.changes[key])

    def sizes(self, key: str, host: str) -> set[int]:
        """The sizes `key` may show on `host`: of its versions, of a stale view renamed
        onto it, or of `host`'s new file whose commit failed."""
        ghost = self.ghosts.get((host, key), ([], set()))[1]
        return {len(v) for v in self.history[key]} | self.stale_sizes[key] | ghost

    def bucket_now(self) -> dict[str, bytes | None]:
        """Every key of this seed in S3 (GETs only objects whose ETag changed)."""
        seen: dict[str, bytes | None] = dict.fromkeys(KEYS)
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix):]
                if key.endswith("/") and key[:-1] in DIRS:
                    continue
                if key not in seen:
                    self.fail(f"an object no step made: {obj['Key']}")
                cached = self.etags.get(key)
                if cached is None or cached[0] != obj["ETag"]:
                    body = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                    cached = self.etags[key] = (obj["ETag"], body)
                seen[key] = cached[1]
        return seen

    def observe(self, touched: tuple[str, ...]) -> dict[str, bytes | None]:
        """The bucket after a step: keys the step did not touch must be as modelled."""
        now = self.bucket_now()
        for key in KEYS:
            if key not in touched and now[key] != self.model[key]:
                self.fail(f"S3 {key} is {describe(now[key])}, the model has "
                          f"{describe(self.model[key])}: changed by a step on {touched}")
        return now

    def store(self, key: str, value: bytes | None, host: str) -> None:
        """A change `host` made to `key`, checked already: into the model."""
        self.model[key] = value
        self.changes[key].append((time.monotonic(), host))
        if value is not None and value not in self.history[key]:
            self.history[key].append(value)

    def no_upload_left(self, key: str) -> None:
        """After a failed commit: no multipart upload of `key` stays pending (unless
        another open session of it may stream one)."""
        if any(s.key == key and s.kind != "read" for s in self.sessions.values()):
            return
        full = self.prefix + key
        try:
            wait_for(lambda: not [u for u in no_pending_uploads(self.s3, self.bucket, full)
                                  if u["Key"] == full], timeout=STORE_DEADLINE,
                     message=f"no pending upload of {full}")
        except AssertionError as exc:
            self.fail(str(exc))

    # -- steps -----------------------------------------------------------------------

    def run(self, steps: list[Step]) -> None:
        try:
            for step in steps:
                self.stats.steps += 1
                getattr(self, "do_" + step[0])(*step[1:])
            self.finish()
        finally:
            for s in self.sessions.values():
                try:
                    os.close(s.fd)
                except OSError:
                    pass
            self.sessions.clear()

    def do_open(self, sid: int, host: str, kind: str, key: str) -> None:
        flags = {"replace": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 "excl": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                 "append": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                 "rmw": os.O_RDWR, "read": os.O_RDONLY}[kind]
        before = self.model[key]
        opened = time.monotonic()
        stable = self.stable(key, host, opened)
        try:
            fd = os.open(self.path(host, key), flags, 0o644)
        except OSError as exc:
            self.note(f"open({sid}, {host}, {kind}, {key}) -> {errname(exc)}  "
                      f"[S3 {describe(before)}{', stable' if stable else ''}]")
            self.stats.open_refused += 1
            expected = {"EEXIST"} if kind == "excl" and before is not None else (
                {"ENOENT"} if kind in ("rmw", "read") and before is None else set())
            if stable and errname(exc) not in expected:
                self.fail(f"liveness: open({kind}) of {key}, which no other host changed "
                          f"for {STALE} s, failed: {errname(exc)}")
            if kind == "excl" and exc.errno == errno.EEXIST and before is None and stable:
                self.fail(f"EEXIST for {key}, absent in S3")
            self.observe(())
            return
        size0 = os.fstat(fd).st_size
        self.sessions[sid] = Session(host, kind, key, fd, opened, size0,
                                     ghosts=self.ghosts.get((host, key), ([], set()))[0])
        self.note(f"open({sid}, {host}, {kind}, {key}) -> fd, size {size0}  "
                  f"[S3 {describe(before)}{', stable' if stable else ''}]")
        if stable:
            self.stats.live += 1
            if kind == "excl" and before is not None:
                self.fail(f"O_EXCL open of {key} succeeded; S3 has held it for {STALE} s")
            if kind in ("rmw", "read") and before is None:
                self.fail(f"open of {key} succeeded; S3 has not held it for {STALE} s")
            if kind in ("rmw", "read", "append") and size0 != len(before or b""):
                self.fail(f"open of {key} shows size {size0}; S3 has held "
                          f"{describe(before)} for {STALE} s")
        if kind in ("rmw", "read", "append") and size0 and size0 not in self.sizes(key, host):
            self.fail(f"open of {key} shows size {size0}, of no version it has had")
        if kind in ("replace", "excl") and size0:
            self.fail(f"a new or truncated file {key} shows size {size0}")
        self.observe(())

    def _session(self, sid: int, what: str) -> Session | None:
        s = self.sessions.get(sid)
        if s is None:
            self.note(f"{what}: no session {sid} (its open failed)")
        return s

    def _edit(self, sid: int, what: str, call: Callable[[Session], tuple[Any, ...]]) -> None:
        s = self._session(sid, what)
        if s is None:
            return
        try:
            edit = call(s)
        except OSError as exc:
            self.note(f"{what} on {s.host}:{s.key} -> {errname(exc)}")
            if exc.errno != errno.EIO:
                self.fail(f"{what} of {s.key} failed with {errname(exc)}")
            if not s.broken and self.stable(s.key, s.host, s.opened):
                self.fail(f"liveness: {what} of {s.key} failed with EIO, and no other host "
                          f"changed it since {STALE} s before the open")
            s.broken = s.broken or f"{what}: EIO"
            self.observe(())
            return
        if edit[0] == "truncate" or edit[-1]:  # (a write of nothing changes nothing)
            s.edits.append(edit)
        s.size_now = os.fstat(s.fd).st_size
        self.note(f"{what} on {s.host}:{s.key} -> ok" + (f" ({s.broken})" if s.broken else ""))
        self.observe(())  # writes store nothing (a streamed part is no object)

    def do_write(self, sid: int, size: int, dseed: int) -> None:
        data = data_of(size, dseed)

        def write(s: Session) -> tuple[Any, ...]:
            done = os.write(s.fd, data)
            if done != len(data):
                self.fail(f"short write to {s.key}: {done} of {len(data)}")
            return ("append", data)

        self._edit(sid, f"write({sid}, {size})", write)

    def do_pwrite(self, sid: int, where: float, size: int, dseed: int) -> None:
        data = data_of(size, dseed)

        def pwrite(s: Session) -> tuple[Any, ...]:
            offset = int(where * os.fstat(s.fd).st_size)
            if os.pwrite(s.fd, data, offset) != len(data):
                self.fail(f"short pwrite to {s.key}")
            return ("pwrite", offset, data)

        self._edit(sid, f"pwrite({sid}, {size} @ {where})", pwrite)

    def do_truncate(self, sid: int, where: float) -> None:
        def truncate(s: Session) -> tuple[Any, ...]:
            size = int(where * os.fstat(s.fd).st_size)
            os.ftruncate(s.fd, size)
            return ("truncate", size)

        self._edit(sid, f"ftruncate({sid}, {where})", truncate)

    def do_fsync(self, sid: int) -> None:
        s = self._session(sid, f"fsync({sid})")
        if s is not None:
            self.commit(sid, s, "fsync", lambda: os.fsync(s.fd))

    def do_close(self, sid: int) -> None:
        s = self._session(sid, f"close({sid})")
        if s is None:
            return
        del self.sessions[sid]
        if s.kind == "read":
            os.close(s.fd)
            self.note(f"close({sid}) of {s.host}:{s.key} (read)")
            self.observe(())
            return
        self.commit(sid, s, "close", lambda: os.close(s.fd))

    def commit(self, sid: int, s: Session, what: str, call: Callable[[], None]) -> None:
        key = s.key
        before = self.model[key]
        stable = self.stable(key, s.host, s.opened)
        try:
            call()
            result = "ok"
        except OSError as exc:
            result = errname(exc)
        after = self.observe((key,))
        self.stats.commits += 1
        self.note(f"{what}({sid}) of {s.host}:{key} -> {result}  [S3 before "
                  f"{describe(before)}, after {describe(after[key])}"
                  f"{', stable' if stable else ''}{', ' + s.broken if s.broken else ''}]")
        if s.broken:  # 1: a descriptor whose write or commit failed changes nothing
            if after[key] != before:
                self.fail(f"{what} of {key} after a failure ({s.broken}) returned {result} "
                          f"and changed S3 to {describe(after[key])}")
            return
        if result != "ok":
            self.stats.refused += 1
            if result != "EIO":
                self.fail(f"{what} of {key} failed with {result}, not EIO")
            if stable:
                self.stats.live += 1
                self.fail(f"liveness: {what} of {key} failed, and no other host changed it "
                          f"since {STALE} s before the open")
            if after[key] != before:  # 1: a failed commit changes nothing
                self.fail(f"{what} of {key} failed but S3 changed from {describe(before)} "
                          f"to {describe(after[key])}")
            s.broken = f"{what}: EIO"
            new = s.size0 == 0 and s.committed is None  # (see self.ghosts)
            self.ghosts[(s.host, key)] = ([b""] if new else [], {0, s.size0, s.size_now})
            self.changes[key].append((time.monotonic(), other(s.host)))
            self.no_upload_left(key)
            return
        if stable:
            self.stats.live += 1
        first = s.committed is None
        fresh = first and s.kind in ("replace", "excl")
        if not s.edits and not fresh:  # nothing new: nothing to store...
            if first and s.kind == "append" and not s.size0 and before is None \
                    and after[key] == b"":  # ...but the file it created, empty
                self.store(key, after[key], s.host)
                s.committed = after[key]
                return
            if after[key] != before:
                self.fail(f"{what} of {key} with nothing written changed S3 to "
                          f"{describe(after[key])}")
            return
        base = s.committed
        noop = all(e[0] == "truncate" for e in s.edits) and (
            apply(s.edits, base) == base if base is not None
            else all(e[1] == s.size0 for e in s.edits))
        if noop and not fresh and after[key] == before:  # (ftruncate to its own size)
            s.edits = []
            return
        if fresh:
            if s.kind == "excl" and before is not None:  # 3
                self.fail(f"the O_EXCL file {key} replaced {describe(before)}, which the "
                          f"other host created, with {describe(after[key])}")
            expected = apply(s.edits, b"")  # 2: whole
        else:  # 1: built on the version it opened (or its own last commit)
            base = s.committed if not first else None
            if base is not None and before != base:
                self.fail(f"{what} of {key}, built on the {describe(base)} it stored, "
                          f"succeeded over {describe(before)}: to {describe(after[key])}")
            if first and s.kind == "rmw" and before is None:
                self.fail(f"{what} of {key}, opened on a version, succeeded though the "
                          f"object was deleted: {describe(after[key])}")
            # (O_APPEND writes go at the end of the version the mount found, whatever
            # size the kernel showed at the open: its cached size may lag that version)
            if first and s.kind != "append" and len(before or b"") != s.size0:
                self.fail(f"{what} of {key}, opened on a version of {s.size0} B, succeeded "
                          f"over {describe(before)}: S3 now {describe(after[key])}")
            expected = apply(s.edits, before or b"")
        if after[key] != expected:
            self.fail(f"{what} of {key} succeeded but stored {describe(after[key])}, not "
                      f"{describe(expected)} (S3 before: {describe(before)})")
        self.store(key, after[key], s.host)
        s.committed = after[key]
        s.edits = []

    def do_read(self, sid: int, where: float, size: int) -> None:
        s = self._session(sid, f"read({sid})")
        if s is None:
            return
        stable = self.stable(s.key, s.host, s.opened)
        try:
            seen = os.fstat(s.fd).st_size  # the kernel's size of the file, as of now
            offset = int(where * seen)
            data = os.pread(s.fd, size, offset)
            seen_after = os.fstat(s.fd).st_size
        except OSError as exc:
            self.note(f"read({sid}, {size} @ {where}) of {s.host}:{s.key} -> {errname(exc)}")
            if exc.errno != errno.EIO:
                self.fail(f"read of {s.key} failed with {errname(exc)}")
            if stable:
                self.fail(f"liveness: read of {s.key} failed, and no other host changed it "
                          f"since {STALE} s before the open")
            self.observe(())
            return
        self.stats.chunks += 1
        versions = self.history[s.key] + s.ghosts
        digests = [hashlib.sha1(v).digest() for v in versions]
        def holds(v: bytes) -> bool:
            """`data` is what version `v` holds there: all of it, or the part up to the
            size the kernel showed (its size may lag a longer version: a read stops at
            the end of file it knows, as a local file read before an append would)."""
            want = v[offset:offset + size]
            return want == data or (len(data) < len(want) and want.startswith(data)
                                    and offset + len(data) in (seen, seen_after))

        fits = [i for i, v in enumerate(versions) if digests[i] not in s.excluded
                and holds(v)]
        s.excluded |= {d for i, d in enumerate(digests) if i not in fits}
        alone = [i for i, v in enumerate(versions) if holds(v)]
        self.note(f"read({sid}, {size} @ {offset}) of {s.host}:{s.key} -> {len(data)} B, "
                  f"fits versions {fits} of {len(versions)} (alone: {alone}, sizes "
                  f"{[len(v) for v in versions]})")
        if not fits:  # 4
            self.fail(f"read of {s.key}: {len(data)} B at {offset} fit no version the "
                      f"earlier chunks of this descriptor fit (a mix, or bytes never stored)")
        current = self.model[s.key]
        if stable and (current is None or current[offset:offset + size] != data):
            self.fail(f"read of {s.key} ({len(data)} B at {offset}), stable for {STALE} s, "
                      f"is not of the version S3 holds ({describe(current)})")
        self.observe(())

    def do_unlink(self, host: str, key: str) -> None:
        before = self.model[key]
        stable = self.stable(key, host, time.monotonic())
        try:
            os.unlink(self.path(host, key))
            result = "ok"
        except OSError as exc:
            result = errname(exc)
        after = self.observe((key,))
        self.note(f"unlink({host}, {key}) -> {result}  [S3 {describe(before)}"
                  f"{', stable' if stable else ''}]")
        if result == "ok":
            if after[key] is not None:
                self.fail(f"unlink of {key} succeeded, S3 still has {describe(after[key])}")
            if before is not None:
                self.store(key, None, host)
            return
        if after[key] != before:
            self.fail(f"unlink of {key} failed ({result}) but S3 changed")
        if result not in ("ENOENT", "EIO"):
            self.fail(f"unlink of {key} failed with {result}")
        if stable and before is not None:
            self.fail(f"liveness: unlink of {key}, held for {STALE} s, failed: {result}")

    def do_rename(self, host: str, src: str, dst: str) -> None:
        before = self.model[src], self.model[dst]
        now = time.monotonic()
        stable = self.stable(src, host, now) and self.stable(dst, host, now)
        try:
            os.rename(self.path(host, src), self.path(host, dst))
            result = "ok"
        except OSError as exc:
            result = errname(exc)
        after = self.observe((src, dst))
        self.note(f"rename({host}, {src}, {dst}) -> {result}  [S3 {describe(before[0])}, "
                  f"{describe(before[1])}{', stable' if stable else ''}]")
        if result == "ok":
            if before[0] is None:
                self.fail(f"rename of {src}, absent in S3, succeeded: {dst} is now "
                          f"{describe(after[dst])}")
            if after[src] is not None or after[dst] != before[0]:
                self.fail(f"rename {src} -> {dst} succeeded, S3 has {describe(after[src])}, "
                          f"{describe(after[dst])}; expected absent, {describe(before[0])}")
            self.store(src, None, host)
            self.store(dst, after[dst], host)
            if not stable:  # what `host` shows at dst may be its stale view of src
                self.stale_sizes[dst] |= {len(v) for v in self.history[src]}
                self.changes[dst].append((time.monotonic(), other(host)))
            return
        if (after[src], after[dst]) != before:
            self.fail(f"rename {src} -> {dst} failed ({result}) but S3 changed: "
                      f"{describe(after[src])}, {describe(after[dst])}")
        if result not in ("ENOENT", "EIO"):
            self.fail(f"rename of {src} failed with {result}")
        if stable and before[0] is not None:
            self.fail(f"liveness: rename of {src}, held for {STALE} s, failed: {result}")

    def do_listdir(self, host: str, d: str) -> None:
        names = set(os.listdir(self.roots[host] / d))
        present = {n for n in NAMES if self.model[f"{d}/{n}"] is not None}
        writing = {s.key.split("/")[1] for s in self.sessions.values()
                   if s.host == host and s.kind != "read" and s.key.startswith(d + "/")}
        self.note(f"listdir({host}, {d}) -> {sorted(names)}  [S3 {sorted(present)}]")
        if not present <= names <= present | writing:  # a listing asks S3
            self.fail(f"listing of {d} on {host} is {sorted(names)}; S3 has "
                      f"{sorted(present)}, {host} is writing {sorted(writing)}")
        self.observe(())

    def do_stat(self, host: str, key: str) -> None:
        before = self.model[key]
        stable = self.stable(key, host, time.monotonic())
        try:
            size: int | str = os.stat(self.path(host, key)).st_size
        except OSError as exc:
            size = errname(exc)
        self.note(f"stat({host}, {key}) -> {size}  [S3 {describe(before)}"
                  f"{', stable' if stable else ''}]")
        if any(s.host == host and s.key == key and s.kind != "read"
               for s in self.sessions.values()):
            self.observe(())
            return  # the open file's state
        if isinstance(size, int) and size not in self.sizes(key, host):
            self.fail(f"stat of {key} on {host}: size {size}, of no version it has had")
        if isinstance(size, str) and size != "ENOENT":
            self.fail(f"stat of {key} on {host} failed with {size}")
        if stable:
            self.stats.live += 1
            if size != (len(before) if before is not None else "ENOENT"):
                self.fail(f"stat of {key} on {host}: {size}; S3 has held "
                          f"{describe(before)} for {STALE} s")
        self.observe(())

    def finish(self) -> None:
        """6: every session closed; no upload pending; the bucket is the model, and both
        mounts come to read every key as it."""
        self.note("end: no upload pending, S3 == model, both mounts read it")
        try:
            wait_for(lambda: not no_pending_uploads(self.s3, self.bucket, self.prefix),
                     timeout=STORE_DEADLINE, message="no pending upload")
        except AssertionError:
            left = no_pending_uploads(self.s3, self.bucket, self.prefix)
            self.fail(f"uploads left pending: {left}")
        self.observe(())
        for host in HOSTS:
            for key in KEYS:
                def reads(host: str = host, key: str = key) -> bool:
                    try:
                        return self.path(host, key).read_bytes() == self.model[key]
                    except FileNotFoundError:
                        return self.model[key] is None
                    except OSError:
                        return False
                try:
                    wait_for(reads, timeout=10, interval=0.2, message=f"{host} to read {key}")
                except AssertionError:
                    self.fail(f"{host} does not read {key} as S3 holds it "
                              f"({describe(self.model[key])}) after 10 s")


# ----------------------------------------------------------------------------- the test


def seed_range(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def read_steps(path: str) -> list[Step]:
    """Steps as a failure's log prints them (one tuple a line; other lines ignored)."""
    steps = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("("):
            steps.append(ast.literal_eval(line))
    return steps


def test_two_hosts_generated(s3: Any, bucket: str, hosts: Any, s3_backend: Any,
                             capsys: pytest.CaptureFixture[str]) -> None:
    a, b = hosts("part_size=5M")
    # (no checksum validation of GETs: moto stores wrong ones for copies of multipart
    # objects, see SEMANTICS "Integrity"; the bytes are compared with the model anyway)
    s3 = boto3.client("s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                      config=Config(response_checksum_validation="when_required"))
    roots = {"A": a.path, "B": b.path}
    steps_per_seed = int(os.environ.get("S3MPFS_HOSTSGEN_STEPS", STEPS))
    replay = os.environ.get("S3MPFS_HOSTSGEN_REPLAY")
    default = SEEDS.get(s3_backend.name, SEEDS["rgw"])
    seeds = seed_range(os.environ.get("S3MPFS_HOSTSGEN_SEEDS", default)) if not replay else [0]
    minutes = float(os.environ.get("S3MPFS_HOSTSGEN_MINUTES", 0))
    began = time.monotonic()
    failures: list[tuple[int, str]] = []
    total = Stats()
    ran = 0
    for seed in seeds:
        if minutes and time.monotonic() - began > minutes * 60:
            break
        ran += 1
        steps = read_steps(replay) if replay else generate(seed, steps_per_seed)
        for d in DIRS:  # directories neither mount created (see the docstring)
            s3.put_object(Bucket=bucket, Key=f"g{seed}/{d}/", Body=b"")
        for root in roots.values():
            wait_for(lambda top=root / f"g{seed}": all((top / d).is_dir() for d in DIRS),
                     message=f"both mounts to see g{seed}")
        run = Run(seed, roots, s3, bucket)
        t = time.monotonic()
        outcome = "ok"
        try:
            run.run(steps)
        except Exception as exc:  # (a Violation, or the harness: either is a failure)
            why = str(exc) if isinstance(exc, Violation) else f"{type(exc).__name__}: {exc}"
            outcome = f"FAILED: {why}"
            failures.append((seed, _report(seed, steps, run, why, replay, s3_backend.name)))
        for name in Stats.__dataclass_fields__:
            setattr(total, name, getattr(total, name) + getattr(run.stats, name))
        with capsys.disabled():
            if minutes or "S3MPFS_HOSTSGEN_SEEDS" in os.environ:
                print(f"seed {seed}: {run.stats} {time.monotonic() - t:.1f} s: {outcome}",
                      flush=True)
    summary = (f"{ran} seeds, "
               f"{total}, {len(failures)} failed {[s for s, _ in failures]}, "
               f"{time.monotonic() - began:.0f} s")
    with capsys.disabled():
        print(f"\ntwo hosts generated: {summary}", flush=True)
    if failures:
        pytest.fail(failures[0][1], pytrace=False)


def _report(seed: int, steps: list[Step], run: Run, why: str, replay: str | None,
            backend: str) -> str:
    done = run.stats.steps
    return "\n".join([
        f"seed {seed}: {why}",
        f"at step {done} of {len(steps)}. Log (time, step -> outcome [model]):",
        *run.log,
        "",
        "Replay: " + (f"S3MPFS_HOSTSGEN_REPLAY={replay}" if replay else
                      f"S3MPFS_HOSTSGEN_SEEDS={seed}")
        + f" pytest tests/hosts/test_two_hosts_generated.py --backend {backend}",
        "or save these steps (cut down as you like) to a file and set "
        "S3MPFS_HOSTSGEN_REPLAY=FILE:",
        *(repr(step) for step in steps[:done]),
    ])


CASES = sorted((Path(__file__).parent / "two_hosts_cases").glob("*.txt"))


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_two_hosts_case(case: Path, s3: Any, bucket: str, hosts: Any, s3_backend: Any,
                        capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kept case (steps of a failure long runs found; each file says what it was)
    replays with every invariant holding."""
    monkeypatch.setenv("S3MPFS_HOSTSGEN_REPLAY", str(case))
    test_two_hosts_generated(s3, bucket, hosts, s3_backend, capsys)
