"""Which version a reader reads: readers of a node's version (s3/reader.py pins it), the
HEAD that confirms the version whose pages the kernel keeps before an open lets it keep
them, and the version a reader follows when the one it opened is gone before its first
byte. Used by fs/openfiles.py."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..config import MountConfig
from ..errors import describe
from ..s3.reader import ObjectReader
from ..write.upload import UploadShared
from .names import Names
from .node import Node

log = logging.getLogger(__name__)


class Versions:
    def __init__(self, config: MountConfig, names: Names, uploads: UploadShared,
                 invalidate_attributes: Callable[[int], None]) -> None:
        self.config = config
        self.names = names
        self.uploads = uploads  # (its nursery runs the readers' read-ahead)
        self.invalidate_attributes = invalidate_attributes  # the kernel forgets a size

    async def confirm(self, node: Node) -> None:
        """Make the node show the version S3 holds now (one HEAD). If S3 cannot tell,
        the kernel's pages are dropped: the reads will find out."""
        try:
            info = await self.names.head(self.names.file_key(node.path))
        except Exception as exc:
            log.info("open of %s: %s; its cached pages are dropped", node.path, describe(exc))
            node.cached_etag = ""
            return
        if info is None or info.etag == node.etag:
            return
        size = node.size
        self.names.file_node(node.path, info, tell_kernel=False)
        if node.size != size:
            self.invalidate_attributes(node.inode)

    def reader(self, node: Node, *, cached: bool = False) -> ObjectReader:
        """A reader of the node's version, which follows it if it is gone before its first
        byte (`_reopen`). `cached`: the kernel keeps pages of this version."""
        return ObjectReader(self.names.store, self.uploads.nursery,
                            self.names.file_key(node.path), node.size,
                            self.config.read_ahead, node.etag, lambda: self._reopen(node),
                            cached=cached)

    async def _reopen(self, node: Node) -> tuple[int, str] | None:
        """The version a reader opened is gone before it read a byte (replaced by another
        client after the listing the open relied on): read the one there now, and make
        the kernel ask for the file's new size if it grew. Not for a file deleted (or
        replaced by a rename) since: what its old name holds now is another file."""
        if node.unlinked:
            return None
        info = await self.names.head(self.names.file_key(node.path))
        if info is None:
            return None
        grown = info.size > node.size
        self.names.file_node(node.path, info, tell_kernel=False)
        node.cached_etag = info.etag  # the pages the kernel caches now are of this one
        if grown:  # (a shorter answer than asked shrinks the kernel's size by itself)
            self.invalidate_attributes(node.inode)
        return info.size, info.etag
