"""Stat indexes (fs/statindex.py, fs/statwriter.py): a cold `ls -l` of a directory this
mount (or another s3mpfs mount) wrote costs one LIST and one GET of the directory's index
instead of one HEAD per file, with exact metadata; whatever changed since is HEADed.

Requests are counted by the recording proxy (tests/s3proxy.py).
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from s3proxy import S3Proxy
from test_request_counts import settle

from s3mpfs.fs.listings import LISTING_TTL

FILES = 40
INDEX = ".s3mpfs/stat/tree/index.json.gz"


def write_tree(m: Any) -> dict[str, tuple[int, int, int, int]]:
    """FILES files, some chmod'ed, chown'ed and utime'd; what stat shows of each."""
    tree = m.path / "tree"
    tree.mkdir()
    for i in range(FILES):
        (tree / f"f{i:03d}").write_bytes(b"x" * i)
    for i in range(0, FILES, 3):
        os.chmod(tree / f"f{i:03d}", 0o600 + i % 8)
    for i in range(1, FILES, 4):
        os.chown(tree / f"f{i:03d}", 1000 + i, 2000 + i)
    for i in range(2, FILES, 5):
        os.utime(
            tree / f"f{i:03d}", ns=(1_600_000_000_123_456_789 + i, 1_500_000_000_987_654_321 + i)
        )
    return shown(tree)


def shown(tree: Path) -> dict[str, tuple[int, int, int, int]]:
    result = {}
    for name in sorted(os.listdir(tree)):
        st = os.stat(tree / name)
        result[name] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return result


def entry_heads(proxy: S3Proxy) -> list[str]:
    return sorted(
        r.key
        for r in proxy.requests
        if r.kind == "HeadObject" and r.key and r.key.startswith("tree/") and r.key != "tree/"
    )


def index_gets(proxy: S3Proxy) -> list[str]:
    return [r.key for r in proxy.requests if r.kind == "GetObject" and r.key == INDEX]


def past_the_second(s3: Any, bucket: str) -> None:
    """Wait until the clock is past the second of the newest LastModified under tree/:
    metadata read within that second is not indexed (see statwriter._entry)."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="tree/")["Contents"]
    newest = max(o["LastModified"].timestamp() for o in listed)
    deadline = time.monotonic() + 5
    while time.time() < int(newest) + 1.05:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def written_then_fresh(proxy: S3Proxy, mount: Any, bucket: str, *options: str) -> tuple:
    via = ",".join([f"endpoint_url={proxy.url}", *options])
    writer = mount(bucket, via)
    expected = write_tree(writer)
    writer.unmount()
    return via, expected


def test_a_fresh_mount_stats_every_file_from_the_index_without_a_head(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    via, expected = written_then_fresh(proxy, mount, bucket)
    assert s3.head_object(Bucket=bucket, Key=INDEX)["ContentLength"] > 0
    fresh = mount(bucket, via)
    settle(proxy, quiet=0.5)
    proxy.clear()
    assert shown(fresh.path / "tree") == expected
    settle(proxy, quiet=0.5)
    assert entry_heads(proxy) == []
    assert len(index_gets(proxy)) == 1
    assert not [r for r in proxy.requests if r.kind == "PutObject"]  # nothing new to index
    # The index is never a name: the top level shows no .s3mpfs.
    assert os.listdir(fresh.path) == ["tree"]


def test_a_listing_hands_the_kernel_exact_attributes_from_the_index(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    """readdir fills its entries from the directory's index, so the kernel caches exact
    attributes with the names: stat of every entry after a bare listing asks S3 nothing
    (before, each stat was a LOOKUP, and the first of them fetched the index)."""
    via, expected = written_then_fresh(proxy, mount, bucket)
    fresh = mount(bucket, via)
    tree = fresh.path / "tree"
    settle(proxy, quiet=0.5)
    proxy.clear()
    listed = time.monotonic()
    assert sorted(os.listdir(tree)) == sorted(expected)
    by_listing = len(proxy.requests)  # readdir's requests are answered before it returns
    # Right away: the listing answers lookups for LISTING_TTL (2 s), and the attributes
    # the kernel got with the names last ATTR_TIMEOUT (1 s); past that, stats list again.
    stats = {name: os.stat(tree / name) for name in expected}
    took = time.monotonic() - listed
    assert {name: (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
            for name, st in stats.items()} == expected
    settle(proxy, quiet=0.5)
    assert entry_heads(proxy) == []
    assert len(index_gets(proxy)) == 1
    by_stats = [(r.kind, r.key) for r in proxy.requests[by_listing:]]
    if took < LISTING_TTL:
        assert by_stats == []
    else:  # a machine that slow: the listing expired, and it was listed again; no more
        assert {kind for kind, _ in by_stats} <= {"ListObjectsV2"}, by_stats
        assert len(by_stats) <= 2 * int(took / LISTING_TTL), (by_stats, took)


def test_another_clients_changes_are_headed_and_shown(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    via, expected = written_then_fresh(proxy, mount, bucket)
    # A server that lists LastModified to the second could not tell a copy within the
    # second of the version indexed (documented): the changes below come after it.
    past_the_second(s3, bucket)
    s3.put_object(
        Bucket=bucket,
        Key="tree/f004",
        Body=b"new",
        Metadata={"mode": str(stat.S_IFREG | 0o640), "uid": "7", "gid": "8", "mtime": "1400000000"},
    )
    s3.copy_object(
        Bucket=bucket,
        Key="tree/f005",
        CopySource={"Bucket": bucket, "Key": "tree/f005"},
        MetadataDirective="REPLACE",
        Metadata={
            "mode": str(stat.S_IFREG | 0o604),
            "uid": "9",
            "gid": "10",
            "mtime": "1300000000",
        },
    )
    fresh = mount(bucket, via)
    settle(proxy, quiet=0.5)
    proxy.clear()
    now = shown(fresh.path / "tree")
    settle(proxy, quiet=0.5)
    assert entry_heads(proxy) == ["tree/f004", "tree/f005"]
    assert now["f004"] == (stat.S_IFREG | 0o640, 7, 8, 1_400_000_000 * 10**9)
    assert now["f005"] == (stat.S_IFREG | 0o604, 9, 10, 1_300_000_000 * 10**9)
    assert os.stat(fresh.path / "tree" / "f004").st_size == 3
    assert {k: v for k, v in now.items() if k not in ("f004", "f005")} == {
        k: v for k, v in expected.items() if k not in ("f004", "f005")
    }


def test_a_damaged_or_foreign_index_is_ignored(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    via, expected = written_then_fresh(proxy, mount, bucket, "stat_index=no")
    wrong_version = gzip.compress(
        json.dumps({"version": 99, "directory": "tree", "entries": {}}).encode()
    )
    for body in (b"\x1f\x8b not gzip at all", wrong_version, gzip.compress(b"[1, 2")):
        s3.put_object(Bucket=bucket, Key=INDEX, Body=body)
        fresh = mount(bucket, via)  # (stat_index=no: it reads no index, writes none)
        proxy.clear()
        assert shown(fresh.path / "tree") == expected
        settle(proxy, quiet=0.5)
        assert index_gets(proxy) == []
        fresh.unmount()
        reader = mount(bucket, f"endpoint_url={proxy.url},ro")  # reads, never writes
        proxy.clear()
        assert shown(reader.path / "tree") == expected
        settle(proxy, quiet=0.5)
        assert len(entry_heads(proxy)) == FILES
        assert len(index_gets(proxy)) == 1
        assert not [r for r in proxy.requests if r.kind == "PutObject"]
        assert "Traceback" not in reader.log_text()
        reader.unmount()


def test_stat_index_no_makes_no_index_request(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    proxy.clear()
    via, expected = written_then_fresh(proxy, mount, bucket, "stat_index=no")
    fresh = mount(bucket, via)
    assert shown(fresh.path / "tree") == expected
    fresh.unmount()
    assert not [r for r in proxy.requests if ".s3mpfs/stat/" in (r.key or "")]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=".s3mpfs/stat/")


def test_heads_of_a_listing_are_indexed_for_the_next_mount(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    """Objects written by another tool: the first mount HEADs them and writes the index
    (at unmount at the latest); the next one HEADs none."""
    for i in range(FILES):
        s3.put_object(
            Bucket=bucket,
            Key=f"tree/f{i:03d}",
            Body=b"y" * i,
            Metadata={"mode": str(stat.S_IFREG | 0o600 | i % 8), "uid": str(i)},
        )
    past_the_second(s3, bucket)
    via = f"endpoint_url={proxy.url}"
    first = mount(bucket, via)
    expected = shown(first.path / "tree")
    first.unmount()
    assert s3.head_object(Bucket=bucket, Key=INDEX)["ContentLength"] > 0
    fresh = mount(bucket, via)
    settle(proxy, quiet=0.5)
    proxy.clear()
    assert shown(fresh.path / "tree") == expected
    settle(proxy, quiet=0.5)
    assert entry_heads(proxy) == []
    assert expected["f005"][:2] == (stat.S_IFREG | 0o605, 5)


def test_entries_are_checked_against_a_listing_no_older_than_a_head(
    proxy: S3Proxy, s3: Any, bucket: str, mount: Any
) -> None:
    """A listing answers for 2 s: stats later than that (a large directory's `ls -l`)
    check the index against that stretch of the directory listed again, so that a change
    made after the listing is seen as a HEAD would see it."""
    via, expected = written_then_fresh(proxy, mount, bucket)
    past_the_second(s3, bucket)
    fresh = mount(bucket, via)
    names = os.listdir(fresh.path / "tree")
    listed = time.monotonic()
    s3.copy_object(
        Bucket=bucket,
        Key="tree/f007",
        MetadataDirective="REPLACE",
        CopySource={"Bucket": bucket, "Key": "tree/f007"},
        Metadata={"mode": str(stat.S_IFREG | 0o611), "uid": "3", "gid": "4", "mtime": "1200000000"},
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < listed + 2.1:  # the listing no longer answers lookups
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proxy.clear()
    now = {name: os.stat(fresh.path / "tree" / name) for name in names}
    assert (now["f007"].st_mode, now["f007"].st_uid) == (stat.S_IFREG | 0o611, 3)
    assert entry_heads(proxy) == ["tree/f007"]
    assert now["f006"].st_mode == expected["f006"][0]
