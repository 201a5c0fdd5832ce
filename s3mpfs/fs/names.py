"""What the bucket holds, as the mount has seen it: names, listings and metadata.

Directories are common prefixes and `dir/` markers; files are objects. Listings come
from ListObjectsV2 and answer lookups for LISTING_TTL seconds; the metadata that
listings lack is fetched with HEAD once per object version, in parallel, and cached in
the inode table. Nothing here writes to S3: it only reads and remembers.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ..config import MountConfig
from ..errors import InvalidName, NameTooLong, NotADirectory, NotFound
from ..objects import ObjectInfo
from ..s3.metadata import Attributes, Defaults, decode
from ..s3.store import S3Store, is_not_found
from ..write.registry import REGISTRY_DIR
from .inodes import InodeTable, Node, join

MAX_NAME = 255  # bytes, what POSIX tools expect of one path component
MAX_KEY = 1024  # bytes, S3's key length limit
LISTING_TTL = 2.0  # seconds a directory listing answers lookups without a request
# A directory this mount created started empty, and every name added through the mount is
# recorded in its listing: lookups trust that record until the directory has had no change
# through the mount for this long (cp -r into it makes no LIST, no HEAD before each PUT).
OWN_LISTING_TTL = 30.0
SMALL_DIRECTORY = 1000  # a lookup lists a directory this small instead of HEADing a name
METADATA_CONCURRENCY = 64  # HEADs in flight when a listing fetches missing metadata


@dataclass
class _Listing:
    taken: float
    names: set[str] = field(default_factory=set)
    complete: bool = True
    ours: bool = False  # made by this mount's mkdir: complete as long as it is in use
    # When this mount last listed or changed the directory: a name absent from `names` is
    # trusted absent only shortly after (config.negative_ttl), while the mount is busy in
    # the directory (cp -r, tar, rsync). Later, another client's new object is looked for.
    touched: float = 0.0

    def __post_init__(self) -> None:
        self.touched = self.touched or self.taken


class Names:
    def __init__(self, config: MountConfig, store: S3Store,
                 being_written: Callable[[str], list[Node]]) -> None:
        """`being_written(dir_path)`: the files of that directory being written now,
        which S3 does not list yet."""
        self.config = config
        self.store = store
        self.being_written = being_written
        self.defaults = Defaults(config.uid, config.gid, config.file_mode, config.dir_mode)
        now = time.time()
        self.table = InodeTable(Attributes(stat.S_IFDIR | config.dir_mode, config.uid,
                                           config.gid, now))
        self.mounted_at = now  # the mtime of directories that have no marker object
        self._listings: dict[str, _Listing] = {}
        self._created_dirs: set[str] = set()  # made by this mount: it knows every name

    # -- keys --------------------------------------------------------------------------

    def file_key(self, path: str) -> str:
        return self.config.prefix + path

    def dir_key(self, path: str) -> str:
        return self.config.prefix + path + "/" if path else self.config.prefix

    def key(self, node: Node) -> str:
        return self.dir_key(node.path) if node.is_dir else self.file_key(node.path)

    def child_path(self, parent: Node, name: str) -> str:
        """The path of `name` in `parent`, if S3 and POSIX can both hold it."""
        if not parent.is_dir:
            raise NotADirectory(parent.path)
        try:
            encoded = name.encode()
        except UnicodeEncodeError:
            raise InvalidName(f"{name!r}: S3 keys are UTF-8; this name is not") from None
        if len(encoded) > MAX_NAME:
            raise NameTooLong(name)
        path = join(parent.path, name)
        if len(self.dir_key(path).encode()) > MAX_KEY:
            raise NameTooLong(path)
        return path

    # -- what S3 showed ------------------------------------------------------------------

    def file_node(self, path: str, info: ObjectInfo) -> Node:
        """Record a file seen in S3 (by HEAD, with its metadata, or by a listing)."""
        node = self.table.at(path)
        if node is not None and (node.written is not None or node.meta_dirty or node.meta_writing):
            return node  # being written, or attributes not stored yet: ours are newer
        if info.metadata is not None or node is None or node.etag != info.etag:
            attrs = decode(info.metadata, directory=False, last_modified=info.mtime,
                           defaults=self.defaults)
            known = info.metadata is not None
        else:  # same content: keep the attributes; a HEAD confirms them if in doubt
            attrs, known = node.attrs, node.meta_known and _same_version(node, info)
        if node is not None and node.last_modified is None and known:
            node.meta_fetched = int(info.mtime) + 1  # we wrote it: true as of that second
        node = self.table.put(path, attrs)
        if node.etag != info.etag:
            node.symlink_target = None
        node.size, node.etag, node.storage_class = info.size, info.etag, info.storage_class
        node.last_modified, node.meta_known = info.mtime, known
        if info.metadata is not None:
            node.meta_fetched, node.head = time.time(), info
        return node

    def replaced_version(self, node: Node) -> ObjectInfo | None:
        """The HEAD of the object a new version of `node` replaces, if it is current."""
        head = node.head
        return head if head is not None and node.etag and head.etag == node.etag else None

    def dir_node(self, path: str, marker: ObjectInfo | None = None) -> Node:
        """Record a directory; `marker` is its `dir/` object, HEADed, if it has one."""
        node = self.table.at(path)
        if node is not None and node.is_dir and marker is None:
            return node
        attrs = decode(marker.metadata if marker else None, directory=True,
                       last_modified=marker.mtime if marker else self.mounted_at,
                       defaults=self.defaults)
        node = self.table.put(path, attrs)
        node.size, node.meta_known, node.head = 0, marker is not None, marker
        return node

    async def head(self, key: str) -> ObjectInfo | None:
        """The object at `key`, or None."""
        try:
            return await self.store.head(key)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    async def fetch_metadata(self, nodes: list[Node]) -> None:
        """HEAD the objects of nodes whose metadata is unknown, in parallel, bounded."""
        missing = [n for n in nodes if not n.meta_known and n.written is None and n.path]
        if not missing:
            return
        # METADATA_CONCURRENCY tasks take the nodes one after the other: one task and a
        # limiter wait per HEAD cost more than the HEAD's own Python (for 1,000 entries).
        queue = iter(missing)

        async def fetch() -> None:
            for node in queue:
                info = await self.head(self.key(node))
                if info is None:
                    if node.is_dir:  # a prefix without a marker: defaults are the truth
                        node.meta_known = True
                elif node.is_dir:
                    self.dir_node(node.path, info)
                else:
                    self.file_node(node.path, info)

        async with trio.open_nursery() as nursery:
            for _ in range(min(METADATA_CONCURRENCY, len(missing))):
                nursery.start_soon(fetch)

    # -- lookups and listings ----------------------------------------------------------

    async def lookup(self, parent: Node, name: str) -> Node:
        path = self.child_path(parent, name)
        if not usable_name(name):
            raise NotFound(path)  # s3mpfs's own bookkeeping stays out of sight
        node = self.table.at(path)
        if node is not None and node.written is not None:
            return node
        listing = await self._recent_listing(parent)
        if listing is not None and name not in listing.names \
                and time.monotonic() - listing.touched >= self.config.negative_ttl:
            listing = await self._recent_listing(parent, fresh=True)  # created meanwhile?
        if listing is None:  # a large directory: ask about this one name
            return await self._fetch(path)
        node = self.table.at(path)
        if name not in listing.names or node is None:
            raise NotFound(path)
        return node

    async def _recent_listing(self, directory: Node, *, fresh: bool = False) -> _Listing | None:
        """The directory's listing if taken a moment ago (unless `fresh`), else a new one
        when the directory is small; None for large directories."""
        listing = self._listings.get(directory.path)
        ttl = OWN_LISTING_TTL if listing is not None and listing.ours else LISTING_TTL
        if listing is None or fresh or time.monotonic() - listing.taken >= ttl:
            await self.list(directory, limit=SMALL_DIRECTORY)
            listing = self._listings.get(directory.path)
        return listing if listing is not None and listing.complete else None

    async def _fetch(self, path: str) -> Node:
        """Find what `path` is in S3: an object (HEAD), else a prefix (LIST, one key)."""
        info = await self.head(self.file_key(path))
        if info is not None:
            return self.file_node(path, info)
        listing = await self.store.list(self.dir_key(path), max_keys=1)
        if listing.objects or listing.prefixes:
            node = self.dir_node(path)
            await self.fetch_metadata([node])
            return node
        self.table.detach(path)
        raise NotFound(path)

    async def list(self, directory: Node, limit: int | None = None) -> list[Node]:
        """The directory's entries: one paginated ListObjectsV2 (at most `limit` keys),
        then the metadata of entries not seen before (or changed since), in parallel."""
        prefix = self.dir_key(directory.path)
        taken = time.monotonic()
        listing = await self.store.list(prefix, max_keys=limit)
        entries: dict[str, Node] = {}
        for sub in listing.prefixes:
            name = sub[len(prefix):].rstrip("/")
            if usable_name(name):
                entries[name] = self.dir_node(join(directory.path, name))
        for info in listing.objects:
            name = info.key[len(prefix):]
            if info.key == prefix or not usable_name(name) or name in entries:
                continue  # the directory's own marker, or a name POSIX cannot show
            entries[name] = self.file_node(join(directory.path, name), info)
        for node in self.being_written(directory.path):
            entries.setdefault(node.name, node)
        await self.fetch_metadata(list(entries.values()))
        previous = self._listings.get(directory.path)
        self._listings[directory.path] = _Listing(taken, set(entries), not listing.truncated,
                                                  ours=previous is not None and previous.ours)
        return [entries[name] for name in sorted(entries)]

    # -- changes made through this mount -----------------------------------------------

    def listed(self, dir_path: str, name: str, present: bool) -> None:
        """Keep a cached listing true after a change made through this mount."""
        listing = self._listings.get(dir_path)
        if listing is not None:
            (listing.names.add if present else listing.names.discard)(name)
            listing.touched = time.monotonic()
            if listing.ours:
                listing.taken = listing.touched  # still complete: renewed while in use

    def stored(self, dir_path: str) -> None:
        """A file of the directory was stored through this mount (its close): the mount
        is still busy there, so names it has not seen are still trusted absent."""
        listing = self._listings.get(dir_path)
        if listing is not None:
            listing.touched = time.monotonic()

    def created_dir(self, path: str) -> None:
        """A directory this mount just made: empty, and every name in it known."""
        self._listings[path] = _Listing(time.monotonic(), ours=True)
        self._created_dirs.add(path)

    def knows_every_name(self, path: str) -> bool:
        """Whether this mount made the directory, so that a name it has not seen there
        is absent unless another client wrote it."""
        return path in self._created_dirs

    def forget_dir(self, path: str) -> None:
        """Forget the listings of a directory and everything below it (gone or moved)."""
        for cached in [p for p in self._listings if p == path or p.startswith(path + "/")]:
            del self._listings[cached]
        self._created_dirs -= {p for p in self._created_dirs
                               if p == path or p.startswith(path + "/")}

    def forget_listing(self, path: str) -> None:
        """Drop one directory's cached listing: the next lookup asks S3 again."""
        self._listings.pop(path, None)


def _same_version(node: Node, info: ObjectInfo) -> bool:
    """Whether a listed object is the version whose metadata the node caches. A
    metadata-only copy (chmod by s3fs, touch by rclone) keeps the ETag but not the
    LastModified, compared to the second (HEAD has no finer precision); so metadata
    fetched within the second the object was last modified is not trusted: a copy later
    in that same second would not show."""
    if node.etag != info.etag:
        return False
    if node.last_modified is None:
        return True  # we wrote it
    return (int(node.last_modified) == int(info.mtime)
            and int(node.meta_fetched) > int(info.mtime))


def usable_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..", REGISTRY_DIR)
