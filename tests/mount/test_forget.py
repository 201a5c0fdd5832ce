"""The inode table holds what the kernel holds: the kernel's FORGETs free nodes
(`s3mpfs status --json` counts them: mount.inodes), and the directory is still listed and
stat'ed whole after."""

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
    return {"inodes": mount["inodes"], "listed_names": mount["listed_names"]}


def test_forgotten_inodes_leave_the_table(s3: Any, bucket: str, mount: Any,
                                         run_cli: Any) -> None:
    put_files(s3, bucket, FILES)
    m = mount(bucket)
    assert len(list((m.path / "d").iterdir())) == FILES
    assert all(p.stat().st_size == 1 for p in (m.path / "d").iterdir())
    assert held(run_cli, m.path)["inodes"] >= FILES
    drop_kernel_caches()
    deadline = time.monotonic() + 30
    while (count := held(run_cli, m.path)["inodes"]) >= FILES // 2:
        assert time.monotonic() < deadline, f"{count} inodes still held after drop_caches"
        drop_kernel_caches()  # FORGETs arrive as the kernel evicts: ask again until they have
    assert sorted(p.name for p in (m.path / "d").iterdir()) == [
        f"f{i:05d}" for i in range(FILES)]
    assert all(p.stat().st_size == 1 for p in (m.path / "d").iterdir())
