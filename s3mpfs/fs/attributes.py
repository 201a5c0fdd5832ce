"""Storing attributes (mode, owner, times) of closed files and directories in S3.

A file's attributes live in its object's user metadata, so changing them on a closed
file rewrites the object with a server-side copy onto itself (`s3/copying.py`); a
directory's live in its `dir/` marker, which is simply written again. Tools set mtime,
owner and mode one call at a time (and rsync renames right after), so a change waits
METADATA_DELAY to be coalesced with the next ones into one copy, or carried by the
rename. A failed store is retried while it stays pending, then given up (at once when
the server does not implement the copy: no retry would change that): the mount then
shows what S3 holds again, never attributes S3 does not have.
"""

from __future__ import annotations

import logging

import trio

from ..errors import describe, root_cause
from ..s3.copying import Copier
from ..s3.gaps import not_implemented
from ..s3.metadata import encode
from ..s3.store import DIRECTORY_TYPE, S3Store
from .names import Names
from .node import Node

log = logging.getLogger(__name__)

METADATA_DELAY = 0.5  # seconds a closed file's attribute change waits to be coalesced
METADATA_RETRIES = (1.0, 4.0, 15.0)  # waits before storing attributes again after a failure


class AttributeWriter:
    def __init__(self, store: S3Store, names: Names, copier: Copier,
                 nursery: trio.Nursery) -> None:
        self.store = store
        self.names = names
        self.copier = copier
        self.nursery = nursery
        self._storing: dict[int, trio.Event] = {}  # inode -> set when its store ends

    def storing(self, node: Node) -> bool:
        return node.inode in self._storing

    async def settled(self, node: Node) -> None:
        """Wait until no request storing the node's attributes is in flight: a copy of a
        file onto itself (or a marker written again) that ends after an unlink, rmdir or
        rename of it would bring the object back, or stamp old attributes on what was
        renamed over it. New stores start only while `meta_dirty`, which those clear
        first."""
        while (ended := self._storing.get(node.inode)) is not None:
            await ended.wait()

    def encode_now(self, node: Node) -> dict[str, str]:
        """The node's attributes for an object being written: what was pending goes in."""
        node.meta_dirty = False
        return encode(node.attrs)

    def changed(self, node: Node) -> None:
        """The node's attributes changed: a file being written carries them in its upload
        (or stores them right after it); others store them shortly. The root has none."""
        if node.upload is not None:
            node.meta_dirty = True
        elif node.path:
            self.write_soon(node)

    def write_soon(self, node: Node) -> None:
        """Store a closed node's attributes shortly, coalesced with later changes."""
        node.meta_dirty = True
        self.nursery.start_soon(self._write_later, node)

    async def _write_later(self, node: Node) -> None:
        await trio.sleep(METADATA_DELAY)
        await self.write(node)

    async def write_pending(self) -> None:
        """Store every deferred attribute change now (at unmount)."""
        async with trio.open_nursery() as nursery:
            for node in self.names.table.nodes():
                if node.meta_dirty:
                    nursery.start_soon(self.write, node)

    async def write(self, node: Node) -> None:
        """Store a closed file's (or directory's) attributes. One task at a time per
        node stores its newest attributes; a failure is retried a few times while they
        stay pending, then the mount shows what S3 holds again."""
        if node.meta_writing or not node.meta_dirty:
            return  # being stored (the newest go in), or stored already
        if node.written is not None:  # a copy now would change the version it is built on
            log.debug("attributes of %s go into its upload or commit", node.path)
            return
        node.meta_writing = True
        try:
            problem = ""
            for wait in (0.0, *METADATA_RETRIES):
                await trio.sleep(wait)
                if not node.meta_dirty or node.written is not None \
                        or self.names.table.at(node.path) is not node:
                    return  # carried by a rename, an upload or a commit, or deleted
                node.meta_dirty = False
                ended = self._storing[node.inode] = trio.Event()
                try:
                    await self._store(node)
                except Exception as exc:
                    node.meta_dirty = True
                    problem = describe(root_cause(exc))
                    log.warning("could not store the attributes of %s (%s)", node.path,
                                problem)
                    if not_implemented(root_cause(exc)):
                        break  # a refusal, not a failure: asking again changes nothing
                    continue
                finally:
                    del self._storing[node.inode]
                    ended.set()
                if not node.meta_dirty:
                    return  # stored (a change made meanwhile goes in after the next wait)
            if node.meta_dirty and self.names.table.at(node.path) is node:
                node.meta_dirty, node.meta_known, node.etag = False, False, ""
                log.error("could not store the attributes of %s: %s; gave up, showing what "
                          "S3 holds", node.path, problem)
        finally:
            node.meta_writing = False  # (until now, listings of the node were not heeded)
            log.debug("attributes of %s no longer being stored", node.path)

    async def _store(self, node: Node) -> None:
        if node.is_dir:  # its marker object carries them, and keeps what else it had
            key = self.names.dir_key(node.path)
            marker = node.head or await self.names.head(key)
            await self.store.put_object(key, b"", encode(node.attrs), replacing=marker,
                                        content_type=DIRECTORY_TYPE)
            node.meta_known = True
            return
        key = self.names.file_key(node.path)
        source = node.etag
        copied = await self.copier.copy(key, key, encode(node.attrs))
        node.copied(source, copied.etag)
        self.names.stat_index.changed(node.parent_path)
