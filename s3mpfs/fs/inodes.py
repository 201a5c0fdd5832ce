"""The inode table: inode <-> path, attributes, lookup counts and forget.

Pure bookkeeping, no I/O. Paths are relative to the mount's prefix, without leading
or trailing slashes; the root is "". `fs/namespace.py` fills the table from S3.
"""

from __future__ import annotations

import re
import stat
import time
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from ..s3.metadata import SHARED_KEPT, Attributes

if TYPE_CHECKING:
    from ..objects import ObjectInfo
    from ..write.upload import Upload

ROOT_INODE = 1
_MD5_ETAG = re.compile('"[0-9a-f]{32}"')
_KNOWN, _SETTLED = 1, 2  # Node._meta's bits
_ETAGS: dict[int, int] = {}  # the ETags (as numbers) set lately, the oldest first


class _Rare:
    """What only nodes being written, edited, linked or HEADed have (most have none)."""

    __slots__ = ("edited", "stored_etag", "cached_etag", "meta_dirty", "meta_writing",
                 "upload", "committing", "symlink_target", "unlinked", "head",
                 "stored_meta")

    def __init__(self) -> None:
        for name, default in _RARE.items():
            setattr(self, name, default)


# Its version was stored by an in-place edit (random mode) through this mount (`edited`):
# readers open on the version before follow it, as on a local disk; a replacement (a
# streamed rewrite) they do not, so that no reader mixes two versions.
_RARE: dict[str, Any] = {
    "edited": False,
    # The version this mount's last commit of it stored: its writers' reads follow it even
    # once a listing has shown it (which sets last_modified).
    "stored_etag": "",
    "cached_etag": "",  # the version whose pages the kernel may hold
    "meta_dirty": False,  # attributes changed here and not yet stored in S3
    "meta_writing": False,  # a copy storing them is in flight
    "upload": None,  # the write in progress (an Upload), if any
    "committing": None,  # an upload being completed (close, fsync)
    "symlink_target": None,  # str, once read
    "unlinked": False,  # removed while open: st_nlink is 0
    "head": None,  # the object's last HEAD (ObjectInfo): what a new version keeps
    # (ETag, its user metadata) as read from S3 (HEAD or stat index): what the stat
    # index of its directory is written from (fs/statwriter.py)
    "stored_meta": None,
}


def _rare(name: str) -> Any:
    default = _RARE[name]

    def get(node: Node) -> Any:
        rare = node._rare
        return default if rare is None else getattr(rare, name)

    def put(node: Node, value: Any) -> None:
        usual = value is default or value == default and type(value) is type(default)
        if node._rare is None:
            if usual:
                return
            node._rare = _Rare()
        setattr(node._rare, name, value)
        if usual and all(getattr(node._rare, n) is d or getattr(node._rare, n) == d
                         for n, d in _RARE.items()):
            node._rare = None  # back to the usual: (the head of a file HEADed long ago)

    return property(get, put)


class Node:
    """One per name the kernel holds (a million after `ls -lR` of a million entries):
    slots, the fields few nodes use in one `_Rare` made on first use, and identity for
    equality."""

    __slots__ = ("inode", "path", "attrs", "size", "_etag", "last_modified", "_meta",
                 "lookups", "handles", "_rare")

    def __init__(self, inode: int, path: str, attrs: Attributes, *,
                 meta_known: bool = False, lookups: int = 0) -> None:
        self.inode = inode
        self.path = path
        self.attrs = attrs
        self.size = 0
        self._etag: int | str = ""
        self.last_modified: float | None = None  # None: we wrote it (trust the ETag alone)
        self._meta = _KNOWN if meta_known else 0  # meta_known and settled, one slot
        self.lookups = lookups
        self.handles = 0  # open directory handles whose snapshot lists it
        self._rare: _Rare | None = None

    if TYPE_CHECKING:
        edited: bool
        stored_etag: str
        cached_etag: str
        meta_dirty: bool
        meta_writing: bool
        upload: Upload | None
        committing: Upload | None
        symlink_target: str | None
        unlinked: bool
        head: ObjectInfo | None
        stored_meta: tuple[str, dict[str, str]] | None
    else:
        edited = _rare("edited")
        stored_etag = _rare("stored_etag")
        cached_etag = _rare("cached_etag")
        meta_dirty = _rare("meta_dirty")
        meta_writing = _rare("meta_writing")
        upload = _rare("upload")
        committing = _rare("committing")
        symlink_target = _rare("symlink_target")
        unlinked = _rare("unlinked")
        head = _rare("head")
        stored_meta = _rare("stored_meta")

    def copied(self, source: str, etag: str) -> None:
        """This mount stored the node's version `source` again, as `etag` (the copy of a
        rename, or of an attribute change): the node shows that copy, which this mount
        wrote. If `source` is what this mount's last commit of the file stored, so is
        the copy (`stored_etag`): the file's writers go on following it once a listing
        shows it (a copy of a multipart version has an ETag of its own), and never read
        on from a version before it."""
        if self.stored_etag and self.stored_etag == source:
            self.stored_etag = etag
        self.etag, self.last_modified = etag, None

    @property
    def meta_known(self) -> bool:
        """The attributes came from the object's headers (HEAD, stat index), or were
        set here."""
        return bool(self._meta & _KNOWN)

    @meta_known.setter
    def meta_known(self, known: bool) -> None:
        self._meta = self._meta | _KNOWN if known else self._meta & ~_KNOWN

    @property
    def settled(self) -> bool:
        """The cached metadata was read from S3 after the second of last_modified (when
        it was read is kept for a moment only: InodeTable.read_lately)."""
        return bool(self._meta & _SETTLED)

    @settled.setter
    def settled(self, settled: bool) -> None:
        self._meta = self._meta | _SETTLED if settled else self._meta & ~_SETTLED

    @property
    def etag(self) -> str:
        """The ETag of the version cached, as S3 gives it ("" if none)."""
        etag = self._etag
        return etag if type(etag) is str else f'"{etag:032x}"'

    @etag.setter
    def etag(self, etag: str) -> None:
        # A plain object's ETag, the quoted hex MD5, is kept as the number it spells:
        # 48 bytes instead of 83, for every entry held (and one number for equal ones
        # seen lately: every empty object has the MD5 of nothing). Other forms: as is.
        if len(etag) == 34 and _MD5_ETAG.fullmatch(etag):
            number = int(etag[1:33], 16)
            shared = _ETAGS.get(number)
            if shared is None:
                if len(_ETAGS) >= SHARED_KEPT:
                    del _ETAGS[next(iter(_ETAGS))]
                shared = _ETAGS[number] = number
            self._etag = shared
        else:
            self._etag = etag

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


class _ByInode:
    """inode -> node, as lists of CHUNK slots by inode number: 8 bytes per node instead
    of a dict entry's 42 to 60 (a million entries held). Inode numbers only grow, so
    the chunks of old ones empty out and go as their nodes are forgotten."""

    __slots__ = ("_chunks", "_len")
    CHUNK = 1024

    def __init__(self) -> None:
        # chunk number -> [nodes in use in it, then CHUNK slots]
        self._chunks: dict[int, list[Any]] = {}
        self._len = 0

    def get(self, inode: int) -> Node | None:
        chunk = self._chunks.get(inode // self.CHUNK)
        return None if chunk is None else chunk[1 + inode % self.CHUNK]

    def __setitem__(self, inode: int, node: Node) -> None:
        number, slot = divmod(inode, self.CHUNK)
        chunk = self._chunks.get(number)
        if chunk is None:
            chunk = self._chunks[number] = [0] + [None] * self.CHUNK
        if chunk[1 + slot] is None:
            chunk[0] += 1
            self._len += 1
        chunk[1 + slot] = node

    def pop(self, inode: int) -> Node | None:
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

    def values(self) -> list[Node]:
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
        self._by_inode = _ByInode()
        self._by_inode[ROOT_INODE] = root
        self._by_path: dict[str, Node] = {"": root}
        self._read_at: dict[int, float] = {}  # inode -> when its metadata was read, lately

    def get(self, inode: int) -> Node:
        node = self._by_inode.get(inode)
        if node is None:
            raise NotFound(f"inode {inode}")
        return node

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
        return node

    def detach(self, path: str) -> None:
        """Forget the path (unlinked or renamed away); the inode lives until forgotten."""
        node = self._by_path.pop(path, None)
        if node is not None and node.lookups <= 0 and node.written is None:
            self._by_inode.pop(node.inode)

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
        """The kernel took a reference to the node (lookup, readdirplus, create)."""
        node.lookups += 1
        if self._by_inode.get(node.inode) is not node:  # dropped meanwhile (drop_unused)
            self._by_inode[node.inode] = node  # (its path stays with whatever holds it now)

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
        node.lookups -= count
        if node.lookups <= 0 and node.written is None:  # (a commit running keeps it)
            self._by_inode.pop(inode)
            if self._by_path.get(node.path) is node:
                del self._by_path[node.path]
