"""What the bucket holds, as the mount has seen it: names, listings and metadata.

Directories are common prefixes and `dir/` markers; files are objects. Listings come
from ListObjectsV2 and answer lookups for LISTING_TTL seconds. A listing alone costs no
HEAD (`ls -f`, `find -name`): the metadata listings lack (mode, owner, times) is fetched
with HEAD only when a name is looked up or stat'ed, once per object version, and then for
the next names of the listing too, in parallel (stat-ahead: `ls -l` and `rsync` stat in
listing order). It is cached in the inode table. Nothing here writes to S3: it only reads
and remembers.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable

import trio

from ..config import MountConfig
from ..errors import InvalidName, NameTooLong, NotADirectory, NotEmpty, NotFound
from ..objects import ObjectInfo
from ..s3.metadata import Attributes, Defaults, decode, nanoseconds, stored_type
from ..s3.store import S3Store
from ..write.registry import REGISTRY_DIR
from .foreign import PATH_MAX, Foreign
from .inodes import InodeTable, join
from .listings import LISTING_TTL, Listing, Listings, Window
from .metadata_reads import MetadataReads
from .node import Node
from .statindex import ListedFiles, StatIndex

MAX_NAME = 255  # bytes, what POSIX tools expect of one path component
MAX_KEY = 1024  # bytes, S3's key length limit
SMALL_DIRECTORY = 1000  # a lookup lists a directory this small instead of HEADing a name
# Files whose last HEAD is kept whole (content headers, user metadata: what a new version
# keeps, saving a HEAD when the file is overwritten soon after a stat). A million stat'ed
# entries would otherwise hold a million HEAD answers.
HEADS_KEPT = 4096


class Names(MetadataReads):
    def __init__(self, config: MountConfig, store: S3Store,
                 being_written: Callable[[str], list[Node]]) -> None:
        """`being_written(dir_path)`: the files of that directory being written now,
        which S3 does not list yet."""
        self.config = config
        self.store = store
        self.being_written = being_written
        # Tells the kernel to ask for an inode's attributes again (fs/operations.py): S3
        # showed another version, and the size the kernel caches must not outlive it (it
        # puts O_APPEND writes there).
        self.version_changed: Callable[[int], None] = lambda inode: None
        self.defaults = Defaults(config.uid, config.gid, config.file_mode, config.dir_mode)
        now = time.time()
        self.table = InodeTable(Attributes(stat.S_IFDIR | config.dir_mode, config.uid,
                                           config.gid, nanoseconds(now)))
        self.mounted_at = now  # the mtime of directories that have no marker object
        self._listings = Listings(config.listing_cache, self._listing_dropped)
        self._created_dirs: set[str] = set()  # made by this mount: it knows every name
        self._removed: dict[str, float] = {}  # path -> when this mount removed that name
        self._heads: dict[int, trio.Event] = {}  # inode -> set once its HEAD ends
        self._with_head: dict[int, Node] = {}  # oldest first, at most HEADS_KEPT
        self.foreign = Foreign(config.bucket)  # what no path shows: said in the log
        self.stat_index = StatIndex(config, store)  # metadata of many files in one GET

    def cache_sizes(self) -> dict[str, int]:
        """What the mount holds of the bucket: inodes (those the kernel holds, and the
        names of cached listings not handed to it), how many of them are packed rows,
        and names in cached listings."""
        return {"inodes": len(self.table), "inodes_packed": self.table.packed(),
                "listed_names": len(self._listings)}

    # -- keys --------------------------------------------------------------------------

    def file_key(self, path: str) -> str:
        return self.config.prefix + path

    def dir_key(self, path: str) -> str:
        return self.config.prefix + path + "/" if path else self.config.prefix

    def key(self, node: Node) -> str:
        return self.dir_key(node.path) if node.is_dir else self.file_key(node.path)

    def child_path(self, parent: Node, name: str, *, directory: bool = False) -> str:
        """The path of `name` in `parent`, if S3 and POSIX can both hold it (a
        `directory`'s key has a trailing "/": one byte more)."""
        if not parent.is_dir:
            raise NotADirectory(parent.path)
        try:
            encoded = name.encode()
        except UnicodeEncodeError:
            raise InvalidName(f"{name!r}: S3 keys are UTF-8; this name is not") from None
        if len(encoded) > MAX_NAME:
            raise NameTooLong(name)
        path = join(parent.path, name)
        key = self.dir_key(path) if directory else self.file_key(path)
        if len(key.encode()) > MAX_KEY:
            raise NameTooLong(path)
        return path

    # -- what S3 showed ------------------------------------------------------------------

    def file_node(self, path: str, info: ObjectInfo, *, tell_kernel: bool = True,
                  whole_head: bool = True) -> Node:
        """Record a file seen in S3 (by HEAD, with its metadata, or by a listing). Another
        version than the node had makes the kernel ask for its attributes again, unless
        not `tell_kernel` (a read's own reopen: its short answer tells the kernel). Not
        `whole_head`: `info` holds only the user metadata (a stat index's), not the
        other headers a new version keeps, so it is not kept as the node's HEAD."""
        node = self.table.at(path)
        if node is not None and (node.written is not None or node.meta_dirty or node.meta_writing):
            return node  # being written, or attributes not stored yet: ours are newer
        # The node's ETag, read once (a plain object's is kept as a number, and spelled
        # out again at each read: a few µs per listed entry).
        old_etag = node.etag if node is not None else None
        if info.metadata is not None or node is None or old_etag != info.etag:
            attrs = decode(info.metadata, directory=False, last_modified=info.mtime,
                           defaults=self.defaults)
            if stored_type(info.metadata) == stat.S_IFDIR:  # a key without "/" is a file
                self.foreign.directory_mode_on_file(path, info.key)
            known = info.metadata is not None
        else:  # same content: keep the attributes; a HEAD confirms them if in doubt
            attrs, known = node.attrs, node.meta_known and _same_version(node, info)
        read_at = None  # when the metadata cached was read from S3, if now known
        before = (node.inode, node.size, old_etag) if node is not None else None
        if node is not None and node.last_modified is None and known:
            read_at = int(info.mtime) + 1  # we wrote it: true as of that second
            node.stored_meta = None  # what it had before (the ETag may be the same)
        node = self.table.put(path, attrs)
        same_node = before is not None and before[0] == node.inode
        if (old_etag if same_node else node.etag) != info.etag:
            node.symlink_target = None
            node.etag = info.etag
        node.size = info.size
        node.last_modified = info.mtime
        node.meta_known = known
        if info.metadata is not None:
            read_at = time.time()
            self._keep_head(node, info, whole=whole_head)
        if read_at is not None:
            node.settled = int(read_at) > int(info.mtime)
            self.table.read(node, read_at, LISTING_TTL)
        if tell_kernel and same_node and before != (node.inode, info.size, info.etag):
            self.version_changed(node.inode)
        return node

    def _keep_head(self, node: Node, info: ObjectInfo | None, *, whole: bool = True) -> None:
        """Keep the HEAD (if `whole`), and the metadata as read, on the node, and only on
        the HEADS_KEPT latest ones (memory): the stat index entry of an older one is
        encoded from its attributes (fs/statwriter.py)."""
        node.head = info if whole else None
        node.stored_meta = None if info is None else (info.etag, info.metadata)
        self._with_head.pop(node.inode, None)
        if info is None:
            return
        self._with_head[node.inode] = node
        if len(self._with_head) > HEADS_KEPT:
            oldest = self._with_head.pop(next(iter(self._with_head)))
            if oldest.written is None:  # a write in progress may still need it
                oldest.head = oldest.stored_meta = None

    def _from_index(self, path: str, info: ObjectInfo) -> None:
        """Metadata a stat index gave for the listed version: as a HEAD's, except that
        the index has no other headers, which a new version then HEADs to keep."""
        self.file_node(path, info, whole_head=False)

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
        node.size, node.meta_known = 0, marker is not None
        self._keep_head(node, marker)
        if marker is not None and marker.size:
            self.foreign.marker_with_body(path, marker.key, marker.size)
        return node

    # -- lookups and listings ----------------------------------------------------------

    async def lookup(self, parent: Node, name: str) -> Node:
        path = self.child_path(parent, name)
        if not usable_name(name):
            raise NotFound(path)  # s3mpfs's own bookkeeping stays out of sight
        node = self.table.at(path)
        if node is not None and node.written is not None:
            return node
        if node is not None and not node.is_dir:
            if not node.meta_known:  # listed, not HEADed yet: the HEAD decides (stat-ahead)
                if await self.ensure_metadata(node):
                    return self.table.at(path) or node  # a new inode if its type changed
                self._gone(node)  # then whatever the listing says now
            elif self.table.read_lately(node, LISTING_TTL):
                return node  # HEADed a moment ago: as fresh as a listing
        elif node is not None and not node.meta_known and self._listed_lately(node):
            return await self._confirmed(node)
        listing = await self._recent_listing(parent)
        if listing is not None and name not in listing.names \
                and time.monotonic() - listing.touched >= self.config.negative_ttl:
            listing = await self._recent_listing(parent, fresh=True)  # created meanwhile?
        if listing is None:  # a large directory
            return await self._in_large(parent, name, path)
        node = self.table.at(path)
        if name not in listing.names:
            raise NotFound(path)
        if node is None:  # listed, and its node dropped since (forgotten, or unused)
            return await self._fetch(path)
        return await self._confirmed(node)

    def _gone(self, node: Node) -> None:
        """Its HEAD found nothing: forget the name."""
        self._listings.change(node.parent_path, node.name, present=False)
        self.table.detach(node.path)

    def _listed_lately(self, node: Node) -> bool:
        """Whether a listing of the node's directory named it a moment ago."""
        listing = self._listings.get(node.parent_path)
        return (listing is not None and node.name in listing.names
                and time.monotonic() - listing.taken < LISTING_TTL)

    async def _confirmed(self, node: Node) -> Node:
        """The node, with its own attributes; NotFound if its object is gone."""
        if not await self.ensure_metadata(node):
            self._gone(node)
            raise NotFound(node.path)
        return self.table.at(node.path) or node  # a new inode if its type changed

    async def _recent_listing(self, directory: Node, *, fresh: bool = False) -> Listing | None:
        """The directory's listing if taken a moment ago (unless `fresh`), else a new one
        when the directory is small; None for large directories."""
        listing = self._listings.get(directory.path)
        if listing is None or fresh or time.monotonic() - listing.taken >= listing.ttl:
            if not fresh and self._listings.large(directory.path, SMALL_DIRECTORY):
                return None  # (its first page would not do: `_in_large`)
            await self.list(directory, limit=SMALL_DIRECTORY)
            listing = self._listings.get(directory.path)
        else:
            self._listings.use(directory.path)
        return listing if listing is not None and listing.complete else None

    async def _in_large(self, parent: Node, name: str, path: str) -> Node:
        """A name of a directory too large to list whole: answered from the page of its
        listing that starts just before it, which answers the next lookups too (`ls -l`
        of a large directory: one LIST per SMALL_DIRECTORY names, and no HEAD for the
        entries whose version and metadata are known)."""
        window = self._listings.window(parent.path)
        if window is None or not window.covers(name):
            await self.list(parent, limit=SMALL_DIRECTORY, after=name[:-1])
            window = self._listings.window(parent.path)
        if window is None or not window.covers(name):
            return await self._fetch(path)  # (a page of names the mount cannot show)
        node = self.table.at(path)
        if name not in window.names:
            raise NotFound(path)
        return await self._confirmed(node) if node is not None else await self._fetch(path)

    async def _fetch(self, path: str) -> Node:
        """Find what `path` is in S3: an object (HEAD), else a prefix (LIST, one key)."""
        info = await self.head(self.file_key(path))
        if info is not None:
            return self.file_node(path, info)
        if len(self.dir_key(path).encode()) > MAX_KEY:  # no key can be below it
            self.table.detach(path)
            raise NotFound(path)
        listing = await self.store.list(self.dir_key(path), max_keys=1)
        if listing.objects or listing.prefixes:
            node = self.dir_node(path)
            await self.fetch_metadata([node])
            return node
        self.table.detach(path)
        raise NotFound(path)

    async def list(self, directory: Node, limit: int | None = None,
                   after: str | None = None) -> list[tuple[str, Node]]:
        """The directory's entries, by name: one paginated ListObjectsV2 (at most `limit` keys;
        only the keys `after` this name when given: a page, see `_in_large`). No HEAD:
        entries not seen before (or changed since) keep the attributes a listing gives
        (size, LastModified, default mode and owner) until looked up."""
        prefix = self.dir_key(directory.path)
        taken = time.monotonic()
        listing = await self.store.list(prefix, max_keys=limit,
                                        start_after=prefix + after if after else None)
        entries: dict[str, Node] = {}
        unnamable: list[str] = []
        shadowed: list[str] = []
        # What the stat index checks against (the names are the entries' strings).
        files = ListedFiles() if after is None and self.stat_index.enabled else None
        last = None  # the page's last key (a truncated page of a large directory)
        if after is not None and listing.truncated:
            keys = [o.key for o in listing.objects] + listing.prefixes
            last = max(keys)[len(prefix):] if keys else None
        for sub in listing.prefixes:
            name = sub[len(prefix):].rstrip("/")
            if usable_name(name):
                entries[name] = self.dir_node(join(directory.path, name))
            elif not _ours(directory, name):
                unnamable.append(sub)
        objects = listing.objects
        for at, info in enumerate(objects):
            # Each ObjectInfo goes once its node has what it needs: a 100,000-key listing
            # is not all held beside the nodes made of it.
            objects[at] = None  # type: ignore[call-overload]
            name = info.key[len(prefix):]
            if info.key == prefix:
                continue  # the directory's own marker
            if not usable_name(name):
                if not _ours(directory, name):
                    unnamable.append(info.key)
            elif name in entries:  # a file beside a directory of its name: one can show
                shadowed.append(info.key)
            else:
                entries[name] = self.file_node(join(directory.path, name), info)
            if files is not None and name in entries:
                files.put(name, info)
        self.foreign.hidden(prefix, unnamable, shadowed)
        if after is not None:
            window = Window(taken, after, last, set(entries))
            window.names.update(n.name for n in self.being_written(directory.path)
                                if window.covers(n.name))
            self._listings.put_window(directory.path, window)
            return [(name, entries[name]) for name in sorted(entries)]
        self.stat_index.listed(directory.path, files, not listing.truncated, taken)
        for node in self.being_written(directory.path):
            entries.setdefault(node.name, node)
        previous = self._listings.get(directory.path)
        order = sorted(entries)
        # (a lookup's first page of a large directory: stat-ahead keeps the last order)
        self._listings.put(directory.path,
                           Listing(taken, set(entries), not listing.truncated,
                                   ours=previous is not None and previous.ours),
                           None if listing.truncated else order)
        return [(name, entries[name]) for name in order]  # (names the listing's strings)

    def _listing_dropped(self, path: str, names: set[str]) -> None:
        """A listing left the cache: the nodes of its names the kernel does not hold go
        too (what S3 said of them is asked again when they are next looked up)."""
        for name in names:
            node = self.table.at(join(path, name))
            if node is not None and self.table.drop_unused(node):
                self._with_head.pop(node.inode, None)

    @staticmethod
    def opened(nodes: list[Node]) -> None:
        """A directory handle lists these nodes: they stay until it ends (`release`), so
        that what it hands to the kernel is what the table holds."""
        for node in nodes:
            node.handles += 1

    def release(self, nodes: list[Node]) -> None:
        """A directory handle ends: drop the nodes it listed that the kernel took no
        reference to (it read part of the directory). A lookup of one of their names
        still in the listing HEADs it."""
        for node in nodes:
            node.handles -= 1
            if self.table.drop_unused(node):
                self._with_head.pop(node.inode, None)

    async def check_empty(self, path: str, doing: str = "rmdir") -> None:
        """NotEmpty unless the directory holds nothing but a marker without a body: what
        ls cannot show counts too (keys no path can name, a marker's bytes), and rmdir
        says so in the log (`doing`: rmdir, or a rename onto the directory) rather than
        delete another tool's bytes."""
        key = self.dir_key(path)
        listing = await self.store.list(key, max_keys=2)
        inside = [o.key for o in listing.objects if o.key != key] + listing.prefixes
        if self.being_written(path):
            raise NotEmpty(path)
        if inside:
            if not any(usable_name(k[len(key):].rstrip("/")) for k in inside):
                raise self.foreign.unnamable_inside(doing, path, key, inside, listing.truncated)
            raise NotEmpty(path)
        for marker in listing.objects:
            if marker.key == key and marker.size:
                raise self.foreign.marker_with_body(path, key, marker.size, doing=doing)

    async def symlink_target(self, node: Node) -> str:
        """A link's target: its object's body, of which no more than PATH_MAX bytes are
        read; a longer one (another tool's object) is refused, never read into memory."""
        if node.symlink_target is None:
            key = self.file_key(node.path)
            if node.size >= PATH_MAX:
                raise self.foreign.link_too_long(node.path, key, node.etag, node.size)
            # (of the version listed: one replaced since fails, never reads more)
            data = await self.store.get_range(key, 0, node.size, node.etag) \
                if node.size else b""
            node.symlink_target = os.fsdecode(data)
        return node.symlink_target

    # -- changes made through this mount -----------------------------------------------

    def listed(self, dir_path: str, name: str, present: bool) -> None:
        """Keep a cached listing true after a change made through this mount."""
        node = self.table.at(join(dir_path, name)) if present else None
        if node is not None and not node.is_dir:  # a file, link or rename stored here
            self.stat_index.changed(dir_path)
        now = time.monotonic()
        if present:
            self._removed.pop(join(dir_path, name), None)
        else:
            if len(self._removed) > 1000:  # only the last negative_ttl matters
                self._removed = {p: t for p, t in self._removed.items()
                                 if now - t < self.config.negative_ttl}
            self._removed[join(dir_path, name)] = now
        listing = self._listings.change(dir_path, name, present)
        if listing is not None:
            listing.touched = now
            if listing.ours:
                listing.taken = listing.touched  # still complete: renewed while in use

    def cached_names(self, dir_path: str) -> set[str] | None:
        """The names of the directory's cached listing (files and directories), if any."""
        listing = self._listings.get(dir_path)
        return None if listing is None else listing.names

    def removed_lately(self, path: str) -> bool:
        """Whether this mount itself removed the name (unlink, or a rename away) less than
        negative_ttl ago: SQLite deletes its journal at the end of each transaction and
        creates it again at the start of the next."""
        removed = self._removed.get(path)
        return removed is not None and time.monotonic() - removed < self.config.negative_ttl

    def stored(self, dir_path: str) -> None:
        """A file of the directory was stored through this mount (its close): the mount
        is still busy there, so names it has not seen are still trusted absent."""
        self.stat_index.changed(dir_path)
        listing = self._listings.get(dir_path)
        if listing is not None:
            listing.touched = time.monotonic()

    def created_dir(self, path: str) -> None:
        """A directory this mount just made: empty, and every name in it known."""
        self._listings.put(path, Listing(time.monotonic(), ours=True), [])
        self._created_dirs.add(path)

    def knows_every_name(self, path: str) -> bool:
        """Whether this mount made the directory, so that a name it has not seen there
        is absent unless another client wrote it."""
        return path in self._created_dirs

    def forget_dir(self, path: str) -> None:
        """Forget the listings of a directory and everything below it (gone or moved)."""
        for cached in self._listings.paths():
            if cached == path or cached.startswith(path + "/"):
                self._listings.pop(cached)
        self._created_dirs -= {p for p in self._created_dirs
                               if p == path or p.startswith(path + "/")}

    def forget_listing(self, path: str) -> None:
        """Drop one directory's cached listing: the next lookup asks S3 again."""
        self._listings.pop(path)


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
    return int(node.last_modified) == int(info.mtime) and node.settled


def usable_name(name: str) -> bool:
    """Whether a path can name this entry (and it is not s3mpfs's bookkeeping)."""
    return (bool(name) and "/" not in name and name not in (".", "..", REGISTRY_DIR)
            and len(name.encode()) <= MAX_NAME)


def _ours(directory: Node, name: str) -> bool:
    """s3mpfs's own bookkeeping (`.s3mpfs/` at the mount's top level): hidden, unsaid."""
    return name == REGISTRY_DIR and not directory.path
