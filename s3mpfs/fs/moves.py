"""Renames: moving a file (`move_file`) or a directory's objects (`move_directory`), and
what a rename means for the state of an open file (issue 15's one state per file).

A rename moves the file's stored version (copy, then delete), and everything of the
file's state that names a key follows it here, in one place: the upload's key, the version
it is built on (whose bytes it copies and whose ETag is its commit's condition: If-Match,
or a HEAD right before the commit), and the descriptors reading that version. An upload
that sent parts under the old key cannot follow (a multipart upload cannot change its
key): `move_file` commits it there first, as fsync would, and then moves it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import trio

from ..errors import Unsupported
from ..s3.metadata import encode
from ..s3.store import DIRECTORY_TYPE

if TYPE_CHECKING:
    from ..objects import ObjectInfo
    from ..s3.copying import Copier
    from ..s3.reader import ObjectReader
    from .names import Names
    from .node import Node


class _Handle(Protocol):
    node: Node
    reader: ObjectReader | None


class _OpenFiles(Protocol):
    invalidate_attributes: Callable[[int], None]

    async def store_now(self, node: Node) -> None: ...

    def moved(self, node: Node, key: str, source: ObjectInfo | None,
              copy: ObjectInfo | None, *, only_new: bool) -> None: ...


class RenameGate:
    """Which files a rename is moving now: their reads, writes and commits wait for it
    to end (fs/openfiles.py), since they would reach a key being moved."""

    def __init__(self) -> None:
        self._held: dict[int, trio.Event] = {}  # inode -> set when its rename ends

    def holds(self, node: Node) -> bool:
        return node.inode in self._held

    async def ended(self, node: Node) -> None:
        while (event := self._held.get(node.inode)) is not None:
            await event.wait()

    @asynccontextmanager
    async def holding(self, nodes: list[Node]) -> AsyncIterator[None]:
        """Hold these files for one rename, once any other rename of them ended."""
        events: dict[int, trio.Event] = {}
        try:
            for node in nodes:
                if node.inode not in events:
                    await self.ended(node)
                    events[node.inode] = self._held[node.inode] = trio.Event()
            yield
        finally:
            for inode, event in events.items():
                del self._held[inode]
                event.set()


async def move_file(names: Names, copier: Copier, files: _OpenFiles, node: Node,
                    new_path: str, *, replaced: bool, metadata: dict[str, str] | None) -> None:
    """Move a file, open or not, and its state (fs/namespace.py holds its reads, writes
    and commits meanwhile, and has ended the state of a file it replaces, `replaced`).
    A file being written is stored under the new name at its commit: what it is built
    on moves now, with the upload's key and condition (`follow_move`); one that sent
    parts under the old name (a multipart upload cannot change its key) is committed
    there first, as fsync would, then moved."""
    old_key, new_key = names.file_key(node.path), names.file_key(new_path)
    if node.upload is not None and not node.upload.retargetable:
        await files.store_now(node)
        if node.upload is not None and not node.upload.retargetable:
            raise Unsupported(f"{node.path} is being written and has parts uploaded "
                              "that cannot be committed now; rename it after close()")
    upload = node.upload
    if upload is None or upload.built_on is not None:  # a stored version moves
        source, copy = await copier.move_version(old_key, new_key, metadata)
        if upload is None and source.etag != node.etag and source.size != node.size:
            # Another client stored a new version since this mount's view of the file:
            # that version moved, and the file takes its size with its ETag (else the
            # next append or read would take that many bytes of it, and no more).
            node.size = source.size
            files.invalidate_attributes(node.inode)
        node.copied(source.etag, copy.etag)
        files.moved(node, new_key, source, copy, only_new=False)
        return
    # A new or emptied file being written: nothing stored of it moves. A version at
    # either name is gone now (the old name's, truncated or empty; the one it
    # replaces), and its commit creates the object under the new name, even
    # unchanged (If-None-Match).
    if node.etag:
        await names.store.delete(old_key)
        node.etag, node.last_modified = "", None
    if replaced:
        await names.store.delete(new_key)
    upload.must_commit = True
    files.moved(node, new_key, None, None, only_new=True)


def follow_move(node: Node, handles: list[_Handle], key: str, source: ObjectInfo | None,
                copy: ObjectInfo | None, *, only_new: bool) -> None:
    """`node` was renamed to `key`, its stored version `source` moved to `copy` (None:
    nothing stored was moved). `only_new`: nothing is stored under `key` now, so the
    commit must not replace anything (If-None-Match)."""
    if source is not None and copy is not None:
        for handle in handles:
            reader = handle.reader if handle.node is node else None
            if reader is not None and (reader.key, reader.etag) == (source.key, source.etag):
                reader.retarget(copy.key, copy.etag)  # the same bytes, read from the copy
        if node.cached_etag == source.etag:  # the kernel's pages: the same bytes too
            node.cached_etag = copy.etag
    upload = node.upload
    if upload is None:
        return
    built_on, stored = upload.built_on, None
    if built_on is not None:  # moved with the file, unless another client changed it
        same = source is not None and copy is not None and source.etag == built_on.etag
        stored = copy if same else replace(built_on, key=key)  # (then its commit fails)
    upload.retarget(key, only_new=only_new, stored=stored)


async def move_directory(names: Names, copier: Copier, concurrency: int, node: Node,
                         new_path: str, own: dict[str, str]) -> None:
    """Move every object under the directory's prefix, in parallel. Not atomic: an
    interruption leaves some objects under each name, none lost. Attribute changes
    still pending for files inside travel with their copies; `own`, the metadata
    entries of the directory's marker to replace (its new ctime), with the marker."""
    old_prefix, new_prefix = names.dir_key(node.path), names.dir_key(new_path)
    listing = await names.store.list(old_prefix, delimiter=None)
    limiter = trio.CapacityLimiter(concurrency)

    async def move(info: ObjectInfo) -> None:
        relative = info.key[len(old_prefix):]
        inside = names.table.at(f"{node.path}/{relative}".rstrip("/"))
        metadata = None
        if inside is not None and (inside.meta_dirty or inside.meta_writing):
            # pending attributes (the copy must not read the object's older ones)
            metadata, inside.meta_dirty = encode(inside.attrs), False
        if info.key == old_prefix:
            metadata = own
        async with limiter:
            await copier.move(info.key, new_prefix + info.key[len(old_prefix):], metadata)

    async with trio.open_nursery() as nursery:
        for info in listing.objects:
            nursery.start_soon(move, info)
    if not any(info.key == old_prefix for info in listing.objects):
        await names.store.put_object(new_prefix, b"", encode(node.attrs),  # keep the dir
                                     content_type=DIRECTORY_TYPE)
