"""The inode table holds what the kernel holds: the kernel's FORGETs free nodes
(`s3mpfs status --json` counts them: mount.inodes), packed ones too, and the directory is
still listed and stat'ed whole after."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import drop_kernel_caches

pytestmark = pytest.mark.mount

FILES = 1200  # more than a "small" directory (a lookup HEADs rather than lists)


def put_files(s3: Any, bucket: str, count: int) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"d/f{i:05d}", Body=b"x"),
                      range(count)))


def held(run_cli: Any, mnt: Path) -> dict[str, int]:
    result = run_cli("status", str(mnt), "--json")
    assert result.returncode == 0, result.stderr
    mount = json.loads(result.stdout)["mount"]
    return {k: mount[k] for k in ("inodes", "inodes_packed", "listed_names")}


def wait_forgotten(run_cli: Any, mnt: Path) -> None:
    """Drop the kernel's caches until it has forgotten most of the directory's inodes."""
    drop_kernel_caches()
    deadline = time.monotonic() + 30
    while (count := held(run_cli, mnt)["inodes"]) >= FILES // 2:
        assert time.monotonic() < deadline, f"{count} inodes still held after drop_caches"
        drop_kernel_caches()  # FORGETs arrive as the kernel evicts: ask again until they have


def test_forgotten_inodes_leave_the_table(s3: Any, bucket: str, mount: Any,
                                         run_cli: Any) -> None:
    put_files(s3, bucket, FILES)
    m = mount(bucket)
    assert len(list((m.path / "d").iterdir())) == FILES
    # Nothing but the table holds the nodes listed once the directory handle ended:
    # packed rows (the suite's mounts pack at once, S3MPFS_PACK_AFTER=1)...
    assert held(run_cli, m.path)["inodes_packed"] >= FILES
    wait_forgotten(run_cli, m.path)  # ...which FORGETs count down and free
    assert all(p.stat().st_size == 1 for p in (m.path / "d").iterdir())
    now = held(run_cli, m.path)  # (a HEAD keeps the latest 4,096 as objects: names.py)
    assert now["inodes"] >= FILES and now["inodes_packed"] < FILES, now
    wait_forgotten(run_cli, m.path)
    assert sorted(p.name for p in (m.path / "d").iterdir()) == [
        f"f{i:05d}" for i in range(FILES)]
    assert all(p.stat().st_size == 1 for p in (m.path / "d").iterdir())
