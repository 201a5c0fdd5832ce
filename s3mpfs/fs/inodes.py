"""The inode table: inode <-> path, attributes, lookup counts and forget.

Pure bookkeeping, no I/O. Paths are relative to the mount's prefix, without leading
or trailing slashes; the root is "". `fs/namespace.py` fills the table from S3.

A node that only the table holds (no handle, no write, nothing rare: what most of a
million entries after `ls -lR` are) is kept packed, as one bytes row by its path, and
made a `Node` again when asked for. Whether anything else holds it is what CPython's
reference count says, so no code can see the packing: a node held anywhere (a handle,
a task between two awaits, a list) stays the one object for its inode.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import sys
import time
from typing import Any

from ..errors import NotFound
from ..s3.metadata import Attributes, shared_attributes
from .node import Node, shared_etag

ROOT_INODE = 1
# inode, size, LastModified (NaN: we wrote it), mtime, atime, ctime, mode, uid, gid,
# rdev, lookups, the meta bits, the ETag's kind; then the ETag (16 bytes for a plain
# one's number, else its text)
_ROW = struct.Struct("<qqdqqqIIIQiBB")
_NO_ETAG, _MD5, _TEXT = 0, 1, 2
# sys.getrefcount of a node only the table holds, counted in pack_idle: its inode
# slot, its path entry, the loop's variable and getrefcount's own argument
_ONLY_THE_TABLE = 4
# Nodes made or unpacked since the last pass, at least, before the next. The test suite
# sets S3MPFS_PACK_AFTER=1, so that every mount it runs packs what it can all the time.
_SET_PACK_AFTER = os.environ.get("S3MPFS_PACK_AFTER", "")
_PACK_AFTER = max(1, int(_SET_PACK_AFTER)) if _SET_PACK_AFTER.isdigit() else 4096


def _row(node: Node) -> bytes | None:
    """The node as a packed row, or None if it has what a row does not hold."""
    attrs, etag, modified = node.attrs, node._etag, node.last_modified
    if node._rare is not None or node.handles or attrs.xattrs:
        return None
    if type(etag) is int:
        kind, text = _MD5, etag.to_bytes(16, "little")
    else:
        kind, text = (_TEXT, etag.encode()) if etag else (_NO_ETAG, b"")
    try:
        return _ROW.pack(node.inode, node.size, math.nan if modified is None else modified,
                         attrs.mtime, attrs.atime, attrs.ctime, attrs.mode, attrs.uid,
                         attrs.gid, attrs.rdev, node.lookups, node._meta, kind) + text
    except struct.error:  # a value out of the row's range: stays a node
        return None


def _node(path: str, row: bytes) -> Node:
    (inode, size, modified, mtime, atime, ctime, mode, uid, gid, rdev, lookups, meta,
     kind) = _ROW.unpack_from(row)
    atime = mtime if atime == mtime else atime  # one int object for equal times
    ctime = mtime if ctime == mtime else ctime
    node = Node(inode, path, shared_attributes(mode, uid, gid, mtime, atime, ctime, rdev),
                lookups=lookups)
    node.size, node._meta = size, meta
    node.last_modified = None if math.isnan(modified) else modified
    text = row[_ROW.size:]
    node._etag = shared_etag(int.from_bytes(text, "little")) if kind == _MD5 \
        else text.decode()
    return node


class _ByInode:
    """inode -> node (or a packed node's path), as lists of CHUNK slots by inode number:
    8 bytes per node instead of a dict entry's 42 to 60 (a million entries held). Inode
    numbers only grow, so the chunks of old ones empty out and go as their nodes are
    forgotten."""

    __slots__ = ("_chunks", "_len")
    CHUNK = 1024

    def __init__(self) -> None:
        # chunk number -> [nodes in use in it, then CHUNK slots]
        self._chunks: dict[int, list[Any]] = {}
        self._len = 0

    def get(self, inode: int) -> Node | str | None:
        chunk = self._chunks.get(inode // self.CHUNK)
        return None if chunk is None else chunk[1 + inode % self.CHUNK]

    def __setitem__(self, inode: int, node: Node | str) -> None:
        number, slot = divmod(inode, self.CHUNK)
        chunk = self._chunks.get(number)
        if chunk is None:
            chunk = self._chunks[number] = [0] + [None] * self.CHUNK
        if chunk[1 + slot] is None:
            chunk[0] += 1
            self._len += 1
        chunk[1 + slot] = node

    def pop(self, inode: int) -> Node | str | None:
        number, slot = divmod(inode, self.CHUNK)
        chunk = self._chunks.get(number)
        node = None if chunk is None else chunk[1 + slot]
        if chunk is not None and node is not None:
            chunk[1 + slot] = None
            chunk[0] -= 1
            self._len -= 1
            if not chunk[0]:
                del self._chunks[number]
        return node

    def values(self) -> list[Node | str]:
        return [node for chunk in self._chunks.values() for node in chunk[1:]
                if node is not None]

    def __len__(self) -> int:
        return self._len


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class InodeTable:
    def __init__(self, root_attrs: Attributes) -> None:
        self._next = ROOT_INODE + 1
        root = Node(ROOT_INODE, "", root_attrs, meta_known=True, lookups=1)
        # inode -> its node, or the path of a packed one (its row is in _by_path)
        self._by_inode = _ByInode()
        self._by_inode[ROOT_INODE] = root
        self._by_path: dict[str, Node | bytes] = {"": root}
        self._read_at: dict[int, float] = {}  # inode -> when its metadata was read, lately
        self._unpacked: dict[int, None] = {}  # nodes made or unpacked since the last pass
        self._pack_after = _PACK_AFTER

    def get(self, inode: int) -> Node:
        node = self._by_inode.get(inode)
        if node is None:
            raise NotFound(f"inode {inode}")
        return self._unpack(node) if type(node) is str else node

    def at(self, path: str) -> Node | None:
        node = self._by_path.get(path)
        return self._unpack(path) if type(node) is bytes else node

    def nodes(self) -> list[Node]:
        """The nodes held as objects: every node with more than a row holds (a write, a
        handle, attributes not stored yet) is one."""
        return [node for node in self._by_inode.values() if type(node) is Node]

    def packed(self) -> int:
        """How many nodes are packed rows now."""
        return sum(1 for node in self._by_inode.values() if type(node) is str)

    def put(self, path: str, attrs: Attributes) -> Node:
        """The node at `path`, created or with its attributes replaced. A path whose file
        type changes (a listing showed a file; its HEAD says symlink; another client put
        a directory where a file was) gets a new inode: the kernel refuses a known inode
        whose type changes (EIO), while a new inode number makes it look the name up."""
        node = self.at(path)
        if node is not None and stat.S_IFMT(node.attrs.mode) != stat.S_IFMT(attrs.mode) \
                and node.upload is None:
            self.detach(path)
            node = None
        if node is None:
            node = Node(self._next, path, attrs)
            self._next += 1
            self._by_inode[node.inode] = node
            self._by_path[path] = node
            self._made(node.inode)
        else:
            node.attrs = attrs
        return node

    def detach(self, path: str) -> None:
        """Forget the path (unlinked or renamed away); the inode lives until forgotten."""
        node = self.at(path)  # (a node that lives on without its path is not a row)
        if node is None:
            return
        del self._by_path[path]
        if node.lookups <= 0 and node.written is None:
            self._by_inode.pop(node.inode)

    def move(self, old: str, new: str) -> None:
        """Rename a path and everything below it."""
        self.detach(new)
        moved = [p for p in self._by_path if p == old or p.startswith(old + "/")]
        for path in moved:
            node = self.at(path)
            assert node is not None
            del self._by_path[path]
            node.path = new + path[len(old):]
            self.detach(node.path)
            self._by_path[node.path] = node

    def remember(self, node: Node) -> None:
        """The kernel took a reference to the node (lookup, readdirplus, create)."""
        node.lookups += 1
        if self._by_inode.get(node.inode) is not node:  # dropped meanwhile (drop_unused)
            self._by_inode[node.inode] = node  # (its path stays with whatever holds it now)
            self._made(node.inode)

    def drop_unused(self, node: Node) -> bool:
        """Drop a node the kernel holds no reference to and nothing is pending on (what a
        listing made of names never handed to the kernel): True if dropped."""
        if node.lookups > 0 or node.handles > 0 or node.inode == ROOT_INODE \
                or node.written is not None or node.meta_dirty or node.meta_writing:
            return False
        if self._by_inode.get(node.inode) is node:
            self._by_inode.pop(node.inode)
        if self._by_path.get(node.path) is node:
            del self._by_path[node.path]
        return True

    def __len__(self) -> int:
        return len(self._by_inode)

    def read(self, node: Node, read_at: float, ttl: float) -> None:
        """The node's metadata was read from S3 at `read_at` (wall clock): kept `ttl`
        seconds, not on the node (a float per entry held)."""
        now = time.time()
        recent = self._read_at
        recent.pop(node.inode, None)
        if now - read_at < ttl:
            recent[node.inode] = read_at
        while recent:  # the oldest first
            first = next(iter(recent))
            if now - recent[first] < ttl:
                break
            del recent[first]

    def read_lately(self, node: Node, ttl: float) -> bool:
        """Whether the node's metadata was read from S3 less than `ttl` seconds ago."""
        read_at = self._read_at.get(node.inode)
        return read_at is not None and time.time() - read_at < ttl

    def forget(self, inode: int, count: int) -> None:
        node = self._by_inode.get(inode)
        if node is None or inode == ROOT_INODE:
            return
        if type(node) is str:  # packed: count down in the row (nothing pending on it)
            self._forget_packed(node, count)
            return
        node.lookups -= count
        if node.lookups <= 0 and node.written is None:  # (a commit running keeps it)
            self._by_inode.pop(inode)
            if self._by_path.get(node.path) is node:
                del self._by_path[node.path]

    # -- packed nodes ------------------------------------------------------------------

    def _forget_packed(self, path: str, count: int) -> None:
        row = self._by_path[path]
        assert type(row) is bytes
        fields = _ROW.unpack_from(row)
        inode, lookups = fields[0], fields[10] - count
        if lookups <= 0:
            self._by_inode.pop(inode)
            del self._by_path[path]
        else:
            self._by_path[path] = _with_lookups(row, lookups)

    def _unpack(self, path: str) -> Node:
        row = self._by_path[path]
        assert type(row) is bytes
        node = _node(path, row)
        self._by_path[path] = node
        self._by_inode[node.inode] = node
        self._made(node.inode)
        return node

    def _made(self, inode: int) -> None:
        """A node became an object: pack the idle ones once enough did."""
        self._unpacked[inode] = None
        if len(self._unpacked) >= self._pack_after:
            self.pack_idle()

    def handle_ended(self, listed: int) -> None:
        """A directory handle that listed `listed` nodes ended, and holds none of them
        any more: pack now if that many may have become idle (a directory of 100,000
        read by `ls -lR`), not once as many more are made."""
        if listed >= _PACK_AFTER:
            self.pack_idle()

    def pack_idle(self) -> None:
        """Pack every node made or unpacked lately that only the table holds now."""
        still: dict[int, None] = {}
        for inode in self._unpacked:
            node = self._by_inode.get(inode)
            if type(node) is not Node:
                continue  # forgotten, or packed already
            if self._by_path.get(node.path) is not node \
                    or sys.getrefcount(node) != _ONLY_THE_TABLE:
                still[inode] = None  # held by more than the table: may change
                continue
            row = _row(node)
            if row is None:
                still[inode] = None
                continue
            self._by_path[node.path] = row
            self._by_inode[inode] = node.path
        self._unpacked = still
        # the next pass once half as many again are new: each node is looked at a
        # bounded number of times, however many stay held
        self._pack_after = len(still) + max(_PACK_AFTER, len(still) // 2)


def _with_lookups(row: bytes, lookups: int) -> bytes:
    changed = bytearray(row)
    _LOOKUPS.pack_into(changed, _LOOKUPS_AT, lookups)
    return bytes(changed)


_LOOKUPS = struct.Struct("<i")
_LOOKUPS_AT = struct.calcsize("<qqdqqqIIIQ")
