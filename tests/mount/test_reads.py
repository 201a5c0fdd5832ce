"""Reads: every ranged GET survives a flaky network (retried from where its body broke
off, pinned to the version read), and one descriptor reads one version, start to end
(across another client's replacement, another mount's, and a random-write commit).

Mounts go through the fault-injecting proxy (tests/s3proxy.py) with a second
`endpoint_url=` option; objects are put with boto3 straight to the backend.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import random_bytes, random_file, sha256_file, wait_for
from s3proxy import FAULT_500, FAULT_503, HOLD, RESET_BEFORE, RESET_MID, Recorded, S3Proxy

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
READ_FAULTS = (FAULT_503, FAULT_500, RESET_BEFORE, RESET_MID)
# Attempts per request on the flaky mounts. At 35 % failed GETs a quarter of the attempts
# fail before any answer (503, 500, reset), so a request's 6 default attempts all fail
# with probability about 0.24**6 = 2e-4: over the ~125 GETs of these tests, a read ended
# in EIO in about 2 % of runs, by chance. With 12 it is about 4e-8 a request.
FLAKY_RETRIES = "retries=12"


def via(proxy: S3Proxy) -> str:
    return f"endpoint_url={proxy.url}"


def flaky(proxy: S3Proxy, share: float, key: str | None = None) -> None:
    """Fail `share` of every GetObject, in each of the four ways in equal parts; with a
    `key`, fail its first four GetObjects first, one in each way, so that every way is
    exercised on it whatever order the reads come in."""
    for action in READ_FAULTS if key else ():
        proxy.add_fault("GetObject", action, nth=1, key_contains=key)
    for action in READ_FAULTS:
        proxy.add_fault("GetObject", action, share=share / len(READ_FAULTS))


def byte_range(rec: Recorded) -> tuple[int, int] | None:
    """The (first, last) byte a GET asked for, None for a whole-object GET."""
    value = rec.headers.get("range")
    if value is None:
        return None
    first, _, last = value.removeprefix("bytes=").partition("-")
    return int(first), int(last)


def assert_broken_bodies_resumed(requests: list[Recorded], key: str, *,
                                 whole: bool = False) -> None:
    """Every GET of `key` whose body broke off (RESET_MID) was followed by a GET of the
    rest of its range naming the version read, and at least one of them started past
    the broken one's first byte (a body broken within its first read chunk is re-read
    whole: urllib3 drops a chunk it could not finish). `whole`: blocks read through
    awscrt's S3 client arrive whole or not at all: each is asked for again whole."""
    broken = [r for r in requests if r.kind == "GetObject" and r.key == key
              and r.fault == RESET_MID]
    assert broken, f"no body of {key} broke off"
    inside = 0
    for rec in broken:
        asked = byte_range(rec)
        if asked is None:  # a whole-object GET is asked again
            assert any(r.seq > rec.seq and r.kind == "GetObject" and r.key == key
                       for r in requests), key
            continue
        first, last = asked
        starts = [got[0] for r in requests
                  if r.seq > rec.seq and r.kind == "GetObject" and r.key == key
                  and "if-match" in r.headers and (got := byte_range(r)) is not None
                  and first <= got[0] <= last and got[1] == last]
        assert starts, (rec.headers.get("range"), key)
        assert not whole or first in starts, (rec.headers.get("range"), key)
        inside += max(starts) > first
    assert inside or whole, [r.headers.get("range") for r in broken]


def status_totals(run_cli: Any, m: Any) -> dict[str, Any]:
    result = run_cli("status", str(m.path), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["totals"]


def read_faults(proxy: S3Proxy) -> list[Recorded]:
    """The GETs the proxy failed, but those of stat indexes (boto3 retries them; they
    are not read retries)."""
    return [f for f in proxy.faults() if ".s3mpfs/" not in (f.key or "")]


def totals_once_every_fault_retried(run_cli: Any, m: Any, proxy: S3Proxy) -> dict[str, Any]:
    """The mount's totals once its read retries cover every GET the proxy failed. A
    read-ahead fetch the reader never reached may still be retrying (or being cancelled)
    just after the reading program exits: waited for, up to a deadline."""
    def covered() -> dict[str, Any] | None:
        totals = status_totals(run_cli, m)
        return totals if totals["read_retries"] >= len(read_faults(proxy)) else None
    try:
        return wait_for(covered, timeout=20, interval=0.2, message="read retries")
    except AssertionError:
        raise AssertionError((status_totals(run_cli, m), read_faults(proxy))) from None


# ------------------------------------------------------------ 1. a flaky network


def test_the_kernel_reads_ahead_in_a_4_mib_window(bucket: str, mount: Any) -> None:
    """The mount's read-ahead window (fs/kernel.py) is widened after the kernel's INIT
    is answered: the kernel sets it from that answer, so one set before it was cut back
    to 128 KiB, and a 1 GiB read was 4,096 READs instead of 1,024."""
    if os.geteuid() != 0:
        pytest.skip("the window is a root-only sysfs setting")
    m = mount(bucket)
    device = os.stat(m.path).st_dev  # answered after INIT
    window = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    wait_for(lambda: window.read_text().strip() == "4096", timeout=10,
             message=f"{window} to be 4096 (it is {window.read_text().strip()})")


@pytest.mark.parametrize("route", ["boto3", "crt"])
def test_48mib_reads_survive_20_and_35_percent_failed_gets(
    s3_server: str, s3: Any, bucket: str, mount: Any, tmp_path: Path, run_cli: Any,
    route: str
) -> None:
    """cmp of a 48 MiB file read through a proxy failing 20 % and 35 % of GETs (503,
    500, reset before the answer, reset halfway through the body), several seeds; its
    blocks read through boto3 (as over http), then through awscrt's S3 client (as over
    https: S3MPFS_HTTP=crt takes that route over http)."""
    env = {"S3MPFS_HTTP": "crt"} if route == "crt" else None
    src = random_file(tmp_path / "src.bin", 48 * MiB + 3, seed=21)
    s3.upload_file(str(src), bucket, "r.bin")
    fired: set[str] = set()
    for share, seed in ((0.20, 1), (0.35, 2)):
        with S3Proxy(s3_server, seed=seed) as proxy:
            flaky(proxy, share, "r.bin")
            # 2 MiB blocks: about 25 GETs per pass
            m = mount(bucket, via(proxy), "read_ahead=2M", FLAKY_RETRIES, env=env)
            result = subprocess.run(["cmp", str(src), str(m.path / "r.bin")],
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, (share, seed, result.stderr, m.log_text()[-3000:])
            totals_once_every_fault_retried(run_cli, m, proxy)
            m.unmount()
            faults, requests = proxy.faults(), proxy.requests
        fired |= {r.fault for r in faults if r.fault}
        assert len(faults) >= 5, (share, seed, len(faults))
        assert_broken_bodies_resumed(requests, "r.bin", whole=route == "crt")
        agents = {r.headers.get("user-agent", "").partition("/")[0] for r in requests
                  if r.kind == "GetObject" and r.key == "r.bin"}
        assert ("CRTS3NativeClient" in agents) == (route == "crt"), agents
        assert ("Boto3" in agents) == (route == "boto3"), agents
        assert "read of" not in m.log_text()
    assert fired == set(READ_FAULTS)


def test_tar_extract_through_flaky_gets(
    s3_server: str, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    """tar -x of an archive on the mount, and cp -r of a tree of small files (read
    through awscrt), while 35 % of GETs fail: identical to the source."""
    tree = tmp_path / "tree"
    for i in range(16):
        size = (i * 7919) % (300 * 1024) if i % 8 else 3 * MiB + i
        (tree / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        random_file(tree / f"d{i % 4}" / f"f{i}.bin", size, seed=100 + i)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="tree")
    s3.upload_file(str(archive), bucket, "a.tar")
    for path in tree.rglob("*.bin"):
        s3.upload_file(str(path), bucket, f"tree/{path.relative_to(tree)}")
    with S3Proxy(s3_server, seed=12) as proxy:
        flaky(proxy, 0.35, "a.tar")
        m = mount(bucket, via(proxy), "read_ahead=1M", FLAKY_RETRIES)
        out = tmp_path / "out"
        out.mkdir()
        result = subprocess.run(["tar", "-x", "-f", str(m.path / "a.tar"), "-C", str(out)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (result.stderr, m.log_text()[-3000:])
        copied = tmp_path / "copied"
        result = subprocess.run(["cp", "-r", str(m.path / "tree"), str(copied)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (result.stderr, m.log_text()[-3000:])
        m.unmount()
        assert len(proxy.faults()) >= 4
        assert_broken_bodies_resumed(proxy.requests, "a.tar")
    assert "failed" not in m.log_text()
    for path in tree.rglob("*.bin"):
        relative = path.relative_to(tree)
        assert sha256_file(out / "tree" / relative) == sha256_file(path), relative
        assert sha256_file(copied / relative) == sha256_file(path), relative


def restic(repo: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """restic on a repository on the mount; --no-cache, so every read goes to the mount."""
    env = {**os.environ, "RESTIC_PASSWORD": "s3mpfs-test"}
    return subprocess.run(["restic", "--repo", str(repo), "--no-cache", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_restic_restore_through_flaky_gets(
    s3_server: str, bucket: str, mount: Any, tmp_path: Path, run_cli: Any
) -> None:
    """restic backs a tree up into a repository on a healthy mount; a cold mount restores
    it, another checks every pack (check --read-data), while 35 % of GETs fail: identical
    to the source, and no read failed on the way. restic retries a failed read itself, and
    the kernel re-reads, so exit statuses alone would not tell: before reads resumed, both
    commands exited 0 after EIO on the packs."""
    src = tmp_path / "src"
    for i in range(12):
        size = (i * 104729) % (700 * 1024) if i % 4 else MiB + i * 65537
        (src / f"d{i % 3}" / f"e{i % 2}").mkdir(parents=True, exist_ok=True)
        random_file(src / f"d{i % 3}" / f"e{i % 2}" / f"f{i}.bin", size, seed=200 + i)
    (src / "empty").write_bytes(b"")
    (src / "link").symlink_to("d0/e0/f0.bin")
    with S3Proxy(s3_server, seed=21) as proxy:
        m = mount(bucket, via(proxy))
        repo = m.path / "repo"
        for args in (("init",), ("backup", "--host", "h", ".")):
            result = restic(repo, *args, cwd=src)
            assert result.returncode == 0, (args, result.stderr, m.log_text()[-3000:])
        m.unmount()
        # Besides 35 % of all GETs, every third GET of a pack breaks off halfway through
        # its body: the small objects are read whole and re-read whole.
        proxy.add_fault("GetObject", RESET_MID, every=3, key_contains="repo/data/")
        flaky(proxy, 0.35)
        # Each step on a cold mount (nothing in the kernel's page cache), 1 MiB blocks.
        m = mount(bucket, via(proxy), "read_ahead=1M", FLAKY_RETRIES)
        out = tmp_path / "out"
        result = restic(m.path / "repo", "restore", "latest", "--target", str(out))
        assert result.returncode == 0, (result.stderr, m.log_text()[-3000:])
        totals_once_every_fault_retried(run_cli, m, proxy)
        m.unmount()
        logs = m.log_text()
        restore_faults = read_faults(proxy)
        m = mount(bucket, via(proxy), "read_ahead=1M", FLAKY_RETRIES)
        check = restic(m.path / "repo", "check", "--read-data")
        assert check.returncode == 0, (check.stdout, check.stderr, m.log_text()[-3000:])
        m.unmount()
        logs += m.log_text()
        faults, gets = proxy.faults(), proxy.of_kind("GetObject")
    assert len(restore_faults) >= 3, restore_faults
    assert "failed" not in logs, logs
    assert "retrying" not in result.stderr + check.stderr, result.stderr + check.stderr
    # A pack's body that broke off was resumed where it broke off, pinned to its version.
    assert any("repo/data/" in r.key and "if-match" in r.headers
               and int(r.headers.get("range", "bytes=0-")[6:].split("-")[0]) % MiB
               for r in gets), faults
    restored = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert restored == sorted(p.relative_to(src) for p in src.rglob("*"))
    assert os.readlink(out / "link") == "d0/e0/f0.bin"
    for path in src.rglob("*"):
        if path.is_file() and not path.is_symlink():
            relative = path.relative_to(src)
            assert sha256_file(out / relative) == sha256_file(path), relative


def test_a_read_that_keeps_failing_is_eio_with_one_line_naming_the_file(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="dead.bin", Body=random_bytes(3 * MiB, seed=5))
    proxy.add_fault("GetObject", RESET_MID)
    m = mount(bucket, via(proxy), "read_ahead=2M", "retries=2")
    with pytest.raises(OSError) as caught:
        (m.path / "dead.bin").read_bytes()
    assert caught.value.errno == errno.EIO
    lines = [line for line in m.log_text().splitlines() if "failed" in line]
    assert lines and all("dead.bin" in line for line in lines), lines
    assert not any("read  failed" in line or "read '' failed" in line for line in lines)


# ------------------------------------------------- 2. a version replaced mid-read


class ResumeProxy(S3Proxy):
    """Faults only GETs of the range ending at byte `last` (a block and its resumes)."""

    def __init__(self, upstream: str, last: int) -> None:
        super().__init__(upstream)
        self.suffix = f"-{last}"

    def _decide(self, rec: Recorded) -> Any:
        if not rec.headers.get("range", "").endswith(self.suffix):
            with self._lock:
                self._seq += 1
                rec.seq = self._seq
                self._records.append(rec)
            return None
        return super()._decide(rec)


@pytest.mark.parametrize("route", ["boto3", "crt"])
def test_object_replaced_between_two_retried_ranges_is_eio_never_a_mix(
    s3_server: str, s3: Any, bucket: str, mount: Any, route: str
) -> None:
    v1, v2 = random_bytes(4 * MiB, seed=1), random_bytes(4 * MiB, seed=2)
    s3.put_object(Bucket=bucket, Key="f.bin", Body=v1)
    etag = s3.head_object(Bucket=bucket, Key="f.bin")["ETag"]
    with ResumeProxy(s3_server, last=4 * MiB - 1) as proxy:  # the second 2 MiB block
        proxy.add_fault("GetObject", RESET_MID, times=1)
        hold = proxy.add_fault("GetObject", HOLD, times=1)
        m = mount(bucket, via(proxy), "read_ahead=2M",
                  env={"S3MPFS_HTTP": "crt"} if route == "crt" else None)
        outcome: dict[str, Any] = {}

        def read() -> None:
            with open(m.path / "f.bin", "rb") as f:
                outcome["head"] = f.read(MiB)  # block 0; block 1 is read ahead
                hold.held.wait(30)  # its body broke off; its resume is held
                outcome["ready"] = True
                try:
                    outcome["rest"] = f.read()
                except OSError as exc:
                    outcome["errno"] = exc.errno

        reader = threading.Thread(target=read)
        reader.start()
        assert hold.held.wait(30), proxy.requests
        s3.put_object(Bucket=bucket, Key="f.bin", Body=v2)
        wait_for(lambda: outcome.get("ready"), timeout=30)
        proxy.release(hold)
        reader.join(60)
        resumes = [r for r in proxy.of_kind("GetObject") if r.fault == HOLD]
        m.unmount()
    assert outcome["head"] == v1[:MiB]
    assert outcome.get("errno") == errno.EIO or outcome["head"] + outcome["rest"] == v1, \
        {k: v if isinstance(v, int) else len(v) for k, v in outcome.items()}
    # The held request was the resume: from where the body broke off (through awscrt's
    # S3 client, the whole block again), pinned to v1.
    assert len(resumes) == 1
    start = int(resumes[0].headers["range"].removeprefix("bytes=").split("-")[0])
    if route == "crt":
        assert start == 2 * MiB, resumes[0].headers["range"]
    else:
        assert 2 * MiB < start < 4 * MiB, resumes[0].headers["range"]
    assert resumes[0].headers.get("if-match") == etag
    assert "replaced while open" in m.log_text()


# ------------------------------------------------------ 3. one version per open


def test_cat_on_another_mount_after_a_replacement_is_one_version(
    s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    """Issue 18.3: host B reads the first MiB of a 16 MiB file, host A replaces it, and
    `cat` on B returns exactly v2 (or v1), never v1's cached pages joined to v2."""
    v1, v2 = random_bytes(16 * MiB, seed=31), random_bytes(16 * MiB, seed=32)
    a, b = mount(bucket), mount(bucket)
    (a.path / "f.bin").write_bytes(v1)
    with open(b.path / "f.bin", "rb") as f:
        assert f.read(MiB) == v1[:MiB]
    (tmp_path / "v2").write_bytes(v2)
    subprocess.run(["cp", str(tmp_path / "v2"), str(a.path / "f.bin")], check=True)
    seen = subprocess.run(["cat", str(b.path / "f.bin")], capture_output=True,
                          timeout=60).stdout
    assert seen in (v1, v2), _which(seen, v1, v2)


def _which(seen: bytes, *versions: bytes) -> list[str]:
    """Which version each MiB of `seen` comes from, for the failure message."""
    out = []
    for at in range(0, len(seen), MiB):
        piece = seen[at:at + MiB]
        out.append(next((f"v{i + 1}" for i, v in enumerate(versions)
                         if v[at:at + MiB] == piece), "?"))
    return out


def test_reader_across_a_random_write_commit_reads_one_version(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    """Issue 15.8: a reader that has read a random-mode file's writes and reads on
    while the file is being committed sees the writes, never the old version's bytes."""
    v1 = random_bytes(24 * MiB, seed=41)
    s3.put_object(Bucket=bucket, Key="db.bin", Body=v1)
    m = mount(bucket, via(proxy), "part_size=8M")
    path = m.path / "db.bin"
    new = v1[:MiB + 10] + b"A" * 100 + v1[MiB + 110:20 * MiB + 10] + b"B" * 100 \
        + v1[20 * MiB + 110:]
    hold = proxy.add_fault("CompleteMultipartUpload", HOLD, times=1)
    reader = open(path, "rb")  # noqa: SIM115
    try:
        assert reader.read(4096) == v1[:4096]  # v1's blocks 0-2 are read ahead
        fd = os.open(path, os.O_RDWR)
        os.pwrite(fd, b"B" * 100, 20 * MiB + 10)  # not page-aligned: the kernel asks us
        os.pwrite(fd, b"A" * 100, MiB + 10)
        assert os.pread(reader.fileno(), 200, MiB) == new[MiB:MiB + 200]  # the writes
        closing = threading.Thread(target=os.close, args=(fd,))
        closing.start()
        assert hold.held.wait(30)  # the commit is under way
        result: dict[str, bytes] = {}
        late = threading.Thread(target=lambda: result.update(
            b=os.pread(reader.fileno(), 200, 20 * MiB)))
        late.start()
        late.join(1)  # not a wait for a condition: gives a wrong answer time to come
        proxy.release(hold)
        closing.join(60)
        late.join(60)
        assert result["b"] == new[20 * MiB:20 * MiB + 200], "read the old version"
    finally:
        reader.close()
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(new).digest()


# -------------------------------------------------------------- 4. the counters


def test_status_and_metrics_count_read_retries_beside_write_retries(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, run_cli: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="r.bin", Body=random_bytes(3 * MiB, seed=9))
    proxy.add_fault("GetObject", RESET_MID, times=1)
    proxy.add_fault("GetObject", FAULT_503, times=1)
    proxy.add_fault("PutObject", FAULT_503, times=1)
    m = mount(bucket, via(proxy), "read_ahead=4M", "metrics=0")
    assert hashlib.sha256((m.path / "r.bin").read_bytes()).digest() == \
        hashlib.sha256(random_bytes(3 * MiB, seed=9)).digest()
    (m.path / "w.txt").write_bytes(b"x")
    totals = status_totals(run_cli, m)
    assert totals["read_retries"] == 2 and totals["write_retries"] >= 1, totals
    text = run_cli("status", str(m.path)).stdout
    assert "reads 2" in text, text
    metrics_at = json.loads(run_cli("status", str(m.path), "--json").stdout)["mount"]["metrics"]
    import urllib.request
    body = urllib.request.urlopen(f"http://{metrics_at}/metrics", timeout=10).read().decode()  # noqa: S310
    assert any(line.startswith("s3mpfs_read_retries_total{") and line.endswith(" 2")
               for line in body.splitlines()), body
    assert "s3mpfs_write_retries_total{" in body



def test_whole_object_reads_check_the_checksum_the_server_returns(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    """A read of a whole object asks for its checksum (x-amz-checksum-mode); a renamed
    multipart file, whose copy moto gives a wrong whole-object checksum, still reads
    back (the same bytes twice: the server's checksum is wrong, not the bytes)."""
    data = random_bytes(6 * MiB + 1, seed=51)
    m = mount(bucket, via(proxy), "part_size=5M", "read_ahead=8M")
    (m.path / "a.bin").write_bytes(data)
    os.rename(m.path / "a.bin", m.path / "b.bin")
    (m.path / "small.txt").write_bytes(b"small file")
    m.unmount()
    m = mount(bucket, via(proxy), "part_size=5M", "read_ahead=8M")  # no cached pages
    proxy.clear()
    assert (m.path / "b.bin").read_bytes() == data
    assert (m.path / "small.txt").read_bytes() == b"small file"
    gets = [r for r in proxy.of_kind("GetObject")
            if r.headers.get("range", "").startswith("bytes=0-")]
    assert gets and all(r.headers.get("x-amz-checksum-mode") == "ENABLED" for r in gets)
    assert "read of" not in m.log_text()


def test_an_append_to_a_file_of_a_few_mib_reads_its_base_back_whole(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    """An append to a file under one part reads the old object back (one ranged GET of
    the whole base, resumed when its body breaks off) and re-sends it."""
    base = random_bytes(3 * MiB + 5, seed=61)
    s3.put_object(Bucket=bucket, Key="log.bin", Body=base)
    proxy.add_fault("GetObject", RESET_MID, times=1)
    m = mount(bucket, via(proxy))
    with open(m.path / "log.bin", "ab") as f:
        f.write(b"appended")
    got = s3.get_object(Bucket=bucket, Key="log.bin")["Body"].read()
    assert got == base + b"appended"
    assert [r.fault for r in proxy.of_kind("GetObject")][:2] == [RESET_MID, None]
