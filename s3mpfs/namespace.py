"""The filesystem's logic on top of S3: names, directories, open files.

`operations.py` translates FUSE calls into calls on `Namespace`; this module decides
what they mean for the bucket. Directories are common prefixes and `dir/` markers;
files are objects; listings come from ListObjectsV2, never one HEAD per file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass, field

import trio

from .config import MountConfig
from .errors import (
    Exists,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    ReadOnly,
    S3mpfsError,
    Unsupported,
    describe,
    errno_for,
)
from .inodes import ROOT_INODE, InodeTable, Node, join
from .metadata import Attributes, Defaults, decode, encode
from .reader import ObjectReader
from .store import ObjectInfo, S3Store
from .upload import Upload, UploadShared

log = logging.getLogger(__name__)

MAX_NAME = 255  # bytes, what POSIX tools expect of one path component
MAX_KEY = 1024  # bytes, S3's key length limit
LISTING_TTL = 2.0  # seconds a directory listing answers lookups without a request


@dataclass
class _Listing:
    taken: float
    names: set[str] = field(default_factory=set)


@dataclass
class WriteHandle:
    """A file open for writing. Each flush (every close() of a descriptor) commits what
    was written; later writes through a descriptor still open (dup, fork, shell
    redirections) continue in a new upload that starts from the committed object."""

    node: Node
    upload: Upload | None = None
    must_commit: bool = False  # the file must become an object even with no new bytes


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
        self.defaults = Defaults(config.uid, config.gid, config.file_mode, config.dir_mode)
        now = time.time()
        self.table = InodeTable(Attributes(stat.S_IFDIR | config.dir_mode, config.uid,
                                           config.gid, now))
        self._listings: dict[str, _Listing] = {}
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
        if len(name.encode()) > MAX_NAME:
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
        """Record a file seen in S3 (by HEAD when metadata is set, else by a listing)."""
        node = self.table.at(path)
        if node is not None and node.upload is not None:
            return node  # being written: what we hold is newer than S3
        keep = (node is not None and node.meta_known and info.metadata is None
                and node.etag == info.etag)
        attrs = node.attrs if keep and node is not None else decode(
            info.metadata, directory=False, last_modified=info.mtime, defaults=self.defaults)
        node = self.table.put(path, attrs)
        node.size, node.etag, node.storage_class = info.size, info.etag, info.storage_class
        node.meta_known = keep or info.metadata is not None
        return node

    def _dir_node(self, path: str, info: ObjectInfo | None = None) -> Node:
        node = self.table.at(path)
        if node is not None and node.is_dir and (node.meta_known or info is None):
            return node
        attrs = decode(info.metadata if info else None, directory=True,
                       last_modified=info.mtime if info else time.time(),
                       defaults=self.defaults)
        node = self.table.put(path, attrs)
        node.size, node.meta_known = 0, bool(info and info.metadata is not None)
        return node

    # -- lookups and listings ----------------------------------------------------------

    async def lookup(self, parent_inode: int, name: str) -> Node:
        parent = self.table.get(parent_inode)
        path = self._child_path(parent, name)
        node = self.table.at(path)
        if node is not None and node.upload is not None:
            return node
        listing = self._listings.get(parent.path)
        if (listing is not None and time.monotonic() - listing.taken < LISTING_TTL
                and node is not None and node.refreshed >= listing.taken):
            return node  # listed a moment ago
        if listing is not None and time.monotonic() - listing.taken < LISTING_TTL \
                and name not in listing.names:
            raise NotFound(path)
        return await self._fetch(path)

    async def _fetch(self, path: str) -> Node:
        """Find what `path` is in S3: an object (HEAD), else a prefix (LIST, one key)."""
        try:
            info = await self.store.head(self.file_key(path))
        except Exception as exc:
            if errno_for(exc) != errno.ENOENT:
                raise
        else:
            if not info.key.endswith("/"):
                return self._file_node(path, info)
        listing = await self.store.list(self.dir_key(path), max_keys=1)
        if listing.objects or listing.prefixes:
            marker = next((o for o in listing.objects if o.key == self.dir_key(path)), None)
            if marker is not None:
                try:
                    marker = await self.store.head(marker.key)
                except Exception as exc:
                    log.debug("HEAD of directory marker %s failed: %s", marker.key, exc)
            return self._dir_node(path, marker)
        self.table.detach(path)
        raise NotFound(path)

    async def getattr(self, inode: int) -> Node:
        return self.table.get(inode)

    async def list_dir(self, inode: int) -> list[Node]:
        """Every entry of a directory, from one paginated ListObjectsV2."""
        directory = self.table.get(inode)
        if not directory.is_dir:
            raise NotADirectory(directory.path)
        prefix = self.dir_key(directory.path)
        taken = time.monotonic()
        listing = await self.store.list(prefix)
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
        self._listings[directory.path] = _Listing(taken, set(entries))
        return [entries[name] for name in sorted(entries)]

    def _uploading_in(self, dir_path: str) -> list[Node]:
        return [h.node for h in self._handles.values()
                if isinstance(h, WriteHandle) and h.node.upload is not None
                and h.node.parent_path == dir_path]

    def _changed(self, dir_path: str) -> None:
        """A directory's content changed through us: its cached listing is stale."""
        self._listings.pop(dir_path, None)

    # -- directories -------------------------------------------------------------------

    async def mkdir(self, parent_inode: int, name: str, mode: int, uid: int, gid: int) -> Node:
        self._writable()
        parent = self.table.get(parent_inode)
        path = self._child_path(parent, name)
        if await self._exists(parent, name):
            raise Exists(path)
        attrs = Attributes(stat.S_IFDIR | stat.S_IMODE(mode), uid, gid, time.time())
        await self.store.put_object(self.dir_key(path), b"", encode(attrs))
        self._changed(parent.path)
        node = self.table.put(path, attrs)
        node.meta_known = True
        return node

    async def rmdir(self, parent_inode: int, name: str) -> None:
        self._writable()
        parent = self.table.get(parent_inode)
        path = self._child_path(parent, name)
        node = await self.lookup(parent_inode, name)
        if not node.is_dir:
            raise NotADirectory(path)
        listing = await self.store.list(self.dir_key(path), max_keys=2)
        others = [o for o in listing.objects if o.key != self.dir_key(path)]
        if others or listing.prefixes or self._uploading_in(path):
            raise NotEmpty(path)
        await self.store.delete(self.dir_key(path))
        self._changed(parent.path)
        self._changed(path)
        self.table.detach(path)

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
        await self.store.delete(self.file_key(node.path))
        self._changed(node.parent_path)
        self.table.detach(node.path)

    async def create(self, parent_inode: int, name: str, mode: int, uid: int,
                     gid: int) -> tuple[int, Node]:
        self._writable()
        parent = self.table.get(parent_inode)
        path = self._child_path(parent, name)
        existing = self.table.at(path)
        if existing is not None and existing.is_dir:
            raise IsADirectory(path)
        attrs = Attributes(stat.S_IFREG | stat.S_IMODE(mode), uid, gid, time.time())
        node = self.table.put(path, attrs)
        node.meta_known, node.size, node.etag = True, 0, ""
        self._changed(parent.path)
        return self._open_for_write(node, truncate=True, must_commit=True), node

    async def open(self, inode: int, flags: int) -> int:
        node = self.table.get(inode)
        if node.is_dir:
            raise IsADirectory(node.path)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            if node.upload is not None:
                raise Unsupported(f"{node.path} is being written; read it after close()")
            reader = ObjectReader(self.store, self.uploads.nursery, self.file_key(node.path),
                                  node.size, self.config.read_ahead)
            return self._add_handle(ReadHandle(node, reader))
        self._writable()
        truncate = bool(flags & os.O_TRUNC) and node.size > 0
        return self._open_for_write(node, truncate=truncate, must_commit=truncate)

    def _open_for_write(self, node: Node, *, truncate: bool, must_commit: bool) -> int:
        if node.upload is not None:
            raise Unsupported(f"{node.path} is already open for writing")
        handle = WriteHandle(node, must_commit=must_commit)
        self._start_upload(handle, truncate=truncate)
        return self._add_handle(handle)

    def _start_upload(self, handle: WriteHandle, *, truncate: bool) -> Upload:
        """A new upload for the handle: empty, or continuing the committed object."""
        node = handle.node
        base = None
        if not truncate and node.size > 0:
            base = ObjectInfo(self.file_key(node.path), node.size, 0, etag=node.etag)
        handle.upload = node.upload = Upload(
            self.uploads, self.file_key(node.path), lambda: self._upload_metadata(node), base)
        if truncate:
            node.size = 0
        return handle.upload

    def _upload_metadata(self, node: Node) -> dict[str, str]:
        return encode(node.attrs)

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
            raise Unsupported("reading a file that is being written")
        return await handle.reader.read(offset, length)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handle(fh)
        if not isinstance(handle, WriteHandle):
            raise S3mpfsError("file not open for writing")
        upload = handle.upload or self._start_upload(handle, truncate=False)
        written = await upload.write(offset, data)
        handle.node.attrs.mtime = time.time()
        return written

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
        # A truncation with nothing written yet waits for the last close, so a shell
        # redirection (which closes a duplicate descriptor first) keeps the old version
        # readable until the new content is complete.
        needed = upload.bytes_written > 0 or (handle.must_commit and (final or node.etag == ""))
        if not needed and not final:
            return
        handle.upload = None
        if node.upload is upload:
            node.upload = None
        if not needed:
            await upload.discard()
            return
        try:
            result = await upload.close()
        except Exception:
            self.table.detach(node.path)  # S3 still holds the previous version
            self._changed(node.parent_path)
            raise
        handle.must_commit = False
        node.size = upload.size
        node.etag = result.get("ETag", "")
        node.refreshed = time.monotonic()

    async def fsync(self, fh: int) -> None:
        """Report a failed upload early; the object itself appears at close()."""
        handle = self.handle(fh)
        if isinstance(handle, WriteHandle) and handle.upload.error is not None:
            raise handle.upload.error

    # -- attributes, links, renames ----------------------------------------------------

    async def setattr(self, inode: int, fh: int | None, *, size: int | None = None,
                      mode: int | None = None, uid: int | None = None, gid: int | None = None,
                      mtime_ns: int | None = None) -> Node:
        node = self.table.get(inode)
        attrs = Attributes(node.attrs.mode, node.attrs.uid, node.attrs.gid, node.attrs.mtime)
        if mode is not None:
            attrs.mode = stat.S_IFMT(node.attrs.mode) | stat.S_IMODE(mode)
        if uid is not None:
            attrs.uid = uid
        if gid is not None:
            attrs.gid = gid
        if mtime_ns is not None:
            attrs.mtime = mtime_ns / 1e9
        changed = attrs != node.attrs
        if size is not None and size != node.current_size:
            self._writable()
            await self._truncate(node, size)
        if changed:
            self._writable()
            if node.upload is None and not node.is_dir:
                await self.store.copy_object(self.file_key(node.path), self.file_key(node.path),
                                             encode(attrs), node.storage_class)
            elif node.is_dir and node.path:
                await self.store.put_object(self.dir_key(node.path), b"", encode(attrs))
            node.attrs = attrs  # a file being written carries them into its upload
            node.meta_known = True
        return node

    async def _truncate(self, node: Node, size: int) -> None:
        if node.is_dir:
            raise IsADirectory(node.path)
        if node.upload is not None:
            if size == 0 and node.upload.bytes_written == 0:
                node.upload.base = None  # O_TRUNC by a separate truncate(): start empty
                node.size = 0
                for handle in self._handles.values():
                    if isinstance(handle, WriteHandle) and handle.upload is node.upload:
                        handle.must_commit = True
            elif size == 0:
                node.upload.planner.truncate_to_zero()
            elif size > node.upload.size:
                await node.upload.write(size, b"")
            else:
                raise Unsupported(f"{node.path}: shrinking a file being written")
            return
        if size == 0:
            await self.store.put_object(self.file_key(node.path), b"", encode(node.attrs))
            node.size = 0
            return
        raise Unsupported(f"{node.path}: changing the size of a closed file")

    async def symlink(self, parent_inode: int, name: str, target: str, uid: int,
                      gid: int) -> Node:
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
        self._changed(parent.path)
        return node

    async def readlink(self, inode: int) -> str:
        node = self.table.get(inode)
        if not stat.S_ISLNK(node.attrs.mode):
            raise S3mpfsError(f"{node.path} is not a symbolic link", )
        if node.symlink_target is None:
            data = await self.store.get_range(self.file_key(node.path), 0, max(node.size, 1))
            node.symlink_target = os.fsdecode(data)
        return node.symlink_target

    async def link(self) -> None:
        raise Unsupported("hard links are not supported on S3")

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int) -> None:
        self._writable()
        node = await self.lookup(old_parent, old_name)
        target_dir = self.table.get(new_parent)
        new_path = self._child_path(target_dir, new_name)
        if node.upload is not None:
            raise Unsupported(f"{node.path} is being written; rename it after close()")
        try:
            existing = await self.lookup(new_parent, new_name)
        except NotFound:
            existing = None
        if existing is not None:
            if flags & 1:  # RENAME_NOREPLACE
                raise Exists(new_path)
            if flags:
                raise Unsupported("rename flags other than RENAME_NOREPLACE")
            if existing.is_dir != node.is_dir:
                raise IsADirectory(new_path) if existing.is_dir else NotADirectory(new_path)
            if existing.is_dir:
                listing = await self.store.list(self.dir_key(new_path), max_keys=2)
                if [o for o in listing.objects if o.key != self.dir_key(new_path)] \
                        or listing.prefixes:
                    raise NotEmpty(new_path)
        old_path = node.path
        if node.is_dir:
            await self._rename_dir(old_path, new_path)
        else:
            await self._move_object(self.file_key(old_path), self.file_key(new_path),
                                    node.storage_class)
        self.table.move(old_path, new_path)
        self._changed(node.parent_path)
        self._changed(target_dir.path)

    async def _move_object(self, src: str, dst: str, storage_class: str | None) -> None:
        await self.store.copy_object(src, dst, None, storage_class)
        await self.store.delete(src)

    async def _rename_dir(self, old_path: str, new_path: str) -> None:
        """Copy every object under the old prefix, then delete it. Not atomic."""
        old_prefix, new_prefix = self.dir_key(old_path), self.dir_key(new_path)
        listing = await self.store.list(old_prefix, delimiter=None)
        async with trio.open_nursery() as nursery:
            limiter = trio.CapacityLimiter(self.config.upload_concurrency)

            async def move(info: ObjectInfo) -> None:
                async with limiter:
                    await self._move_object(info.key, new_prefix + info.key[len(old_prefix):],
                                            info.storage_class)

            for info in listing.objects:
                nursery.start_soon(move, info)
        if not any(o.key == old_prefix for o in listing.objects):
            await self.store.put_object(new_prefix, b"", encode(self.table.get(
                self.table.at(old_path).inode).attrs) if self.table.at(old_path) else {})

    def forget(self, inode: int, count: int) -> None:
        self.table.forget(inode, count)

    @property
    def root(self) -> Node:
        return self.table.get(ROOT_INODE)


def _usable_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


