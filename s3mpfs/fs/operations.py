"""Thin pyfuse3.Operations: translate each FUSE call to the namespace, no logic here.

Every handler is wrapped so that any exception becomes a FUSEError with the errno
`errors.errno_for` chooses; unexpected ones are logged with their traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from ..errors import NotADirectory, S3mpfsError, describe, errno_for
from .namespace import XATTR_NAMESPACE, Namespace
from .node import Node

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

ATTR_TIMEOUT = 1.0
BLOCK_SIZE = 4096
HUGE = 2**60  # bytes reported free by statfs: S3 has no practical limit


def fuse_errors(handler: F) -> F:
    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except S3mpfsError as exc:
            log.debug("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception as exc:
            code = errno_for(exc)
            log.warning("%s failed: %s", _what(handler.__name__, args), describe(exc),
                        exc_info=log.isEnabledFor(logging.DEBUG))
            raise pyfuse3.FUSEError(code) from None

    return wrapper  # type: ignore[return-value]


FH_HANDLERS = {"read", "write", "flush", "fsync"}  # their first argument is a file handle


def _what(handler: str, args: tuple[Any, ...]) -> str:
    """The operation and the file it was about, for a log line: names passed as bytes,
    or the path of the open file a handle stands for."""
    names = [repr(os.fsdecode(a)) for a in args if isinstance(a, bytes)]
    if handler in FH_HANDLERS and len(args) > 1 and isinstance(args[0], S3Operations):
        path = args[0].ns.files.path_of(args[1])
        names.append(repr(path) if path else f"(handle {args[1]})")
    return " ".join([handler, *names])


SET_ID_BITS = stat.S_ISUID | stat.S_ISGID


def entry(node: Node, hidden: int = SET_ID_BITS) -> pyfuse3.EntryAttributes:
    """What stat shows of `node`. The setuid/setgid bits of files are `hidden` (all
    attributes shown go through here; the stored mode keeps them): anyone who can write an
    object with x-amz-meta-mode 0104755 would otherwise plant a setuid program. A
    directory's setgid bit (group inheritance) is always shown."""
    attr = pyfuse3.EntryAttributes()
    attr.st_ino = node.inode
    attr.generation = 0
    # Attributes from a listing alone (no HEAD yet: mode, owner and times are defaults)
    # are not cached by the kernel: its next use of the name asks again (LOOKUP), and
    # that HEADs it. A names-only listing (ls -f, find -name) thus costs no HEAD.
    timeout = ATTR_TIMEOUT if node.meta_known or node.written is not None else 0
    attr.entry_timeout = timeout
    attr.attr_timeout = timeout
    mode = node.attrs.mode
    attr.st_mode = mode if stat.S_ISDIR(mode) else mode & ~hidden
    attr.st_nlink = 0 if node.unlinked else 2 if stat.S_ISDIR(node.attrs.mode) else 1
    attr.st_uid = node.attrs.uid
    attr.st_gid = node.attrs.gid
    attr.st_rdev = node.attrs.rdev
    size = node.current_size
    if node.symlink_target is not None:
        size = len(os.fsencode(node.symlink_target))
    attr.st_size = size
    attr.st_blksize = BLOCK_SIZE * 256
    attr.st_blocks = (size + 511) // 512
    attr.st_mtime_ns = node.attrs.mtime
    attr.st_atime_ns = node.attrs.atime
    attr.st_ctime_ns = node.attrs.ctime
    return attr


def _invalidate_attributes(inode: int) -> None:
    """Make the kernel ask for the inode's attributes again (its size changed behind its
    back). Attributes only: invalidating pages from a request handler could deadlock."""
    try:
        pyfuse3.invalidate_inode(inode, attr_only=True)
    except OSError as exc:  # the kernel forgot the inode meanwhile: nothing to do
        log.debug("invalidate_inode(%d): %s", inode, exc)


_STORED_XATTRS = os.fsencode(XATTR_NAMESPACE)


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class S3Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, namespace: Namespace) -> None:
        super().__init__()
        self.ns = namespace
        self.hidden = 0 if namespace.config.allow_suid else SET_ID_BITS
        namespace.files.invalidate_attributes = _invalidate_attributes
        namespace.names.version_changed = _invalidate_attributes
        # A handle's inode until its first readdir, then the snapshot of its listing.
        self._dir_handles: dict[int, int | list[tuple[str, Node]]] = {}
        self._next_dir_fh = 1
        self.after_init: Callable[[], None] | None = None

    def init(self) -> None:
        """The kernel's INIT, answered when this returns (the answer is written before
        the next request is read): `after_init` schedules what must follow the answer."""
        if self.after_init is not None:
            self.after_init()

    def entry(self, node: Node) -> pyfuse3.EntryAttributes:
        return entry(node, self.hidden)

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        node = await self.ns.lookup(parent_inode, _name(name))
        self.ns.table.remember(node)
        return self.entry(node)

    async def forget(self, inode_list: Any) -> None:
        for inode, count in inode_list:
            self.ns.forget(inode, count)

    @fuse_errors
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self.entry(await self.ns.getattr(inode))

    @fuse_errors
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None,
                      ctx: Any) -> Any:
        node = await self.ns.setattr(
            inode, fh,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None)
        return self.entry(node)

    @fuse_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        directory = self.ns.table.get(inode)
        if not directory.is_dir:
            raise NotADirectory(directory.path)
        fh = self._next_dir_fh
        self._next_dir_fh += 1
        # Listed at the first readdir, not here: programs open a directory only to fsync
        # it (SQLite after creating its journal), and that needs no LIST.
        self._dir_handles[fh] = inode
        return fh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._dir_handles.get(fh, [])
        if isinstance(entries, int):  # the first readdir: the snapshot is taken now
            listed = await self.ns.list_dir(entries)
            directory = self.ns.table.get(entries)
            parent = self.ns.table.at(directory.parent_path) or directory
            entries = [(".", directory), ("..", parent), *listed]
            if fh in self._dir_handles:
                self._dir_handles[fh] = entries
        for index in range(start_id, len(entries)):
            name, node = entries[index]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self.entry(node), index + 1):
                return
            if name not in (".", ".."):  # the kernel takes no reference for these
                self.ns.table.remember(node)

    async def releasedir(self, fh: int) -> None:
        entries = self._dir_handles.pop(fh, [])
        if not isinstance(entries, int):  # never read: it listed nothing
            self.ns.released_dir([node for name, node in entries[2:]])
            listed = len(entries)
            del entries  # (the snapshot no longer holds its nodes)
            self.ns.table.handle_ended(listed)

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        node = await self.ns.mkdir(parent_inode, _name(name), mode & ~ctx.umask, ctx.uid,
                                   ctx.gid)
        self.ns.table.remember(node)
        return self.entry(node)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.ns.rmdir(parent_inode, _name(name))

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.ns.unlink(parent_inode, _name(name))

    @fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        await self.ns.rename(parent_inode_old, _name(name_old), parent_inode_new,
                             _name(name_new), flags)

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        node = await self.ns.symlink(parent_inode, _name(name), os.fsdecode(target),
                                     ctx.uid, ctx.gid)
        self.ns.table.remember(node)
        return self.entry(node)

    @fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> Any:
        node = await self.ns.mknod(parent_inode, _name(name), mode & ~ctx.umask, rdev,
                                   ctx.uid, ctx.gid)
        self.ns.table.remember(node)
        return self.entry(node)

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if not name.startswith(_STORED_XATTRS):
            # Only user.* attributes are stored (setxattr refuses the others with
            # EOPNOTSUPP, and so does this): `ls -l` asks every entry for security.selinux
            # and system.posix_acl_access, but stops asking on a device that answered
            # "not supported" (ENODATA it asks again for each entry: 2,002 requests for
            # 1,000 files), and so do libacl's users (cp -a, rsync -A, tar --acls).
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        return await self.ns.getxattr(inode, _name(name))

    @fuse_errors
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [os.fsencode(name) for name in await self.ns.listxattr(inode)]

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        await self.ns.setxattr(inode, _name(name), value)

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        await self.ns.removexattr(inode, _name(name))

    @fuse_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(await self.ns.readlink(inode))

    @fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        await self.ns.link()

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> Any:
        fh, node = await self.ns.create(parent_inode, _name(name), mode & ~ctx.umask,
                                        ctx.uid, ctx.gid, ctx.pid, flags)
        self.ns.table.remember(node)
        return pyfuse3.FileInfo(fh=fh), self.entry(node)

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        fh, direct_io, keep_cache = await self.ns.open(inode, flags, ctx.pid)
        return pyfuse3.FileInfo(fh=fh, direct_io=direct_io, keep_cache=keep_cache)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        return await self.ns.read(fh, off, size)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.ns.write(fh, off, buf)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        await self.ns.flush(fh)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.ns.fsync(fh)

    async def release(self, fh: int) -> None:
        await self.ns.release(fh)

    @fuse_errors
    async def statfs(self, ctx: Any) -> Any:
        stats = pyfuse3.StatvfsData()
        stats.f_bsize = stats.f_frsize = BLOCK_SIZE
        stats.f_blocks = stats.f_bfree = stats.f_bavail = HUGE // BLOCK_SIZE
        stats.f_files = stats.f_ffree = stats.f_favail = 2**40
        stats.f_namemax = 255
        return stats
