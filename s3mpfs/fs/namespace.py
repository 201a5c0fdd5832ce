"""The filesystem's operations on names: what each FUSE call means for the bucket.

`fs/operations.py` translates FUSE calls into calls on `Namespace`, which answers them with
the modules that each own one part of the state: `fs/names.py` (what the bucket holds, as
seen: listings, inodes, metadata), `fs/openfiles.py` (handles, uploads, commit on close) and
`fs/attributes.py` (storing attributes of closed files). This module decides what creating,
removing, renaming, linking and truncating mean in S3.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import replace
from typing import Any

from ..config import MountConfig
from ..errors import (
    Exists,
    FileTooLarge,
    IsADirectory,
    NoAttribute,
    NoSpace,
    NotADirectory,
    NotFound,
    ReadOnly,
    S3mpfsError,
    Stale,
    Unsupported,
)
from ..objects import ObjectInfo
from ..s3.copying import Copier
from ..s3.metadata import MAX_METADATA, Attributes, encode, format_mtime, metadata_size
from ..s3.store import DIRECTORY_TYPE, S3Store
from ..write.parts import PartPlanner
from ..write.upload import Upload, UploadShared
from .attributes import AttributeWriter
from .moves import move_directory, move_file
from .names import Names
from .node import Node
from .openfiles import OpenFiles
from .statwriter import StatWriter

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
XATTR_NAMESPACE = "user."  # the extended attributes stored; others are not supported


class Namespace:
    def __init__(self, config: MountConfig, store: S3Store, uploads: UploadShared) -> None:
        self.config = config
        self.store = store
        self.uploads = uploads
        self.copier = Copier(store, config.upload_concurrency, copies_parts=uploads.part_copy)
        self.names = Names(config, store, lambda path: self.files.being_written(path))
        self.table = self.names.table
        self.attributes = AttributeWriter(store, self.names, self.copier, uploads.nursery)
        self.files = OpenFiles(config, self.names, uploads, self.attributes)
        self.stat_writer = StatWriter(self.names)
        uploads.nursery.start_soon(self.stat_writer.run)

    def _writable(self) -> None:
        if self.config.read_only:
            raise ReadOnly("mounted read-only")

    # -- looking ------------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: str) -> Node:
        return await self.names.lookup(self.table.get(parent_inode), name)

    async def getattr(self, inode: int) -> Node:
        node = self.table.get(inode)
        await self.names.ensure_metadata(node)
        return node

    async def list_dir(self, inode: int) -> list[tuple[str, Node]]:
        """Every entry of a directory, by name."""
        directory = self.table.get(inode)
        if not directory.is_dir:
            raise NotADirectory(directory.path)
        entries = await self.names.list(directory)
        nodes = [node for _, node in entries]
        self.names.opened(nodes)  # until released_dir
        await self.names.from_stat_index(directory, nodes)
        return entries

    def forget(self, inode: int, count: int) -> None:
        self.table.forget(inode, count)

    def released_dir(self, nodes: list[Node]) -> None:
        """A directory handle (list_dir) ended: the nodes it listed that the kernel does
        not hold go."""
        self.names.release(nodes)

    # -- directories -------------------------------------------------------------------

    async def mkdir(self, parent_inode: int, name: str, mode: int, uid: int, gid: int) -> Node:
        self._writable()
        parent = self.table.get(parent_inode)
        path = self.names.child_path(parent, name, directory=True)
        if await self._exists(parent, name):
            raise Exists(path)
        mode = stat.S_IMODE(mode) | (parent.attrs.mode & stat.S_ISGID)  # inherited, as on Linux
        attrs = Attributes(stat.S_IFDIR | mode, uid, _group(parent, gid), time.time_ns())
        await self.store.put_object(self.names.dir_key(path), b"", encode(attrs),
                                    content_type=DIRECTORY_TYPE)
        node = self.table.put(path, attrs)
        node.meta_known, node.unlinked = True, False
        self._entries_changed(parent, name, present=True)
        self.names.created_dir(path)
        return node

    async def rmdir(self, parent_inode: int, name: str) -> None:
        self._writable()
        node = await self.lookup(parent_inode, name)
        if not node.is_dir:
            raise NotADirectory(node.path)
        await self.names.check_empty(node.path)
        node.meta_dirty = False  # its attributes go with it (see AttributeWriter.settled)
        await self.attributes.settled(node)
        await self.store.delete(self.names.dir_key(node.path))
        self.names.forget_dir(node.path)
        self._removed(node)

    async def _exists(self, parent: Node, name: str) -> bool:
        try:
            await self.lookup(parent.inode, name)
        except NotFound:
            return False
        return True

    async def unlink(self, parent_inode: int, name: str) -> None:
        self._writable()
        node = await self.lookup(parent_inode, name)
        if node.is_dir:
            raise IsADirectory(node.path)
        node.meta_dirty = False  # its attributes go with it: no store of them starts now
        await self.files.settled(node)  # a commit or store running first: deleted after
        await self._end_written(node)
        node.unlinked = True  # no commit starts while it is deleted (it would come back)
        try:
            await self.store.delete(self.names.file_key(node.path))
        except BaseException:
            node.unlinked = False
            raise
        self._removed(node)

    async def _end_written(self, node: Node) -> None:
        """The file's name goes (unlink, or another file renamed onto it) while it may be
        being written: an upload that needs S3 ends, as the program asked (not a
        failure); a self-contained one goes on: its descriptors read and write it, as
        POSIX has it for an open file, and its last close stores nothing."""
        if node.upload is not None and not node.upload.self_contained:
            await self.files.lose_writes(node)

    def _removed(self, node: Node) -> None:
        """The node's name is gone (unlinked or removed); open descriptors keep it."""
        node.unlinked = True
        parent = self.table.at(node.parent_path)
        if parent is not None:
            self._entries_changed(parent, node.name, present=False)
        self.table.detach(node.path)

    async def create(self, parent_inode: int, name: str, mode: int, uid: int,
                     gid: int, pid: int = 0, flags: int = os.O_TRUNC) -> tuple[int, Node]:
        """A new file. The kernel asks only for names it was told are absent, but that
        may come from a listing a moment old: another client may have created the object
        since. Without O_TRUNC, its bytes must not be replaced: the name is looked up
        in S3 first (an existing object is opened and appended to, or EEXIST for
        O_EXCL), and the new object is committed with If-None-Match: * where the server
        honours it. The lookup is skipped for O_EXCL and for a name this mount removed a
        moment ago (see _absence_known)."""
        self._writable()
        parent = self.table.get(parent_inode)
        path = self.names.child_path(parent, name)
        existing = self.table.at(path)
        if existing is not None and existing.is_dir:
            raise IsADirectory(path)
        only_new = not flags & os.O_TRUNC
        if only_new and not self._absence_known(parent, path, flags):
            found = await self.names.head(self.names.file_key(path))
            if found is not None:
                if flags & os.O_EXCL:
                    raise Exists(path)
                node = self.names.file_node(path, found)
                self.names.listed(parent.path, name, True)
                return await self.files.open_write(node, pid, truncate=False, must_commit=False,
                                                   readable=_readable(flags)), node
        attrs = Attributes(stat.S_IFREG | stat.S_IMODE(mode), uid, _group(parent, gid),
                           time.time_ns())
        node = self.table.put(path, attrs)
        node.meta_known, node.meta_dirty, node.size, node.etag = True, False, 0, ""
        node.last_modified, node.unlinked = None, False
        self._entries_changed(parent, name, present=True)
        fh = await self.files.open_write(node, pid, truncate=True, must_commit=True,
                                         only_new=only_new, readable=_readable(flags))
        return fh, node

    def _absence_known(self, parent: Node, path: str, flags: int) -> bool:
        """Whether a new file may skip looking its name up in S3: with O_EXCL (another
        client's object then costs EIO instead of EEXIST), and for a name this mount
        removed less than negative_ttl ago (SQLite's journal, deleted at each commit and
        created at the next): an object created in that moment is still never replaced
        (If-None-Match: *, or the HEAD before the commit), close() or fsync() fails with
        EIO instead. Otherwise (`>>`, `touch`) an object created meanwhile, even in a
        directory this mount made, is opened and appended to."""
        if self.names.removed_lately(path):
            return True
        if not flags & os.O_EXCL:
            return False
        return self.store.conditional_create or self.names.knows_every_name(parent.path)

    async def open(self, inode: int, flags: int, pid: int = 0) -> tuple[int, bool, bool]:
        """Open a file; returns the handle, whether reads bypass the page cache and
        whether the kernel may keep its cached pages (see OpenFiles.open_read)."""
        node = self.table.get(inode)
        if flags & os.O_ACCMODE == os.O_RDONLY:
            return await self.files.open_read(node, pid)
        self._writable()
        if node.upload is None and self.table.at(node.path) is not node:
            # The kernel's entry for a name outlived the file the mount knows by it (a new
            # file whose commit failed was forgotten, S3 holds what another client put
            # there): writing it would build on nothing, at a key the name may no longer
            # have. ESTALE makes the kernel look the name up again and retry the open.
            raise Stale(f"{node.path}: no longer this name's file; looked up again")
        await self._know_replaced_version(node)
        truncate = bool(flags & os.O_TRUNC)  # an empty file too: its times change (POSIX)
        if truncate:
            node.attrs = node.attrs.touched(time.time_ns())
        fh = await self.files.open_write(node, pid, truncate=truncate, must_commit=truncate,
                                         readable=_readable(flags))
        return fh, False, False

    async def _know_replaced_version(self, node: Node) -> None:
        """HEAD an object about to get a new version if its headers are not known yet:
        the new version keeps those s3mpfs does not own (Content-Type, tags, ...)."""
        if node.etag and node.upload is None and self.names.replaced_version(node) is None:
            node.head = await self.names.head(self.names.file_key(node.path))

    async def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        return await self.files.read(fh, offset, length)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        return await self.files.write(fh, offset, data)

    async def flush(self, fh: int) -> None:
        await self.files.flush(fh)

    async def release(self, fh: int) -> None:
        await self.files.release(fh)

    async def fsync(self, fh: int) -> None:
        await self.files.fsync(fh)

    async def write_pending_metadata(self) -> None:
        """Store every deferred attribute change now (at unmount)."""
        await self.attributes.write_pending()
        await self.stat_writer.flush()  # after them: they change what it records

    # -- attributes ----------------------------------------------------------------------

    async def setattr(self, inode: int, fh: int | None, *, size: int | None = None,
                      mode: int | None = None, uid: int | None = None, gid: int | None = None,
                      atime_ns: int | None = None, mtime_ns: int | None = None) -> Node:
        """chmod, chown, utimensat, truncate. As POSIX has it, each call sets ctime, even
        one that sets what is already there (chown to the same owner), and a truncate
        sets mtime too (unless the same call sets it). As on Linux, truncate(2) to the
        size the file has changes nothing; ftruncate(2) (`fh` given) still sets the times."""
        node = self.table.get(inode)
        await self.names.ensure_metadata(node)
        if size == node.current_size and fh is None and mtime_ns is None:
            size = None  # truncate(2) to the size it has
        changes: dict[str, Any] = {}
        if mode is not None:
            changes["mode"] = stat.S_IFMT(node.attrs.mode) | stat.S_IMODE(mode)
        if uid is not None:
            changes["uid"] = uid
        if gid is not None:
            changes["gid"] = gid
        if atime_ns is not None:
            changes["atime"] = atime_ns
        if mtime_ns is not None:
            changes["mtime"] = mtime_ns
        if (size, mode, uid, gid, atime_ns, mtime_ns) == (None,) * 6:
            return node  # nothing asked (chown -1 -1): not even ctime changes
        self._writable()
        now = time.time_ns()
        attrs = replace(node.attrs, **changes).touched(
            now, mtime=size is not None and mtime_ns is None)
        before, node.attrs, node.meta_known = node.attrs, attrs, True
        resized = size is not None and size != node.current_size
        if resized:
            assert size is not None
            try:
                await self._truncate(node, size, fh)  # stores the new attributes with it
            except BaseException:
                node.attrs = before
                raise
        if mtime_ns is not None:
            for handle in self.files.write_handles(node):
                handle.mtime_set = True
        if not resized or node.upload is not None:  # (a truncate stored them)
            self.attributes.changed(node)
        return node

    async def _truncate(self, node: Node, size: int, fh: int | None) -> None:
        """A file open for writing changes its state (committed with it); a closed one
        is stored with its new length at once, as nothing else would commit it."""
        if node.is_dir:
            raise IsADirectory(node.path)
        if size > PartPlanner(self.uploads.part_size).max_size:
            raise FileTooLarge(f"{node.path}: {size} bytes is more than the largest "
                               "object the part schedule can hold")
        if not await self.files.truncate(node, size, fh):
            await self._truncate_object(node, size)

    async def _truncate_object(self, node: Node, size: int) -> None:
        """Replace the object by its first `size` bytes, zero-filled beyond its end.
        Kept bytes are copied server-side (or re-sent, for small objects)."""
        await self._know_replaced_version(node)
        replacing = self.names.replaced_version(node)
        if size == 0:
            result = await self.store.put_object(self.names.file_key(node.path), b"",
                                                 self.attributes.encode_now(node),
                                                 replacing=replacing)
        else:
            base = ObjectInfo(self.names.file_key(node.path), min(size, node.size), 0,
                              etag=node.etag)
            upload = Upload(self.uploads, base.key, lambda: self.attributes.encode_now(node),
                            base, replacing=replacing)
            try:
                await upload.truncate(size)
            except BaseException:
                await upload.discard()  # nothing to keep: no upload left pending
                raise
            result = await upload.close()
        node.size, node.etag, node.last_modified = size, result.get("ETag", ""), None
        node.meta_dirty = False  # the new object carries the attributes

    # -- links -----------------------------------------------------------------------------

    async def symlink(self, parent_inode: int, name: str, target: str, uid: int,
                      gid: int) -> Node:
        """A symbolic link as s3fs stores it: the body is the target, the mode S_IFLNK."""
        attrs = Attributes(stat.S_IFLNK | 0o777, uid, gid, time.time_ns())
        node = await self._put_new(parent_inode, name, attrs, os.fsencode(target))
        node.symlink_target = target
        return node

    async def mknod(self, parent_inode: int, name: str, mode: int, rdev: int, uid: int,
                    gid: int) -> Node:
        """A regular file (empty), FIFO, socket or device node, as s3fs stores them: a
        zero-byte object whose mode carries the file type, and the device number."""
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR,
                        stat.S_IFBLK):
            raise Unsupported(f"{name}: file type {kind:o}")
        device = rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
        attrs = Attributes(kind | stat.S_IMODE(mode), uid, gid, time.time_ns(), rdev=device)
        return await self._put_new(parent_inode, name, attrs, b"")

    async def _put_new(self, parent_inode: int, name: str, attrs: Attributes,
                       body: bytes) -> Node:
        """A new small object written at once (symlinks, special files)."""
        self._writable()
        parent = self.table.get(parent_inode)
        path = self.names.child_path(parent, name)
        if await self._exists(parent, name):
            raise Exists(path)
        attrs = replace(attrs, gid=_group(parent, attrs.gid))
        result = await self.store.put_object(self.names.file_key(path), body, encode(attrs),
                                             only_new=True)
        node = self.table.put(path, attrs)
        node.meta_known, node.meta_dirty, node.unlinked = True, False, False
        node.size, node.etag, node.last_modified = len(body), result.get("ETag", ""), None
        self._entries_changed(parent, name, present=True)
        return node

    def _entries_changed(self, directory: Node, name: str, *, present: bool) -> None:
        """An entry was added to or removed from a directory through this mount: keep
        its cached listing true, and its mtime and ctime now (shown, not stored: storing
        them would cost a request per change; see SEMANTICS.md)."""
        self.names.listed(directory.path, name, present)
        directory.attrs = directory.attrs.touched(time.time_ns())

    # -- extended attributes -------------------------------------------------------------

    async def getxattr(self, inode: int, name: str) -> bytes:
        node = await self.getattr(inode)
        try:
            return node.attrs.xattrs[name]
        except KeyError:
            raise NoAttribute(name) from None

    async def listxattr(self, inode: int) -> list[str]:
        return sorted((await self.getattr(inode)).attrs.xattrs)

    async def setxattr(self, inode: int, name: str, value: bytes) -> None:
        if not name.startswith(XATTR_NAMESPACE):
            raise Unsupported(f"extended attribute {name}: only user.* ones are stored")
        node = await self.getattr(inode)
        attrs = node.attrs.copy()
        attrs.xattrs[name] = value
        if metadata_size(encode(attrs)) > MAX_METADATA:
            raise NoSpace(f"{node.path}: S3 stores at most {MAX_METADATA} bytes of metadata")
        self._set_attributes(node, attrs)

    async def removexattr(self, inode: int, name: str) -> None:
        node = await self.getattr(inode)
        if name not in node.attrs.xattrs:
            raise NoAttribute(name)
        attrs = node.attrs.copy()
        del attrs.xattrs[name]
        self._set_attributes(node, attrs)

    def _set_attributes(self, node: Node, attrs: Attributes) -> None:
        """New attributes (ctime now): stored shortly, or by the upload in progress."""
        self._writable()
        node.attrs, node.meta_known = attrs.touched(time.time_ns(), mtime=False), True
        self.attributes.changed(node)

    async def readlink(self, inode: int) -> str:
        node = self.table.get(inode)
        if not stat.S_ISLNK(node.attrs.mode):
            raise S3mpfsError(f"{node.path} is not a symbolic link")
        return await self.names.symlink_target(node)

    async def link(self) -> None:
        raise Unsupported("hard links cannot be stored in S3")

    # -- renames ---------------------------------------------------------------------------

    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                     flags: int) -> None:
        self._writable()
        node = await self.lookup(old_parent, old_name)
        target_dir = self.table.get(new_parent)
        new_path = self.names.child_path(target_dir, new_name, directory=node.is_dir)
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
                await self.names.check_empty(new_path, "rename onto")
        old_path, old_dir = node.path, node.parent_path
        node.attrs = node.attrs.touched(time.time_ns(), mtime=False)  # a rename: ctime
        if node.meta_dirty or node.meta_writing:
            metadata = encode(node.attrs)  # the copy carries the pending attributes
        else:  # the rest of the source's metadata is kept by the copy
            metadata = {"ctime": format_mtime(node.attrs.ctime)}
        node.meta_dirty = False
        if node.is_dir:
            for inside in self.files.being_written(old_path, below=True):
                async with self.files.renaming(inside):  # its state moves with it
                    pending = encode(inside.attrs) if inside.meta_dirty else None
                    inside.meta_dirty = False
                    await move_file(self.names, self.copier, self.files, inside,
                                    new_path + inside.path[len(old_path):], replaced=False,
                                    metadata=pending)
            await self.attributes.settled(node)  # (its marker written again meanwhile)
            await move_directory(self.names, self.copier, self.config.upload_concurrency,
                                 node, new_path, metadata)
        else:
            async with self.files.renaming(node, existing):
                if existing is not None:  # ended as an unlink would
                    await self._end_written(existing)
                await move_file(self.names, self.copier, self.files, node, new_path,
                                replaced=existing is not None, metadata=metadata)
        if existing is not None:
            existing.unlinked = True
        self.table.move(old_path, new_path)
        old_parent_node = self.table.at(old_dir)
        if old_parent_node is not None:
            self._entries_changed(old_parent_node, old_name, present=False)
        self._entries_changed(target_dir, new_name, present=True)
        self.names.forget_dir(old_path)


def _group(parent: Node, gid: int) -> int:
    """The group of a new entry: the caller's, or its directory's if that directory is
    set-group-ID, as Linux does (its kernel leaves that to FUSE filesystems)."""
    return parent.attrs.gid if parent.attrs.mode & stat.S_ISGID else gid


def _readable(flags: int) -> bool:
    return flags & os.O_ACCMODE == os.O_RDWR
