"""The inode table: inode <-> path, attributes, lookup counts and forget.

Pure bookkeeping, no I/O. Paths are relative to the mount's prefix, without leading
or trailing slashes; the root is "". `fs/namespace.py` fills the table from S3.
"""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import NotFound
from ..s3.metadata import Attributes

if TYPE_CHECKING:
    from ..objects import ObjectInfo
    from ..write.upload import Upload

ROOT_INODE = 1


@dataclass
class Node:
    inode: int
    path: str
    attrs: Attributes
    size: int = 0
    etag: str = ""
    last_modified: float | None = None  # None: we wrote it (trust the ETag alone)
    # Its version was stored by an in-place edit (random mode) through this mount: readers
    # open on the version before follow it, as on a local disk; a replacement (a streamed
    # rewrite) they do not, so that no reader mixes two versions.
    edited: bool = False
    cached_etag: str = ""  # the version whose pages the kernel may hold
    meta_fetched: float = 0.0  # wall-clock time the cached metadata was read from S3
    storage_class: str = "STANDARD"
    meta_known: bool = False  # attributes came from the object's headers, not defaults
    meta_dirty: bool = False  # attributes changed here and not yet stored in S3
    meta_writing: bool = False  # a copy storing them is in flight
    lookups: int = 0
    upload: Upload | None = None  # the write in progress, if any
    committing: Upload | None = None  # an upload being completed (close, fsync)
    symlink_target: str | None = None
    unlinked: bool = False  # removed while open: st_nlink is 0
    head: ObjectInfo | None = None  # the object's last HEAD: what a new version keeps
    stored_meta: tuple[str, dict[str, str]] | None = None  # (ETag, its user metadata)
    refreshed: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def parent_path(self) -> str:
        return self.path.rpartition("/")[0]

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attrs.mode)

    @property
    def written(self) -> Upload | None:
        """The file's state while it is being written or committed: what every
        descriptor, stat and listing sees (S3 holds the previous version until then)."""
        return self.upload if self.upload is not None else self.committing

    @property
    def current_size(self) -> int:
        """The size written so far while uploading or committing, else the object's."""
        written = self.written
        return written.size if written is not None else self.size


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class InodeTable:
    def __init__(self, root_attrs: Attributes) -> None:
        self._next = ROOT_INODE + 1
        root = Node(ROOT_INODE, "", root_attrs, meta_known=True, lookups=1)
        self._by_inode: dict[int, Node] = {ROOT_INODE: root}
        self._by_path: dict[str, Node] = {"": root}

    def get(self, inode: int) -> Node:
        try:
            return self._by_inode[inode]
        except KeyError:
            raise NotFound(f"inode {inode}") from None

    def at(self, path: str) -> Node | None:
        return self._by_path.get(path)

    def nodes(self) -> list[Node]:
        return list(self._by_inode.values())

    def put(self, path: str, attrs: Attributes) -> Node:
        """The node at `path`, created or with its attributes replaced. A path whose file
        type changes (a listing showed a file; its HEAD says symlink; another client put
        a directory where a file was) gets a new inode: the kernel refuses a known inode
        whose type changes (EIO), while a new inode number makes it look the name up."""
        node = self._by_path.get(path)
        if node is not None and stat.S_IFMT(node.attrs.mode) != stat.S_IFMT(attrs.mode) \
                and node.upload is None:
            self.detach(path)
            node = None
        if node is None:
            node = Node(self._next, path, attrs)
            self._next += 1
            self._by_inode[node.inode] = node
            self._by_path[path] = node
        else:
            node.attrs = attrs
        node.refreshed = time.monotonic()
        return node

    def detach(self, path: str) -> None:
        """Forget the path (unlinked or renamed away); the inode lives until forgotten."""
        node = self._by_path.pop(path, None)
        if node is not None and node.lookups <= 0 and node.upload is None:
            self._by_inode.pop(node.inode, None)

    def move(self, old: str, new: str) -> None:
        """Rename a path and everything below it."""
        self.detach(new)
        moved = [p for p in self._by_path if p == old or p.startswith(old + "/")]
        for path in moved:
            node = self._by_path.pop(path)
            node.path = new + path[len(old):]
            self.detach(node.path)
            self._by_path[node.path] = node

    def remember(self, node: Node) -> None:
        node.lookups += 1

    def forget(self, inode: int, count: int) -> None:
        node = self._by_inode.get(inode)
        if node is None or inode == ROOT_INODE:
            return
        node.lookups -= count
        if node.lookups <= 0 and node.upload is None:
            del self._by_inode[inode]
            if self._by_path.get(node.path) is node:
                del self._by_path[node.path]
