"""The filesystem's logic on top of S3: names, directories, open files.

`operations.py` translates FUSE calls into calls on `Namespace`; this module decides
what they mean for the bucket. Directories are common prefixes and `dir/` markers;
files are objects; listings come from ListObjectsV2, and the metadata that listings lack
is fetched once per object version, in parallel, and cached.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass, field

import trio

from .config import MountConfig
from .copying import Copier
from .errors import (
    Exists,
    InvalidName,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    ReadOnly,
    S3mpfsError,
    Unsupported,
    describe,
    root_cause,
)
from .inodes import InodeTable, Node, join
from .metadata import Attributes, Defaults, decode, encode
from .reader import ObjectReader
from .registry import REGISTRY_DIR
from .store import ObjectInfo, S3Store, is_not_found
from .upload import Upload, UploadShared

log = logging.getLogger(__name__)

MAX_NAME = 255  # bytes, what POSIX tools expect of one path component
MAX_KEY = 1024  # bytes, S3's key length limit
LISTING_TTL = 2.0  # seconds a directory listing answers lookups without a request
# A directory this mount created started empty, and every name added through the mount is
# recorded in its listing: lookups trust that record until the directory has had no change
# through the mount for this long (cp -r into it makes no LIST, no HEAD before each PUT).
OWN_LISTING_TTL = 30.0
SMALL_DIRECTORY = 1000  # a lookup lists a directory this small instead of HEADing a name
METADATA_CONCURRENCY = 16  # HEADs in flight when a listing fetches missing metadata
METADATA_DELAY = 0.5  # seconds a closed file's attribute change waits to be coalesced
METADATA_RETRIES = (1.0, 4.0, 15.0)  # waits before storing attributes again after a failure
RENAME_NOREPLACE = 1


@dataclass
class _Listing:
    taken: float
    names: set[str] = field(default_factory=set)
    complete: bool = True
    ours: bool = False  # created by this mount's mkdir: complete as long as it is in use


@dataclass
class WriteHandle:
    """A file open for writing. Each flush (every close() of a descriptor) commits what
    was written; later writes through a descriptor still open (dup, fork, shell
    redirections) continue in a new upload that starts from the committed object."""

    node: Node
    opener_pid: int = 0  # the process that opened it (0: unknown)
    upload: Upload | None = None
    must_commit: bool = False  # the file must become an object even with no new bytes
    mtime_set: bool = False  # utimens() while open: keep that mtime, not the close time


@dataclass
class ReadHandle:
    node: Node
    reader: ObjectReader


Handle = WriteHandle | ReadHandle


class Namespace:
    def __init__(self, config: MountConfig, store: S3Store, uploads: UploadShared) -> None:
        self.config = config
        self.store = store
        self.uploads = uploads
        self.copier = Copier(store, config.upload_concurrency)
        self.defaults = Defaults(config.uid, config.gid, config.file_mode, config.dir_mode)
        now = time.time()
        self.table = InodeTable(Attributes(stat.S_IFDIR | config.dir_mode, config.uid,
                                           config.gid, now))
        self._listings: dict[str, _Listing] = {}
        self._created_dirs: set[str] = set()  # made by this mount: it knows every name
        self._mounted_at = now  # the mtime of directories that have no marker object
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1

    # -- keys --------------------------------------------------------------------------

    def file_key(self, path: str) -> str:
        return self.config.prefix + path

    def dir_key(self, path: str) -> str:
        return self.config.prefix + path + "/" if path else self.config.prefix

    def _child_path(self, parent: Node, name: str) -> str:
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

    def _writable(self) -> None:
        if self.config.read_only:
            raise ReadOnly("mounted read-only")

    # -- attributes --------------------------------------------------------------------

    def _file_node(self, path: str, info: ObjectInfo) -> Node:
        """Record a file seen in S3 (by HEAD, with its metadata, or by a listing)."""
        node = self.table.at(path)
        if node is not None and (node.upload or node.meta_dirty or node.meta_writing):
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
            node.meta_fetched = time.time()
        return node

    def _dir_node(self, path: str, marker: ObjectInfo | None = None) -> Node:
        """Record a directory; `marker` is its `dir/` object, HEADed, if it has one."""
        node = self.table.at(path)
        if node is not None and node.is_dir and marker is None:
            return node
        attrs = decode(marker.metadata if marker else None, directory=True,
                       last_modified=marker.mtime if marker else self._mounted_at,
                       defaults=self.defaults)
        node = self.table.put(path, attrs)
        node.size, node.meta_known = 0, marker is not None
        return node

    async def _fetch_metadata(self, nodes: list[Node]) -> None:
        """HEAD the objects of nodes whose metadata is unknown, in parallel, bounded."""
        missing = [n for n in nodes if not n.meta_known and n.upload is None and n.path]
        if not missing:
            return
        limiter = trio.CapacityLimiter(METADATA_CONCURRENCY)

        async def fetch(node: Node) -> None:
            async with limiter:
                key = self.dir_key(node.path) if node.is_dir else self.file_key(node.path)
                try:
                    info = await self.store.head(key)
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
                    if node.is_dir:  # a prefix without a marker: defaults are the truth
                        node.meta_known = True
                    return
            if node.is_dir:
                self._dir_node(node.path, info)
            else:
                self._file_node(node.path, info)

        async with trio.open_nursery() as nursery:
            for node in missing:
                nursery.start_soon(fetch, node)

    # -- lookups and listings ----------------------------------------------------------

    async def lookup(self, parent_inode: int, name: str) -> Node:
        parent = self.table.get(parent_inode)
        path = self._child_path(parent, name)
        if not _usable_name(name):
            raise NotFound(path)  # s3mpfs's own bookkeeping stays out of sight
        node = self.table.at(path)
        if node is not None and node.upload is not None:
            return node
        listing = await self._recent_listing(parent)
        if listing is None:  # a large directory: ask about this one name
            return await self._fetch(path)
        node = self.table.at(path)
        if name not in listing.names or node is None:
            raise NotFound(path)
        return node

    async def _recent_listing(self, directory: Node) -> _Listing | None:
        """The directory's listing if taken a moment ago, else a new one when the
        directory is small; None for large directories."""
        listing = self._listings.get(directory.path)
        ttl = OWN_LISTING_TTL if listing is not None and listing.ours else LISTING_TTL
        if listing is None or time.monotonic() - listing.taken >= ttl:
            await self._list(directory, limit=SMALL_DIRECTORY)
            listing = self._listings.get(directory.path)
        return listing if listing is not None and listing.complete else None

    async def _fetch(self, path: str) -> Node:
        """Find what `path` is in S3: an object (HEAD), else a prefix (LIST, one key)."""
        try:
            info = await self.store.head(self.file_key(path))
        except Exception as exc:
            if not is_not_found(exc):
                raise
        else:
            return self._file_node(path, info)
        listing = await self.store.list(self.dir_key(path), max_keys=1)
        if listing.objects or listing.prefixes:
            node = self._dir_node(path)
            await self._fetch_metadata([node])
            return node
        self.table.detach(path)
        raise NotFound(path)

    async def getattr(self, inode: int) -> Node:
        node = self.table.get(inode)
        await self._fetch_metadata([node])
        return node

    async def list_dir(self, inode: int) -> list[Node]:
        """Every entry of a directory: one paginated ListObjectsV2, then the metadata of
        entries not seen before (or changed since), fetched in parallel."""
        directory = self.table.get(inode)
        if not directory.is_dir:
            raise NotADirectory(directory.path)
        return await self._list(directory, limit=None)

    async def _list(self, directory: Node, limit: int | None) -> list[Node]:
        prefix = self.dir_key(directory.path)
        taken = time.monotonic()
        listing = await self.store.list(prefix, max_keys=limit)
        entries: dict[str, Node] = {}
        for sub in listing.prefixes:
            name = sub[len(prefix):].rstrip("/")
            if _usable_name(name):
                entries[name] = self._dir_node(join(directory.path, name))
        for info in listing.objects:
            name = info.key[len(prefix):]
            if info.key == prefix or not _usable_name(name) or name in entries:
                continue  # the directory's own marker, or a name POSIX cannot show
            entries[name] = self._file_node(join(directory.path, name), info)
        for upload_node in self._uploading_in(directory.path):
            entries.setdefault(upload_node.name, upload_node)
        await self._fetch_metadata(list(entries.values()))
        self._listings[directory.path] = _Listing(taken, set(entries), not listing.truncated)
        return [entries[name] for name in sorted(entries)]

    def _uploading_in(self, dir_path: str) -> list[Node]:
        return [h.node for h in self._handles.values()
                if isinstance(h, WriteHandle) and h.node.upload is not None
                and h.node.parent_path == dir_path]

    def _listed(self, dir_path: str, name: str, present: bool) -> None:
        """Keep a cached listing true after a change made through this mount."""
        listing = self._listings.get(dir_path)
        if listing is not None:
            (listing.names.add if present else listing.names.discard)(name)
            if listing.ours:
                listing.taken = time.monotonic()  # still complete: renewed while in use

    # -- directories -------------------------------------------------------------------

    async def mkdir(self, parent_inode: int, name: str, mode: int, uid: int, gid: int) -> Node:
        self._writable()
        parent = self.table.get(parent_inode)
        path = self._child_path(parent, name)
        if await self._exists(parent, name):
            raise Exists(path)
        attrs = Attributes(stat.S_IFDIR | stat.S_IMODE(mode), uid, gid, time.time())
        await self.store.put_object(self.dir_key(path), b"", encode(attrs))
        node = self.table.put(path, attrs)
        node.meta_known = True
        self._listed(parent.path, name, True)
        self._listings[path] = _Listing(time.monotonic(), ours=True)  # new and empty
        self._created_dirs.add(path)
        return node

    async def rmdir(self, parent_inode: int, name: str) -> None:
        self._writable()
        node = await self.lookup(parent_inode, name)
        if not node.is_dir:
            raise NotADirectory(node.path)
        await self._check_empty(node.path)
        await self.store.delete(self.dir_key(node.path))
        self._listed(node.parent_path, name, False)
        self._listings.pop(node.path, None)
        self._created_dirs.discard(node.path)
        self.table.detach(node.path)

    async def _check_empty(self, path: str) -> None:
        listing = await self.store.list(self.dir_key(path), max_keys=2)
        others = [o for o in listing.objects if o.key != self.dir_key(path)]
        if others or listing.prefixes or self._uploading_in(path):
            raise NotEmpty(path)

    async def _exists(self, parent: Node, name: str) -> bool:
        try:
            await self.lookup(parent.inode, name)
        except NotFound:
            return False
        return True

    # -- files -------------------------------------------------------------------------

    async def unlink(self, parent_inode: int, name: str) -> None:
        self._writable()
        node = await self.lookup(parent_inode, name)
        if node.is_dir:
            raise IsADirectory(node.path)
        if node.upload is not None:
            await node.upload.cancel("file was deleted while being written")
            node.upload = None
        node.meta_dirty = False
        await self.store.delete(self.file_key(node.path))
        self._listed(node.parent_path, name, False)
        self.table.detach(node.path)

    async def create(self, parent_inode: int, name: str, mode: int, uid: int,
                     gid: int, pid: int = 0, flags: int = os.O_TRUNC) -> tuple[int, Node]:
        """A new file. The kernel asks only for names it was told are absent, but that
        may come from a listing a moment old: another client may have created the object
        since. Without O_TRUNC, its bytes must not be replaced: the name is looked up
        in S3 first (an existing object is opened and appended to, or EEXIST for
        O_EXCL), and the new object is committed with If-None-Match: * where the server
        honours it. The lookup is skipped where that condition alone settles it (O_EXCL)
        and in directories this mount created, whose every name it knows."""
        self._writable()
        parent = self.table.get(parent_inode)
        path = self._child_path(parent, name)
        existing = self.table.at(path)
        if existing is not None and existing.is_dir:
            raise IsADirectory(path)
        only_new = not flags & os.O_TRUNC
        if only_new and not self._absence_known(parent, flags):
            found = await self._head(self.file_key(path))
            if found is not None:
                if flags & os.O_EXCL:
                    raise Exists(path)
                node = self._file_node(path, found)
                self._listed(parent.path, name, True)
                return self._open_for_write(node, pid, truncate=False, must_commit=False), node
        attrs = Attributes(stat.S_IFREG | stat.S_IMODE(mode), uid, gid, time.time())
        node = self.table.put(path, attrs)
        node.meta_known, node.meta_dirty, node.size, node.etag = True, False, 0, ""
        node.last_modified = None
        self._listed(parent.path, name, True)
        fh = self._open_for_write(node, pid, truncate=True, must_commit=True, only_new=only_new)
        return fh, node

    def _absence_known(self, parent: Node, flags: int) -> bool:
        if parent.path in self._created_dirs:
            return True
        return bool(flags & os.O_EXCL) and self.store.conditional_create

    async def _head(self, key: str) -> ObjectInfo | None:
        try:
            return await self.store.head(key)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    async def open(self, inode: int, flags: int, pid: int = 0) -> tuple[int, bool, bool]:
        """Open a file; returns the handle, whether reads must bypass the page cache (a
        reader of a file being rewritten reads the previous version from S3, whose size
        the kernel does not know), and whether the kernel may keep the pages it cached
        (only if they are of the same version: S3's LastModified has 1 s resolution, so
        the kernel cannot tell a same-size overwrite in the same second)."""
        node = self.table.get(inode)
        if node.is_dir:
            raise IsADirectory(node.path)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            reader = ObjectReader(self.store, self.uploads.nursery, self.file_key(node.path),
                                  node.size, self.config.read_ahead, node.etag)
            keep_cache, node.cached_etag = node.cached_etag == node.etag != "", node.etag
            fh = self._add_handle(ReadHandle(node, reader))
            return fh, node.upload is not None, keep_cache
        self._writable()
        truncate = bool(flags & os.O_TRUNC) and node.size > 0
        node.cached_etag = ""  # what gets written replaces what the kernel cached
        fh = self._open_for_write(node, pid, truncate=truncate, must_commit=truncate)
        return fh, False, False

    def _open_for_write(self, node: Node, pid: int, *, truncate: bool,
                        must_commit: bool, only_new: bool = False) -> int:
        if node.upload is not None:
            raise Unsupported(f"{node.path} is already open for writing")
        handle = WriteHandle(node, opener_pid=pid, must_commit=must_commit)
        self._start_upload(handle, truncate=truncate, only_new=only_new)
        return self._add_handle(handle)

    def _start_upload(self, handle: WriteHandle, *, truncate: bool,
                      only_new: bool = False) -> Upload:
        """A new upload for the handle: empty, or continuing the committed object."""
        node = handle.node
        base = None
        if not truncate and node.size > 0:
            base = ObjectInfo(self.file_key(node.path), node.size, 0, etag=node.etag)
        handle.upload = node.upload = Upload(
            self.uploads, self.file_key(node.path), lambda: self._upload_metadata(handle),
            base, only_new=only_new)
        return handle.upload

    def _upload_metadata(self, handle: WriteHandle) -> dict[str, str]:
        """Metadata for the object being created: the mtime is now, unless set meanwhile."""
        if not handle.mtime_set:
            handle.node.attrs.mtime = time.time()
        return self._encode_now(handle.node)

    def _add_handle(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    def handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise S3mpfsError(f"bad file handle {fh}") from None

    async def read(self, fh: int, offset: int, length: int) -> bytes:
        handle = self.handle(fh)
        if not isinstance(handle, ReadHandle):
            raise Unsupported("reading a file opened write-only or being written")
        return await handle.reader.read(offset, length)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handle(fh)
        if not isinstance(handle, WriteHandle):
            raise S3mpfsError("file not open for writing")
        upload = handle.upload or self._start_upload(handle, truncate=False)
        return await upload.write(offset, data)

    async def flush(self, fh: int) -> None:
        """close() of a descriptor: commit what was written and report the outcome."""
        handle = self.handle(fh)
        if isinstance(handle, WriteHandle):
            await self._commit(handle, final=False)

    async def release(self, fh: int) -> None:
        """The last descriptor is gone: commit anything left (errors cannot be reported)."""
        handle = self._handles.pop(fh, None)
        if isinstance(handle, WriteHandle):
            try:
                await self._commit(handle, final=True)
            except Exception as exc:
                log.debug("release of %s: %s", handle.node.path, describe(exc))
        elif isinstance(handle, ReadHandle):
            handle.reader.close()

    async def _commit(self, handle: WriteHandle, *, final: bool) -> None:
        upload = handle.upload
        if upload is None:
            return
        node = handle.node
        if not final and self._opener_holds(handle):
            # Not the opener's last close: a forked child closing its inherited copy, or
            # a duplicate descriptor (shell redirections). Committing now would publish
            # a partial file; the opener's own close (or release) commits it.
            return
        needed = upload.bytes_written > 0 or handle.must_commit
        if not needed and not final:
            return
        handle.upload = None
        if node.upload is upload:
            node.upload = None
        if not needed:
            await upload.discard()
            if node.meta_dirty:  # e.g. touch: opened for writing, only futimens()
                self._write_metadata_soon(node)
            return
        try:
            result = await upload.close()
        except Exception:
            self.table.detach(node.path)  # S3 still holds the previous version
            self._listings.pop(node.parent_path, None)
            raise
        handle.must_commit = False
        node.size = upload.size
        node.etag, node.last_modified = result.get("ETag", ""), None
        node.refreshed = time.monotonic()
        if node.meta_dirty:  # attributes changed after the object was created
            self._write_metadata_soon(node)

    def _opener_holds(self, handle: WriteHandle) -> bool:
        """Whether the opening process still has a descriptor on this file, read from
        /proc (readlink only: a stat would come back to this filesystem)."""
        if not handle.opener_pid:
            return False
        wanted = os.path.join(self.config.mountpoint, handle.node.path)
        fd_dir = f"/proc/{handle.opener_pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            return False  # gone, or exiting: its descriptors are closed
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") == wanted:
                    return True
            except OSError:
                continue
        return False

    async def fsync(self, fh: int) -> None:
        """Report a failed upload early; the object itself appears at close()."""
        handle = self.handle(fh)
        if isinstance(handle, WriteHandle) and handle.upload and handle.upload.error:
            raise handle.upload.error

    # -- attributes ----------------------------------------------------------------------

    async def setattr(self, inode: int, fh: int | None, *, size: int | None = None,
                      mode: int | None = None, uid: int | None = None, gid: int | None = None,
                      mtime_ns: int | None = None) -> Node:
        node = self.table.get(inode)
        await self._fetch_metadata([node])
        attrs = Attributes(node.attrs.mode, node.attrs.uid, node.attrs.gid, node.attrs.mtime)
        if mode is not None:
            attrs.mode = stat.S_IFMT(node.attrs.mode) | stat.S_IMODE(mode)
        if uid is not None:
            attrs.uid = uid
        if gid is not None:
            attrs.gid = gid
        if mtime_ns is not None:
            attrs.mtime = mtime_ns / 1e9
        if size is not None and size != node.current_size:
            self._writable()
            await self._truncate(node, size)
        if attrs == node.attrs:
            return node
        self._writable()
        node.attrs, node.meta_known = attrs, True
        if mtime_ns is not None:
            for handle in self._write_handles(node):
                handle.mtime_set = True
        if node.upload is None:
            if node.path:  # the root has no marker to carry attributes
                self._write_metadata_soon(node)
        else:  # carried by the pending upload, or written right after it completes
            node.meta_dirty = True
        return node

    def _write_handles(self, node: Node) -> list[WriteHandle]:
        return [h for h in self._handles.values()
                if isinstance(h, WriteHandle) and h.node is node]

    def _write_metadata_soon(self, node: Node) -> None:
        """Store a closed file's new attributes shortly, in one server-side copy: tools
        set mtime, owner and mode one call at a time (and rsync renames right after),
        so waiting a moment turns several copies into one, or into none."""
        node.meta_dirty = True
        self.uploads.nursery.start_soon(self._write_metadata_later, node)

    async def _write_metadata_later(self, node: Node) -> None:
        await trio.sleep(METADATA_DELAY)
        await self._write_metadata(node)

    async def _write_metadata(self, node: Node) -> None:
        """Store a closed file's (or directory's) attributes. One task at a time per
        node stores its newest attributes; a failure is retried a few times while they
        stay pending, then the mount shows what S3 holds again: it never keeps showing
        attributes that S3 does not have."""
        if node.meta_writing or not node.meta_dirty or node.upload is not None:
            return  # being stored (the newest go in), or going into an upload
        node.meta_writing = True
        try:
            problem = ""
            for wait in (0.0, *METADATA_RETRIES):
                await trio.sleep(wait)
                if not node.meta_dirty or node.upload is not None \
                        or self.table.at(node.path) is not node:
                    return  # carried by a rename or an upload, or deleted
                node.meta_dirty = False
                try:
                    await self._store_attributes(node)
                except Exception as exc:
                    node.meta_dirty = True
                    problem = describe(root_cause(exc))
                    log.warning("could not store the attributes of %s (%s)", node.path,
                                problem)
            if node.meta_dirty and self.table.at(node.path) is node:
                node.meta_dirty, node.meta_known, node.etag = False, False, ""
                log.error("could not store the attributes of %s: %s; gave up, showing what "
                          "S3 holds", node.path, problem)
        finally:
            node.meta_writing = False

    async def _store_attributes(self, node: Node) -> None:
        if node.is_dir:  # its marker object carries them
            await self.store.put_object(self.dir_key(node.path), b"", encode(node.attrs))
            node.meta_known = True
            return
        copied = await self.copier.copy(self.file_key(node.path), self.file_key(node.path),
                                        encode(node.attrs))
        node.etag, node.last_modified = copied.etag, None  # we wrote it

    async def write_pending_metadata(self) -> None:
        """Store every deferred attribute change now (at unmount)."""
        async with trio.open_nursery() as nursery:
            for node in self.table.nodes():
                if node.meta_dirty:
                    nursery.start_soon(self._write_metadata, node)

    async def _truncate(self, node: Node, size: int) -> None:
        if node.is_dir:
            raise IsADirectory(node.path)
        upload = node.upload
        if upload is None or upload.bytes_written == 0:
            await self._truncate_object(node, size)
            if upload is not None:  # later writes through this descriptor append to it
                upload.base = ObjectInfo(upload.key, node.size, 0, etag=node.etag) \
                    if node.size else None
            return
        if size == 0:
            upload.planner.truncate_to_zero()
        elif size > upload.size:
            await upload.write(size, b"")
        else:
            raise Unsupported(f"{node.path}: shrinking a file while writing it")

    async def _truncate_object(self, node: Node, size: int) -> None:
        """Replace the object by its first `size` bytes, zero-filled beyond its end.
        Kept bytes are copied server-side (or re-sent, for small objects)."""
        if size == 0:
            result = await self.store.put_object(self.file_key(node.path), b"",
                                                 self._encode_now(node))
        else:
            base = ObjectInfo(self.file_key(node.path), min(size, node.size), 0,
                              etag=node.etag)
            upload = Upload(self.uploads, base.key, lambda: self._encode_now(node), base)
            await upload.write(size, b"")
            result = await upload.close()
        node.size, node.etag, node.last_modified = size, result.get("ETag", ""), None

    def _encode_now(self, node: Node) -> dict[str, str]:
        """The node's attributes for an object being written: what was pending goes in."""
        node.meta_dirty = False
        return encode(node.attrs)

    # -- links -----------------------------------------------------------------------------

    async def symlink(self, parent_inode: int, name: str, target: str, uid: int,
                      gid: int) -> Node:
        """A symbolic link as s3fs stores it: the body is the target, the mode S_IFLNK."""
        self._writable()
        parent = self.table.get(parent_inode)
        path = self._child_path(parent, name)
        if await self._exists(parent, name):
            raise Exists(path)
        attrs = Attributes(stat.S_IFLNK | 0o777, uid, gid, time.time())
        result = await self.store.put_object(self.file_key(path), os.fsencode(target),
                                             encode(attrs))
        node = self.table.put(path, attrs)
        node.meta_known, node.symlink_target = True, target
        node.size, node.etag = len(os.fsencode(target)), result.get("ETag", "")
        node.last_modified = None
        self._listed(parent.path, name, True)
        return node

    async def readlink(self, inode: int) -> str:
        node = self.table.get(inode)
        if not stat.S_ISLNK(node.attrs.mode):
            raise S3mpfsError(f"{node.path} is not a symbolic link")
        if node.symlink_target is None:
            data = await self.store.get_range(self.file_key(node.path), 0, max(node.size, 1))
            node.symlink_target = os.fsdecode(data)
        return node.symlink_target

    async def link(self) -> None:
        raise Unsupported("hard links cannot be stored in S3")

    # -- renames ---------------------------------------------------------------------------

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int) -> None:
        self._writable()
        node = await self.lookup(old_parent, old_name)
        target_dir = self.table.get(new_parent)
        new_path = self._child_path(target_dir, new_name)
        if node.upload is not None:
            raise Unsupported(f"{node.path} is being written; rename it after close()")
        if flags & ~RENAME_NOREPLACE:
            raise Unsupported("rename flags other than RENAME_NOREPLACE")
        try:
            existing = await self.lookup(new_parent, new_name)
        except NotFound:
            existing = None
        if existing is not None:
            if flags & RENAME_NOREPLACE:
                raise Exists(new_path)
            if existing.is_dir != node.is_dir:
                raise IsADirectory(new_path) if existing.is_dir else NotADirectory(new_path)
            if existing.is_dir:
                await self._check_empty(new_path)
            if existing.upload is not None:
                raise Unsupported(f"{new_path} is being written")
        old_path, old_dir = node.path, node.parent_path
        if node.is_dir:
            await self._rename_dir(node, new_path)
        else:
            metadata = encode(node.attrs) if node.meta_dirty or node.meta_writing else None
            node.meta_dirty = False  # the copy carries the pending attributes
            moved = await self._move_object(self.file_key(old_path), self.file_key(new_path),
                                            metadata)
            node.etag, node.last_modified = moved.etag, None  # we wrote it
        self.table.move(old_path, new_path)
        self._listed(old_dir, old_name, False)
        self._listed(target_dir.path, new_name, True)
        for path in [p for p in self._listings if p == old_path or p.startswith(old_path + "/")]:
            del self._listings[path]
        self._created_dirs -= {p for p in self._created_dirs
                               if p == old_path or p.startswith(old_path + "/")}

    async def _move_object(self, src: str, dst: str,
                           metadata: dict[str, str] | None) -> ObjectInfo:
        """Server-side copy, then delete: the bytes never leave S3."""
        copied = await self.copier.copy(src, dst, metadata)
        await self.store.delete(src)
        return copied

    async def _rename_dir(self, node: Node, new_path: str) -> None:
        """Move every object under the directory's prefix, in parallel. Not atomic: an
        interruption leaves some objects under each name, none lost. Attribute changes
        still pending for files inside travel with their copies."""
        old_prefix, new_prefix = self.dir_key(node.path), self.dir_key(new_path)
        listing = await self.store.list(old_prefix, delimiter=None)
        limiter = trio.CapacityLimiter(self.config.upload_concurrency)

        async def move(info: ObjectInfo) -> None:
            relative = info.key[len(old_prefix):]
            inside = self.table.at(f"{node.path}/{relative}".rstrip("/"))
            metadata = None
            if inside is not None and (inside.meta_dirty or inside.meta_writing):
                # pending attributes (the copy must not read the object's older ones)
                metadata, inside.meta_dirty = encode(inside.attrs), False
            async with limiter:
                await self._move_object(info.key, new_prefix + info.key[len(old_prefix):],
                                        metadata)

        async with trio.open_nursery() as nursery:
            for info in listing.objects:
                nursery.start_soon(move, info)
        if not any(info.key == old_prefix for info in listing.objects):
            await self.store.put_object(new_prefix, b"", encode(node.attrs))  # keep the dir

    def forget(self, inode: int, count: int) -> None:
        self.table.forget(inode, count)



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


def _usable_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..", REGISTRY_DIR)


