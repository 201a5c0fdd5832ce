"""Writing stat indexes (see `fs/statindex.py`), in the background, never on the path of
a file operation.

A directory's index is (re)written once the mount knows the metadata of files its stored
index lacks or has wrong: files this mount stored there (their LastModified, which S3
does not return on a write, comes from one LIST of the directory) or files it had to HEAD
(many of them, from a listing it already has). A write waits until the directory has been
quiet for DEBOUNCE, so that a burst of new files costs one LIST and one PutObject in all,
and pending ones are written at unmount. The PutObject is unconditional: the index is a
cache, checked entry by entry against every listing, so that when two mounts write one,
the last one wins and the other's entries cost HEADs. A failed write is only logged.
"""

from __future__ import annotations

import logging
import time

import trio

from ..errors import describe
from ..s3.metadata import encode
from .inodes import join
from .names import Names
from .node import Node
from .statindex import (
    MIN_BATCH,
    Entry,
    IndexBody,
    Listed,
    StatIndex,
    index_key,
    matches,
    owned,
)

log = logging.getLogger(__name__)

DEBOUNCE = 2.0  # seconds a directory stays quiet before its index is written (a pause
# within a `cp -r` on a loaded machine should not cost an extra LIST and PutObject)
CONCURRENCY = 8  # directories written at once (a tree copied: many at unmount)


class StatWriter:
    def __init__(self, names: Names) -> None:
        self.names = names
        self.index: StatIndex = names.stat_index
        self._writing: dict[str, trio.Event] = {}  # directory -> set once written
        self._limiter = trio.CapacityLimiter(CONCURRENCY)

    async def run(self) -> None:
        """The mount's writer task: each directory once it has been quiet long enough."""
        if not self.index.writable:
            return
        while True:
            if not self.index.dirty:
                self.index.wake = trio.Event()
                await self.index.wake.wait()
                continue
            due = min(changed for changed, _ in self.index.dirty.values()) + DEBOUNCE
            await trio.sleep_until(trio.current_time() + max(0.0, due - time.monotonic()))
            now = time.monotonic()
            await self._write_all(
                [d for d, (changed, _) in self.index.dirty.items() if changed + DEBOUNCE <= now]
            )

    async def flush(self) -> None:
        """Write every pending index now (at unmount), after those being written."""
        for done in list(self._writing.values()):
            await done.wait()
        await self._write_all(list(self.index.dirty))

    async def _write_all(self, dir_paths: list[str]) -> None:
        async with trio.open_nursery() as nursery:
            for dir_path in dir_paths:
                nursery.start_soon(self._write_one, dir_path)

    async def _write_one(self, dir_path: str) -> None:
        async with self._limiter:
            while dir_path in self._writing:  # changed again while being written
                await self._writing[dir_path].wait()
            pending = self.index.dirty.pop(dir_path, None)
            if pending is None:
                return
            self._writing[dir_path] = done = trio.Event()
            try:
                await self.write(dir_path, relist=pending[1])
            except Exception as exc:  # a cache: the next mount HEADs instead
                log.info("stat index of /%s not written: %s", dir_path, describe(exc))
            finally:
                del self._writing[dir_path]
                done.set()

    async def write(self, dir_path: str, *, relist: bool) -> bool:
        """Write the directory's index if it would tell more than the stored one.
        Returns whether it was written."""
        names = self.names
        key = index_key(names.config.prefix, dir_path)
        directory = names.table.at(dir_path)
        if key is None or directory is None or not directory.is_dir:
            return False
        # An index is read only for MIN_BATCH files or more (one file's HEAD costs what
        # the GET would): a directory of fewer is not worth its LIST and PutObject (git's
        # objects/xx/ directories, one file each).
        names_known = names.cached_names(dir_path)
        if names_known is not None and len(names_known) < MIN_BATCH:
            return False
        listing = self.index.last_listing(dir_path)
        if relist or listing is None:
            await names.list(directory)
            listing = self.index.last_listing(dir_path)
            if listing is None:
                return False
        complete, listed = listing
        table = names.table
        # The stored index matters for the files the mount does not know (and tells
        # whether anything is new); when it knows them all, it is not read.
        knows_all = complete and all(
            _known(table.at(join(dir_path, name)), info) for name, info in listed.items()
        )
        stored = None if knows_all else await self.index.entries(dir_path)
        body = IndexBody(dir_path)  # (encoded as it goes: no dict of every entry)
        new = stored is None
        for name, info in listed.items():
            entry = _entry(table.at(join(dir_path, name)), info)
            if entry is None and stored is not None:
                entry = stored.get(name)
                if entry is not None and not matches(entry, info):
                    entry = None
            if entry is not None:
                new = new or stored is not None and stored.get(name) != entry
                body.add(name, entry)
        if stored is not None and not complete:  # names past the listing's end: kept
            for name, entry in stored.items():
                if name not in body.names:
                    body.add(name, entry)
        self.index.written(dir_path)
        if len(body.names) < MIN_BATCH or not new:
            return False  # it would tell nothing new
        data = body.finish()
        await names.store.put_plain(key, data)
        self.index.remember(dir_path, data)  # (decoded if it is read)
        log.debug("stat index of /%s written: %d files", dir_path, len(body.names))
        return True


def _known(node: Node | None, listed: Listed) -> bool:
    """Whether the mount knows the metadata of the listed version of a file."""
    if (
        node is None
        or node.is_dir
        or not node.meta_known
        or node.written is not None
        or node.meta_dirty
        or node.meta_writing
        or node.unlinked
    ):
        return False
    etag, size, listed_mtime = listed
    # Metadata read within the second of its LastModified may predate a copy later in
    # that second (as in names._same_version): not recorded. A node written here and not
    # listed since, or HEADed as another version, is not either.
    return (node.etag == etag and node.size == size and node.settled
            and node.last_modified is not None
            and int(node.last_modified) == int(listed_mtime))


def _entry(node: Node | None, listed: Listed) -> Entry | None:
    """What the index says of a file whose metadata the mount knows for the listed
    version; None when it does not know it (or not for that version)."""
    if node is None or not _known(node, listed):
        return None
    etag, size, listed_mtime = listed
    if node.stored_meta is not None and node.stored_meta[0] == node.etag:
        metadata = owned(node.stored_meta[1])  # read from S3 (HEAD or index)
    else:
        metadata = encode(node.attrs)  # written by this mount: all of it, as sent
    head = node.head
    mtime = head.mtime if head is not None and head.etag == node.etag else int(listed_mtime)
    return [etag, size, listed_mtime, mtime, metadata]
