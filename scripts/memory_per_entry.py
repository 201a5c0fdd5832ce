"""What one entry costs in the daemon's Python heap: `ls -lR` of DIRS x FILES objects
simulated in-process (no FUSE, no network), measured with tracemalloc.

An in-memory store answers ListObjectsV2 pages and HEADs as s3/store.py would build them
(a new key, ETag and time per object, s3fs-style metadata on each HEAD; no stat index).
The walk does what the kernel makes the mount do for `ls -lR`: per directory, one
readdirplus (list, a reference per entry), a lookup of each name (HEAD, stat-ahead), and
the handle's release. Prints the heap per entry held, after the walk and once the last
listing left the cache, and the lines that hold the most.

    PYTHONPATH=$PWD python scripts/memory_per_entry.py --dirs 2 --files 50000
"""

from __future__ import annotations

import argparse
import bisect
import linecache
import sys
import time
import tracemalloc
from typing import Any

import trio
from botocore.exceptions import ClientError

from s3mpfs.config import MountConfig
from s3mpfs.fs.names import Names
from s3mpfs.fs.statwriter import StatWriter
from s3mpfs.objects import Listing, ObjectInfo

PAGE = 1000


class MemoryStore:
    """Keys DIR/fNNNNNNN, empty objects with s3fs-style metadata (mode, mtime)."""

    def __init__(self, dirs: int, files: int, distinct: bool, ns_times: bool = False) -> None:
        self.dirs = [f"d{d}/" for d in range(dirs)]
        self.keys = sorted(f"{d}f{i:07d}" for d in self.dirs for i in range(files))
        self.mtime = float(int(time.time()) - 3600)
        self.distinct = distinct
        self.ns_times = ns_times  # mtime headers with nanoseconds, as s3mpfs and rsync set
        self.plain: dict[str, bytes] = {}
        self.requests: dict[str, int] = {"LIST": 0, "HEAD": 0}

    def _info(self, key: str) -> ObjectInfo:
        # New strings per answer, as a parsed response gives them. Like nulls3's
        # --populate: empty objects of one time; or (distinct) each its own ETag, size
        # and times, as files a tool copied.
        n = hash(key) & 0xFFFFFFFF if self.distinct else 0
        md5 = f"{n:032x}" if self.distinct else "d41d8cd98f00b204e9800998ecf8427e"
        return ObjectInfo(key=(key + " ")[:-1], size=n % 100_000, mtime=self.mtime + n % 997,
                          etag=('"' + md5 + '" ')[:-1], storage_class="STANDARD")

    async def list(self, prefix: str, delimiter: str | None = "/",
                   max_keys: int | None = None, start_after: str | None = None) -> Listing:
        listing = Listing()
        if prefix == "":
            listing.prefixes = list(self.dirs)
            return listing
        start = bisect.bisect_right(self.keys, max(prefix, start_after or ""))
        at = start
        while at < len(self.keys) and self.keys[at].startswith(prefix):
            if max_keys and at - start >= max_keys:
                listing.truncated = True
                break
            listing.objects.append(self._info(self.keys[at]))
            at += 1
        self.requests["LIST"] += max(1, -(-(at - start) // PAGE))
        await trio.lowlevel.checkpoint()
        return listing

    async def head(self, key: str) -> ObjectInfo:
        self.requests["HEAD"] += 1
        await trio.lowlevel.checkpoint()
        i = bisect.bisect_left(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            raise ClientError({"Error": {"Code": "404"}}, "HeadObject")
        info = self._info(key)
        mtime = self.mtime - (hash(key) & 0xFFFFF if self.distinct else 0)
        fraction = f".{hash(key + 'ns') % 10**9:09d}" if self.ns_times else ""
        info.metadata = {"mode": "33188", "mtime": f"{int(mtime)}{fraction}"}
        info.headers = {"ContentType": "binary/octet-stream"}
        return info

    async def get_object(self, key: str) -> bytes:
        self.requests["GET"] = self.requests.get("GET", 0) + 1
        await trio.lowlevel.checkpoint()
        if key not in self.plain:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return self.plain[key]

    async def put_plain(self, key: str, data: bytes) -> None:
        self.requests["PUT"] = self.requests.get("PUT", 0) + 1
        await trio.lowlevel.checkpoint()
        self.plain[key] = data  # (stat indexes)


async def walk(names: Names, store: MemoryStore) -> None:
    """`ls -lR`: readdirplus of each directory, then a lookup of each name; with a
    writable mount, each directory's stat index is written once the walk moves on (as
    fs/statwriter.py's task does once the directory has been quiet)."""
    writer = StatWriter(names)
    root = names.table.get(1)
    for directory in _nodes(await names.list(root)):
        names.table.remember(directory)
        nodes = _nodes(await names.list(directory))
        names.opened(nodes)
        for node in nodes:
            names.table.remember(node)  # readdirplus
        listed = [node.name for node in nodes]
        names.release(nodes)  # ls reads the whole directory, closes it, then stats
        del nodes, node
        if hasattr(names.table, "handle_ended"):  # (as fs/operations.py's releasedir)
            names.table.handle_ended(len(listed))
        for name in listed:
            found = await names.lookup(directory, name)
            names.table.remember(found)
        del found
        for dir_path in list(names.stat_index.dirty):
            names.stat_index.dirty.pop(dir_path)
            await writer.write(dir_path, relist=False)


def _nodes(listed: list[Any]) -> list[Any]:
    """Names.list's nodes ((name, node) pairs; nodes alone before 51e6303)."""
    return [item[1] if isinstance(item, tuple) else item for item in listed]


def top(snapshot: tracemalloc.Snapshot, entries: int, count: int) -> None:
    for stat in snapshot.statistics("lineno")[:count]:
        frame = stat.traceback[0]
        where = frame.filename.rpartition("/s3mpfs/")[2].rpartition("/scripts/")[2]
        code = linecache.getline(frame.filename, frame.lineno).strip()
        print(f"  {stat.size / entries:7.1f} B/entry  {where}:{frame.lineno}  {code[:60]}")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def rss(config: MountConfig, store: MemoryStore, entries: int) -> int:
    """The walk measured by the process's RSS: what pymalloc keeps, holes and all."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    base = _status_kib("VmRSS")
    names = Names(config, store, lambda path: [])  # type: ignore[arg-type]
    trio.run(walk, names, store)
    after, peak = _status_kib("VmRSS"), _status_kib("VmHWM")
    print(f"{entries} entries, {len(names.table)} inodes: RSS {base // 1024} -> {after // 1024} "
          f"MiB, {(after - base) * 1024 / entries:.0f} B/entry (peak "
          f"{(peak - base) * 1024 / entries:.0f})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dirs", type=int, default=2)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--top", type=int, default=15, help="lines shown")
    parser.add_argument("--rss", action="store_true",
                        help="the process's RSS (VmRSS, VmHWM) instead of tracemalloc's count")
    parser.add_argument("--distinct", action="store_true",
                        help="each object its own ETag, size and times (else all alike)")
    parser.add_argument("--read-only", action="store_true",
                        help="no stat index written (a writable mount writes one per directory)")
    parser.add_argument("--ns-times", action="store_true",
                        help="mtime headers with nanoseconds (files s3mpfs or rsync wrote)")
    args = parser.parse_args()
    entries = args.dirs * args.files
    store = MemoryStore(args.dirs, args.files, args.distinct, args.ns_times)
    config = MountConfig(bucket="b", read_only=args.read_only)
    if args.rss:
        return rss(config, store, entries)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    names = Names(config, store, lambda path: [])  # type: ignore[arg-type]
    names.store = store  # type: ignore[assignment]
    names.stat_index.store = store  # type: ignore[assignment]
    started = time.monotonic()
    trio.run(walk, names, store)
    seconds = time.monotonic() - started
    held = tracemalloc.get_traced_memory()
    print(f"{entries} entries ({args.dirs} x {args.files}), {len(names.table)} inodes, "
          f"{len(names._listings)} listed names, {store.requests}, {seconds:.1f} s")
    print(f"heap after the walk: {(held[0] - base) / entries:.0f} B/entry "
          f"(peak {(held[1] - base) / entries:.0f})")
    top(tracemalloc.take_snapshot(), entries, args.top)
    for path in names._listings.paths():  # the listings leave the cache (time passes)
        names._listings.pop(path)
    names.stat_index._listed.clear()
    names.stat_index._indexes.clear()
    names._with_head.clear()
    print(f"without listings: {(tracemalloc.get_traced_memory()[0] - base) / entries:.0f} "
          "B/entry")
    if hasattr(names.table, "pack_idle"):  # (since the packed rows)
        names.table.pack_idle()  # as the next directory's nodes would make it
        print(f"and idle nodes packed: {len(names.table.nodes())} nodes left as objects, "
              f"{(tracemalloc.get_traced_memory()[0] - base) / entries:.0f} B/entry")
        top(tracemalloc.take_snapshot(), entries, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
