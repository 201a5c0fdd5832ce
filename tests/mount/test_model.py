"""A model-based (hypothesis stateful) test of one real mount.

The machine writes, reads, unlinks, renames files and makes and removes directories
through the mount, and also puts and deletes objects behind its back with boto3. A plain
model (directory markers, and files as (seed, size)) says what must be true; after every
step the mount's view (listings, sizes, the bytes of small files), the model and the
bucket must agree, and no multipart upload may be pending (no file is open between steps).

One mount serves every example (mounting costs a second or two); the bucket is emptied
between examples. Changes made behind the mount's back may take its listing TTL (2 s) and
the kernel's entry/attribute cache (1 s) to show: after them the view is polled with a
deadline, after the mount's own operations it must agree at once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REGION, Mount, extra_mount_options
from helpers import STORE_DEADLINE, no_pending_uploads, s3mpfs_env, wait_for
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from s3proxy import HOLD, S3Proxy

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
DIRS = ("d1", "d2")  # the directories the machine may create; files also live in the root
FILE_DIRS = ("", *DIRS)
NAMES = ("a", "b", "c")
# Sizes around the 5 MiB part size (0: an empty file; <= 5 MiB: one PutObject).
SIZES = (0, 1, 70_001, 5 * MiB, 5 * MiB + 1, 11 * MiB + 3)
CHUNKS = (4096, 128 * 1024 + 1, MiB + 7, 3 * MiB)  # write() sizes; most cross part bounds
EXTERNAL_SIZES = (0, 10, 70_001)
SMALL = 256 * 1024  # files up to this size are compared byte for byte at every step
PATTERN = 65_521  # a prime: a misplaced 5 MiB part cannot line up with the pattern
REGISTRY = ".s3mpfs/"
STAT_INDEXES = ".s3mpfs/stat/"


def content(seed: int, size: int) -> bytes:
    """The bytes of a file: a seeded pattern, repeated (cheap for 11 MiB)."""
    block = random.Random(seed).randbytes(PATTERN)
    return (block * (size // PATTERN + 1))[:size]


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


# --------------------------------------------------------------------------- one mount


class Shared:
    """The module's mount, its bucket and a boto3 client."""

    def __init__(self, s3: Any, bucket: str, mount: Mount) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.mount = mount


SHARED: Shared | None = None


def _empty_bucket(s3: Any, bucket: str) -> None:
    for up in no_pending_uploads(s3, bucket):
        s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})


@pytest.fixture(scope="module")
def shared_mount(
    s3_server: str, s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    """Mount a fresh bucket once for the whole module (part_size=5M)."""
    global SHARED
    bucket = f"t-model-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    base = tmp_path_factory.mktemp("model")
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    log_path = base / "mount.log"
    opts = ",".join([f"endpoint_url={s3_server}", f"region={REGION}", *extra_mount_options(),
                     "part_size=5M"])
    argv = [sys.executable, "-m", "s3mpfs", bucket, str(mountpoint), "-f", "-o", opts]
    env = s3mpfs_env()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=base,
                                start_new_session=True)
    m = Mount(mountpoint, proc, log_path, bucket, argv)
    try:
        wait_for(lambda: m.is_mounted() or proc.poll() is not None, timeout=20,
                 message="the model's mount")
        assert m.is_mounted(), m.log_text()
        SHARED = Shared(s3, bucket, m)
        yield SHARED
    finally:
        SHARED = None
        code = m.unmount()
        if code != 0 or m.unclean:
            print(f"===== s3mpfs log (exit {code}, {m.unclean}):\n{m.log_text()}",
                  file=sys.stderr)
        _empty_bucket(s3, bucket)
        s3.delete_bucket(Bucket=bucket)


# --------------------------------------------------------------------------- the machine


class MountMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert SHARED is not None, "the shared_mount fixture did not run"
        self.s3, self.bucket, self.mount = SHARED.s3, SHARED.bucket, SHARED.mount
        self.root = self.mount.path
        assert self.mount.proc.poll() is None, self.mount.log_text()
        self.markers: set[str] = set()  # directories made through the mount (a `d/` object)
        self.files: dict[str, tuple[int, int]] = {}  # path -> (seed, size)
        _empty_bucket(self.s3, self.bucket)
        self.external = True  # the previous example's files were removed behind its back
        self.check_everything()

    # -- the model ------------------------------------------------------------------

    def dirs(self) -> set[str]:
        """Directories that exist: marked ones, and prefixes of files (S3 semantics)."""
        return self.markers | {p.split("/")[0] for p in self.files if "/" in p}

    def dir_exists(self, directory: str) -> bool:
        return directory == "" or directory in self.dirs()

    def path(self, rel: str) -> Path:
        return self.root / rel

    def forget(self, rel: str) -> None:
        """A file is gone. If it was the last one of a directory without a marker, the
        directory is gone too: S3 has nothing left under its prefix. The mount lists it no
        more at once, but the kernel may still find it by name for its entry timeout, so
        the next check polls."""
        before = self.dirs()
        del self.files[rel]
        if self.dirs() != before:
            self.external = True

    # -- rules ----------------------------------------------------------------------

    @rule(directory=st.sampled_from(FILE_DIRS), name=st.sampled_from(NAMES),
          size=st.sampled_from(SIZES), chunk=st.sampled_from(CHUNKS),
          seed=st.integers(0, 1000))
    def write_file(self, directory: str, name: str, size: int, chunk: int, seed: int) -> None:
        rel = join(directory, name)
        data = content(seed, size)
        if not self.dir_exists(directory):
            with pytest.raises(FileNotFoundError):
                open(self.path(rel), "wb").close()
            return
        with open(self.path(rel), "wb", buffering=0) as f:
            view = memoryview(data)
            offset = 0
            while offset < size:
                offset += f.write(view[offset:offset + chunk])
        self.files[rel] = (seed, size)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def read_back(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(sorted(self.files)), label="file")
        seed, size = self.files[rel]
        got = self.path(rel).read_bytes()
        assert len(got) == size, rel
        assert hashlib.sha256(got).digest() == hashlib.sha256(content(seed, size)).digest(), rel

    @rule(directory=st.sampled_from(FILE_DIRS), name=st.sampled_from(NAMES))
    def unlink(self, directory: str, name: str) -> None:
        rel = join(directory, name)
        if rel not in self.files:
            with pytest.raises(FileNotFoundError):
                os.unlink(self.path(rel))
            return
        os.unlink(self.path(rel))
        self.forget(rel)

    @rule(directory=st.sampled_from(DIRS))
    def mkdir(self, directory: str) -> None:
        if self.dir_exists(directory):
            with pytest.raises(FileExistsError):
                os.mkdir(self.path(directory))
            return
        os.mkdir(self.path(directory))
        self.markers.add(directory)

    @rule(directory=st.sampled_from(DIRS))
    def rmdir(self, directory: str) -> None:
        if not self.dir_exists(directory):
            with pytest.raises(FileNotFoundError):
                os.rmdir(self.path(directory))
            return
        if any(p.startswith(directory + "/") for p in self.files):
            with pytest.raises(OSError) as raised:
                os.rmdir(self.path(directory))
            assert raised.value.errno == errno.ENOTEMPTY
            return
        os.rmdir(self.path(directory))
        self.markers.discard(directory)

    @rule(src_dir=st.sampled_from(FILE_DIRS), src_name=st.sampled_from(NAMES),
          dst_dir=st.sampled_from(FILE_DIRS), dst_name=st.sampled_from(NAMES))
    def rename(self, src_dir: str, src_name: str, dst_dir: str, dst_name: str) -> None:
        src, dst = join(src_dir, src_name), join(dst_dir, dst_name)
        if src == dst:
            return
        if src not in self.files or not self.dir_exists(dst_dir):
            with pytest.raises(FileNotFoundError):
                os.rename(self.path(src), self.path(dst))
            return
        os.rename(self.path(src), self.path(dst))
        self.files[dst] = self.files[src]
        self.forget(src)

    @rule(directory=st.sampled_from(FILE_DIRS), name=st.sampled_from(NAMES),
          size=st.sampled_from(EXTERNAL_SIZES), seed=st.integers(0, 1000))
    def external_put(self, directory: str, name: str, size: int, seed: int) -> None:
        """Another S3 client writes a file (creating its directory if need be)."""
        rel = join(directory, name)
        self.s3.put_object(Bucket=self.bucket, Key=rel, Body=content(seed, size))
        self.files[rel] = (seed, size)
        self.external = True

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def external_delete(self, data: st.DataObject) -> None:
        rel = data.draw(st.sampled_from(sorted(self.files)), label="file")
        self.s3.delete_object(Bucket=self.bucket, Key=rel)
        self.forget(rel)
        self.external = True

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def check_everything(self) -> None:
        assert self.mount.proc.poll() is None, self.mount.log_text()
        self.check_bucket()
        if self.external:
            # The mount may need its listing TTL and the kernel's cache time to notice.
            wait_for(lambda: not self.mount_problems(), timeout=STORE_DEADLINE,
                     message=f"the mount to agree with the model: {self.mount_problems()}")
            self.external = False
        else:
            assert self.mount_problems() == []

    def check_bucket(self) -> None:
        listed: dict[str, int] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                listed[obj["Key"]] = obj["Size"]
        # Stat indexes are a cache the mount keeps there (an rmdir leaves its directory's).
        listed = {k: v for k, v in listed.items() if not k.startswith(STAT_INDEXES)}
        registry = sorted(k for k in listed if k.startswith(REGISTRY))
        assert registry == [], registry
        expected = {f"{d}/": 0 for d in self.markers}
        expected.update({rel: size for rel, (_, size) in self.files.items()})
        assert listed == expected
        assert no_pending_uploads(self.s3, self.bucket) == []

    def mount_problems(self) -> list[str]:
        """How the mount's view differs from the model (empty when they agree)."""
        problems: list[str] = []
        dirs = self.dirs()
        try:
            for directory in FILE_DIRS:
                exists = self.dir_exists(directory)
                where = self.path(directory)
                if directory and os.path.lexists(where) != exists:
                    problems.append(f"{directory}/ exists: {not exists}")
                if not exists:
                    continue
                expected = {rel.rpartition("/")[2] for rel in self.files
                            if rel.rpartition("/")[0] == directory}
                if directory == "":
                    expected |= dirs
                shown = set(os.listdir(where))
                if shown != expected:
                    problems.append(f"ls {directory or '/'}: {sorted(shown)} != {sorted(expected)}")
                for name in NAMES:
                    rel = join(directory, name)
                    if rel not in self.files:
                        if os.path.lexists(self.path(rel)):
                            problems.append(f"{rel} still exists")
                        continue
                    seed, size = self.files[rel]
                    st_size = os.stat(self.path(rel)).st_size
                    if st_size != size:
                        problems.append(f"{rel}: size {st_size} != {size}")
                    elif size <= SMALL and self.path(rel).read_bytes() != content(seed, size):
                        problems.append(f"{rel}: wrong bytes")
        except OSError as exc:
            problems.append(f"{exc!r}")
        return problems


# The suite runs the same examples every time (derandomized, no example database), so a
# red run is reproducible; S3MPFS_MODEL_EXPLORE=N runs N fresh random examples instead.
EXPLORE = int(os.environ.get("S3MPFS_MODEL_EXPLORE", "0"))
MACHINE_SETTINGS = settings(
    max_examples=EXPLORE or 10,
    stateful_step_count=25,
    deadline=None,
    derandomize=not EXPLORE,
    database=None,
    # No shrinking: with real I/O it can take many minutes; the failing steps are printed.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_mount_agrees_with_the_model_and_the_bucket(shared_mount: Shared) -> None:
    """The state machine, against the module's mount of this test's backend."""
    run_state_machine_as_test(MountMachine, settings=MACHINE_SETTINGS)


def test_content_pattern_is_position_dependent() -> None:
    data = content(3, 11 * MiB + 3)
    assert len(data) == 11 * MiB + 3
    part = 5 * MiB
    assert data[:part] != data[part:2 * part]  # a swapped part would be noticed
    assert data[:PATTERN] != content(4, PATTERN)


def test_same_size_overwrite_by_another_client_is_seen(
    s3: Any, bucket: str, mount: Any
) -> None:
    m = mount(bucket)
    old, new = content(1, 70_001), content(2, 70_001)
    for _ in range(5):  # both versions must get the same LastModified (whole seconds)
        s3.put_object(Bucket=bucket, Key="f", Body=old)
        before = s3.head_object(Bucket=bucket, Key="f")["LastModified"]
        os.listdir(m.path)  # the mount lists afresh: it sees the first version at once
        assert (m.path / "f").read_bytes() == old  # and the kernel caches its pages
        s3.put_object(Bucket=bucket, Key="f", Body=new)
        if s3.head_object(Bucket=bucket, Key="f")["LastModified"] == before:
            break
    wait_for(lambda: os.listdir(m.path) and (m.path / "f").read_bytes() == new,
             timeout=STORE_DEADLINE,
             message="the mount to read the new version")


def test_truncating_close_returns_once_the_empty_object_is_stored(
    s3_server: str, s3: Any, bucket: str, mount: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="trunc.bin", Body=content(5, 70_001))
    closed = threading.Event()

    def truncate() -> None:
        open(m.path / "trunc.bin", "wb").close()  # what `: > trunc.bin` does
        closed.set()

    with S3Proxy(s3_server) as proxy:
        rule = proxy.add_fault("PutObject", HOLD, key_contains="trunc.bin")
        m = mount(bucket, f"endpoint_url={proxy.url}")
        writer = threading.Thread(target=truncate, daemon=True)
        writer.start()
        try:
            assert rule.held.wait(timeout=STORE_DEADLINE), "the empty object was never stored"
            # close() must not have returned while its object is not in S3.
            assert not closed.is_set()
        finally:
            proxy.release(rule)
            writer.join(timeout=STORE_DEADLINE)
        assert closed.is_set()
        assert s3.head_object(Bucket=bucket, Key="trunc.bin")["ContentLength"] == 0
        m.unmount()
