"""Memory with many writers: the daemon's peak memory (VmHWM) stays within the bound the
README states ("Memory"), however many files are written at once:

    peak RSS <= RSS at rest + memory_limit + (upload_concurrency + 2) * part_size
                + 2 MiB per file being written at once
                + memory_limit / 4 over https, 2 * part_size over plain http

Over https parts go through awscrt's S3 client (s3/bulk.py), which holds a copy of each
part it sends, at most memory_limit / 4 at once (S3MPFS_HTTP=crt takes that route here).

Part data anywhere on the write path is charged to `memory_limit` (parts in flight, the part
each file is filling; first parts kept for rewrites go to the spool). The last term is the
FUSE request each writer waiting for room holds (its payload, up to 1 MiB, and libfuse's
buffer for it): pyfuse3 serves at most 99 requests at once. Over plain http freed parts
and blocks are recycled on the heap, not unmapped (run/memory.py), and part of it is
always free between buffers of two sizes: two parts' worth."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import random_file, wait_for
from s3proxy import HOLD, S3Proxy

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
PART = 5 * MiB
LIMIT = 20 * MiB
CONCURRENCY = 2
PER_WRITER = 2 * MiB


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def bound_kib(at_rest_kib: int, writers: int, route: str) -> int:
    """The README's bound, in KiB."""
    copies = LIMIT // 4 if route == "crt" else 2 * PART  # (crt: awscrt's; boto3: the heap's)
    return at_rest_kib + (LIMIT + (CONCURRENCY + 2) * PART + writers * PER_WRITER
                          + copies) // 1024


@pytest.mark.parametrize("route", ["boto3", "crt"])
@pytest.mark.parametrize("writers", [4, 16])
def test_peak_memory_with_many_writers_stays_within_the_bound(
    s3: Any, bucket: str, mount: Any, tmp_path: Path, writers: int, route: str
) -> None:
    src = random_file(tmp_path / "src.bin", 24 * MiB + 1, seed=writers)  # 5 parts each
    m = mount(bucket, "part_size=5M", f"memory_limit={LIMIT // MiB}M",
              f"upload_concurrency={CONCURRENCY}",
              env={"S3MPFS_HTTP": "crt"} if route == "crt" else None)
    pid = m.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (start-up aside)
    at_rest = status_kib(pid, "VmRSS")
    procs = [subprocess.Popen(["cp", str(src), str(m.path / f"f{i}")]) for i in range(writers)]
    assert [p.wait(timeout=300) for p in procs] == [0] * writers, m.log_text()
    peak = status_kib(pid, "VmHWM")
    print(f"{writers} writers: at rest {at_rest // 1024} MiB, peak {peak // 1024} MiB, "
          f"bound {bound_kib(at_rest, writers, route) // 1024} MiB")
    sizes = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert all(sizes.get(f"f{i}") == src.stat().st_size for i in range(writers)), sizes
    assert peak <= bound_kib(at_rest, writers, route), (peak, at_rest)


def test_awscrt_holds_copies_of_at_most_a_quarter_of_memory_limit(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    """Three 5 MiB parts held in flight through awscrt's S3 client (15 MiB of copies, the
    cap is 64M / 4 = 16 MiB): the fourth part in flight goes through boto3, and the
    object is whole."""
    src = random_file(tmp_path / "src.bin", 25 * MiB, seed=3)  # 5 parts
    hold = proxy.add_fault("UploadPart", HOLD, times=3)
    m = mount(bucket, f"endpoint_url={proxy.url}", "part_size=5M", "upload_concurrency=4",
              env={"S3MPFS_HTTP": "crt"})
    writer = subprocess.Popen(["cp", str(src), str(m.path / "f.bin")])
    try:
        proxy.wait_for(lambda _: len(proxy.of_kind("UploadPart")) >= 4, timeout=60)
        parts = proxy.of_kind("UploadPart")  # the mount-time probe's left out
        # Parts 1 to 4 in flight, in whatever order they reached the server (the fifth
        # can start only once one of them is answered).
        agents = sorted(r.headers.get("user-agent", "").partition("/")[0]
                        for r in parts[:4])
        assert agents == ["Boto3"] + ["CRTS3NativeClient"] * 3, agents
    finally:
        proxy.release(hold)
        assert writer.wait(timeout=120) == 0, m.log_text()
    assert s3.get_object(Bucket=bucket, Key="f.bin")["Body"].read() == src.read_bytes()


def test_an_idle_mount_gives_back_the_memory_a_burst_took(
    bucket: str, mount: Any, tmp_path: Path
) -> None:
    """Over http, parts and read blocks are recycled on the heap, which keeps them after
    the burst (run/memory.py); once more than 32 MiB of it is free, the mount gives it
    back within seconds, and an idle mount's RSS returns to what it was at rest."""
    src = random_file(tmp_path / "src.bin", 96 * MiB, seed=7)
    m = mount(bucket)
    pid = m.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    at_rest = status_kib(pid, "VmRSS")
    subprocess.run(["cp", str(src), str(m.path / "f.bin")], check=True)
    subprocess.run(["cmp", str(src), str(m.path / "f.bin")], check=True)  # read blocks too
    peak = status_kib(pid, "VmHWM")
    assert peak > at_rest + 40 * 1024, (peak, at_rest)  # the burst took memory
    wait_for(lambda: status_kib(pid, "VmRSS") <= at_rest + 16 * 1024, timeout=30,
             message=f"RSS back within 16 MiB of {at_rest // 1024} MiB at rest")
