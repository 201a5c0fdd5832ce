"""Reading what listings lack: the HEADs that make a node's attributes the object's own,
for one name and the next names of its listing (stat-ahead: `ls -l` and `rsync` stat in
listing order), in parallel, once per object version, after the directory's stat index
had its say. The base of `Names` (fs/names.py), which owns the nodes, listings and index
these read into."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..objects import ObjectInfo
from ..s3.store import S3Store, is_not_found
from .inodes import InodeTable, join
from .listings import Listings
from .node import Node
from .statindex import StatIndex

METADATA_CONCURRENCY = 64  # HEADs in flight when metadata is fetched for many names
STAT_AHEAD = 256  # names of a listing whose metadata one lookup fetches (itself included)
INDEXED_LISTING_MAX = 10_000  # files of a directory shown with its stat index's metadata


class MetadataReads:
    """What it uses of Names (set in Names.__init__)."""

    store: S3Store
    table: InodeTable
    stat_index: StatIndex
    _listings: Listings
    _heads: dict[int, trio.Event]  # inode -> set when its HEAD in flight ends

    if TYPE_CHECKING:
        def key(self, node: Node) -> str: ...
        def file_node(self, path: str, info: ObjectInfo) -> Node: ...
        def dir_node(self, path: str, marker: ObjectInfo | None = None) -> Node: ...
        def _from_index(self, path: str, info: ObjectInfo) -> None: ...

    async def head(self, key: str) -> ObjectInfo | None:
        """The object at `key`, or None."""
        try:
            return await self.store.head(key)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    async def fetch_metadata(self, nodes: list[Node]) -> set[str]:
        """HEAD the objects of nodes whose metadata is unknown, in parallel, bounded; a
        node whose HEAD is already in flight is waited for, not HEADed again. Returns the
        paths of files S3 no longer has."""
        missing = [n for n in nodes if not n.meta_known and n.written is None and n.path]
        gone: set[str] = set()
        if not missing:
            return gone
        started = [n for n in missing if n.inode not in self._heads]
        waiting = [self._heads[n.inode] for n in missing if n.inode in self._heads]
        for node in started:
            self._heads[node.inode] = trio.Event()
        # METADATA_CONCURRENCY tasks take the nodes one after the other: one task and a
        # limiter wait per HEAD cost more than the HEAD's own Python (for 1,000 entries).
        queue = iter(started)

        async def fetch() -> None:
            for node in queue:
                try:
                    info = await self.head(self.key(node))
                    if info is None:
                        if node.is_dir:  # a prefix without a marker: defaults are the truth
                            node.meta_known = True
                        else:
                            gone.add(node.path)
                    elif node.is_dir:
                        self.dir_node(node.path, info)
                    else:
                        self.file_node(node.path, info)
                finally:
                    self._heads.pop(node.inode).set()

        try:
            async with trio.open_nursery() as nursery:
                for _ in range(min(METADATA_CONCURRENCY, len(started))):
                    nursery.start_soon(fetch)
        finally:
            for node in queue:  # not started (cancelled): let waiters go
                self._heads.pop(node.inode).set()
        files = [n for n in started if not n.is_dir]
        if files:
            self.stat_index.headed(files[0].parent_path, len(files))
        for event in waiting:
            await event.wait()
        return gone

    async def from_stat_index(self, directory: Node, nodes: list[Node]) -> None:
        """A listing about to be shown to the kernel (readdir): its files' metadata from
        the directory's stat index, where an entry matches the listed version. Their
        attributes are then exact and the kernel keeps them, so `ls -l`, `du` or a
        backup tool's scan stats each entry without a LOOKUP. One GET per directory
        (none if the index is at hand, or known absent); a larger directory's names-only
        listing (`ls -f`, `find -name`) is not slowed by decoding its index, and its
        entries are filled by lookups, STAT_AHEAD at a time, as before."""
        unknown = [n for n in nodes if not n.meta_known and n.written is None and not n.is_dir]
        if len(unknown) <= INDEXED_LISTING_MAX:
            await self.stat_index.fill(directory.path, unknown, self._from_index)

    async def ensure_metadata(self, node: Node) -> bool:
        """Make the node's attributes the object's own (a HEAD unless known), fetching
        the next unknown names of its directory's listing at the same time. False: S3
        no longer has the file."""
        if node.meta_known or node.written is not None or not node.path:
            return True
        batch = [node]
        for name in self._listings.following(node.parent_path, node.name, STAT_AHEAD * 4):
            if len(batch) >= STAT_AHEAD:
                break
            other = self.table.at(join(node.parent_path, name))
            if other is not None and not other.meta_known and other.written is None:
                batch.append(other)
        await self.stat_index.fill(node.parent_path, batch, self._from_index)
        gone = await self.fetch_metadata([n for n in batch if not n.meta_known])
        return node.path not in gone
