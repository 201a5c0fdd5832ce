"""Open files: their handles, the one state each file being written has, and when it is
committed.

A file open for writing has one state, `node.upload` (write/upload.py): its size, the
version it builds on and what changed since (the spool in random mode, the parts in
streaming mode). Every descriptor, `stat`, listing and mmap of the file sees that state:
`write`, `ftruncate` and mmap stores change it, and S3 changes only when it is committed
(the last close of its writers, `fsync`). While a commit runs (`node.committing`) the file
still shows that state; reads wait for the new version.

Each flush (every close() of a descriptor) would commit what was written, but forked
children and duplicated descriptors (shell redirections) flush too: a file is committed
only at the close of the process that opened it, checked through /proc, or at release.
Later writes through a descriptor still open continue in a new upload that starts from
the committed object.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..config import MountConfig
from ..errors import Gone, IsADirectory, S3mpfsError, UploadFailed, describe
from ..objects import ObjectInfo
from ..s3.reader import ObjectReader
from ..write.upload import Upload, UploadShared
from .attributes import AttributeWriter
from .moves import RenameGate, follow_move
from .names import Names
from .node import Node
from .processes import holds_for_writing, process_of
from .versions import Versions

log = logging.getLogger(__name__)


@dataclass
class WriteHandle:
    """A file open for writing."""

    node: Node
    opener_pid: int = 0  # the process that opened it (0: unknown)
    upload: Upload | None = None
    mtime_set: bool = False  # utimens() while open: keep that mtime, not the close time
    reader: ObjectReader | None = None  # O_RDWR: reads of the stored object
    readable: bool = False  # O_RDWR: writes go to the spool (random mode) from the first
    closed: bool = False  # its opener closed it: it no longer holds the file's commit back
    # A commit of what it wrote failed (an fsync, refused or broken): those bytes are not
    # stored and their upload is aborted, so its later writes, fsyncs and close fail with
    # that error rather than start a version without them (zeros where they were).
    failed: S3mpfsError | None = None
    lost: bool = False  # see OpenFiles.lose_writes


@dataclass
class ReadHandle:
    node: Node
    reader: ObjectReader
    opener_pid: int = 0
    follows_writes: bool = False  # it read a random-mode file's writes: its next version
    lost: bool = False  # see OpenFiles.lose_writes


Handle = WriteHandle | ReadHandle


class OpenFiles:
    def __init__(self, config: MountConfig, names: Names, uploads: UploadShared,
                 attributes: AttributeWriter) -> None:
        self.config = config
        self.names = names
        self.uploads = uploads
        self.attributes = attributes
        self._handles: dict[int, Handle] = {}
        self._committing: dict[int, Node] = {}  # inode -> node whose commit is running
        self.renames = RenameGate()
        self._next_fh = 1
        # Tells the kernel to forget an inode's cached attributes (set by fs/operations.py).
        self.invalidate_attributes: Callable[[int], None] = lambda inode: None
        self.versions = Versions(config, names, uploads,
                                 lambda inode: self.invalidate_attributes(inode))

    def being_written(self, dir_path: str, *, below: bool = False) -> list[Node]:
        """Files of a directory (`below`: anywhere under it) being written or committed
        now (S3 does not list them yet, or still lists their previous version)."""
        nodes = {h.node.inode: h.node for h in self._handles.values()
                 if isinstance(h, WriteHandle) and h.node.upload is not None}
        nodes.update(self._committing)
        return [node for node in nodes.values() if not node.unlinked and (
            node.path.startswith(dir_path + "/") if below else node.parent_path == dir_path)]

    def path_of(self, fh: int) -> str:
        """The path of an open file, for log lines ('' if the handle is gone)."""
        handle = self._handles.get(fh)
        return handle.node.path if handle is not None else ""

    def write_handles(self, node: Node) -> list[WriteHandle]:
        return [h for h in self._handles.values()
                if isinstance(h, WriteHandle) and h.node is node]

    def handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise S3mpfsError(f"bad file handle {fh}") from None

    # -- opening ---------------------------------------------------------------------

    async def open_read(self, node: Node, pid: int = 0) -> tuple[int, bool, bool]:
        """A reader of the node's current version; returns the handle, whether reads
        must bypass the page cache, and whether the kernel may keep the pages it cached.

        One descriptor reads one version, start to end. Reads bypass the page cache for
        a file another process is rewriting (the reader reads the previous version from
        S3, the page cache holds the new one) and while another descriptor reads another
        version (the page cache is the inode's, shared). A reader in the process writing
        the file reads what it wrote, as the kernel's pages show it: it uses the page
        cache (and so can mmap the file, which direct I/O cannot with MAP_SHARED). The
        kernel keeps its pages only if they are of the version opened, which a HEAD
        confirms (the listing may be older than another client's new version, and S3's
        LastModified has 1 s resolution, so the kernel cannot tell a same-size
        overwrite in the same second): else the cat that follows would read kept
        pages of one version and the others from the next."""
        if node.is_dir:
            raise IsADirectory(node.path)
        if node.upload is None and node.cached_etag == node.etag != "":
            await self.versions.confirm(node)
        keep_cache, node.cached_etag = node.cached_etag == node.etag != "", node.etag
        own = node.upload is not None and self._writes(node, pid)
        bypass = (node.upload is not None and not own) or any(  # another version read
            isinstance(h, ReadHandle) and h.node is node and h.reader.etag != node.etag
            and not h.follows_writes and not self._writes(node, h.opener_pid)
            for h in self._handles.values())
        reader = self.versions.reader(node, cached=keep_cache)
        fh = self._add(ReadHandle(node, reader, pid, follows_writes=own))
        return fh, bypass, keep_cache and not bypass

    async def open_write(self, node: Node, pid: int, *, truncate: bool, must_commit: bool,
                         only_new: bool = False, readable: bool = False) -> int:
        """A writer of the node: a new upload, empty (`truncate`) or continuing the
        object, or the upload another descriptor writes. `only_new`: the object must not
        exist when it is committed. `readable` (O_RDWR): reads work until the first write."""
        if node.is_dir:
            raise IsADirectory(node.path)
        await self.settled(node)
        node.cached_etag = ""  # what gets written replaces what the kernel cached
        handle = WriteHandle(node, opener_pid=pid, readable=readable)
        upload = node.upload
        if upload is None:
            self._start_upload(handle, truncate=truncate, only_new=only_new)
            node.upload.must_commit = must_commit
            return self._add(handle)
        handle.upload = upload  # another descriptor is writing it: share its upload
        upload.must_commit |= must_commit
        if readable:
            upload.prefer_reads()
        fh = self._add(handle)  # (before the wait: a close meanwhile counts this writer)
        if truncate:
            await upload.truncate(0)
        return fh

    def _start_upload(self, handle: WriteHandle, *, truncate: bool,
                      only_new: bool = False) -> Upload:
        node = handle.node
        key = self.names.file_key(node.path)
        base = ObjectInfo(key, node.size, 0, etag=node.etag) \
            if not truncate and node.size > 0 else None
        empty = node.etag if not truncate and node.size == 0 and not only_new else ""
        upload = Upload(self.uploads, key, lambda: self._upload_metadata(handle, upload),
                        base, only_new=only_new,
                        replacing=self.names.replaced_version(node),
                        prefer_random=handle.readable, empty_base=empty)
        handle.upload = node.upload = upload
        return upload

    def _upload_metadata(self, handle: WriteHandle, upload: Upload) -> dict[str, str]:
        """Metadata for the object being created. Written bytes make mtime and ctime now
        (unless utimensat set mtime meanwhile): S3 fixes metadata when the object is
        created, so what is shown is what is stored."""
        if upload.changed:
            handle.node.attrs = handle.node.attrs.touched(time.time_ns(),
                                                          mtime=not handle.mtime_set)
        return self.attributes.encode_now(handle.node)

    def _add(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    # -- reading and writing ----------------------------------------------------------

    async def read(self, fh: int, offset: int, length: int) -> bytes | memoryview:
        """What the file holds now, through any descriptor: the state being written if
        the bytes are at hand, else the stored version (see _reads_own_writes for
        other processes reading a streaming file)."""
        handle = self.handle(fh)
        node = handle.node
        await self.renames.ended(node)
        await self._commit_ended(node)  # its new version, once stored
        if handle.lost:
            raise Gone(f"{node.path} was deleted while being written")
        upload = node.upload
        if upload is not None and upload.random is not None:
            if isinstance(handle, ReadHandle):
                handle.follows_writes = True
            return await upload.read(offset, length)  # what was written, spooled
        if upload is not None and (isinstance(handle, WriteHandle)
                                   or self._reads_own_writes(handle)):
            data = upload.read_at_hand(offset, length)
            if data is not None:
                return data
            if upload.base is None:  # streamed bytes sent for good: store them first
                log.info("%s is read while being written: what was written so far is "
                         "stored now (as fsync would), so that the read sees it", node.path)
                await self.store_now(node)
        reader = self._current_reader(handle)
        return await reader.read(offset, length) if reader is not None else b""

    def _current_reader(self, handle: Handle) -> ObjectReader | None:
        """The handle's reader of the stored version, renewed once this mount stored a
        newer one (a commit through any descriptor) for a descriptor that follows the
        writes (a writer, a reader of a random-mode file's writes, or of any in-place
        edit) or has read nothing yet; a reader of a file replaced by a streamed rewrite
        goes on with its version (or EIO): one version each."""
        node = handle.node
        reader = handle.reader
        follows = isinstance(handle, WriteHandle) or handle.follows_writes or node.edited \
            or reader is None or not reader.served
        ours = node.last_modified is None or node.etag == node.stored_etag
        stale = reader is None or (ours and node.etag and reader.etag != node.etag and follows)
        if stale and (node.etag or node.size):
            if reader is not None:
                reader.close()
            handle.reader = self.versions.reader(node)
        return handle.reader if node.etag or node.size else None

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handle(fh)
        if not isinstance(handle, WriteHandle):
            raise S3mpfsError("file not open for writing")
        upload = await self._state(handle)
        return await upload.write(offset, data)

    async def truncate(self, node: Node, size: int, fh: int | None) -> bool:
        """ftruncate (or truncate of a file open for writing): the file's state changes,
        not S3, which gets the new length at the next commit. False if nobody has the
        file open for writing (truncate(2) of a closed file stores it at once)."""
        handle = self._handles.get(fh) if fh is not None else None
        if not isinstance(handle, WriteHandle) or handle.node is not node:
            handle = next((h for h in self.write_handles(node) if h in self._handles.values()),
                          None)
        if handle is None:
            return False
        upload = await self._state(handle)
        await upload.truncate(size)
        return True

    async def _state(self, handle: WriteHandle) -> Upload:
        """The file's state being written, which this handle now changes (a new one,
        continuing the stored object, after a commit)."""
        node = handle.node
        await self.renames.ended(node)
        if handle.failed is not None:
            raise handle.failed
        if handle.lost or node.unlinked and node.upload is None:
            raise Gone(f"{node.path} was deleted while being written")
        handle.closed = False
        await self.settled(node)  # continue the version being stored
        upload = node.upload
        if upload is None:
            if node.stored_etag and node.etag != node.stored_etag:
                # Stored by this mount (fsync, another descriptor's close), then replaced
                # by another client, which a listing showed since: the writes of a
                # descriptor opened before would build on a version it never saw.
                handle.failed = UploadFailed(
                    f"{node.path}: another client replaced this file after this mount "
                    "stored it; writes through a descriptor opened before are refused "
                    "(they would drop that version)")
                log.error("%s", handle.failed)  # (once: its later calls fail with it)
                raise handle.failed
            upload = self._start_upload(handle, truncate=False)
        handle.upload = upload
        return upload

    async def fsync(self, fh: int) -> None:
        """A durable point: the object holds everything written so far, through every
        descriptor (the upload is completed now); later writes continue it."""
        handle = self.handle(fh)
        await self.renames.ended(handle.node)
        if isinstance(handle, WriteHandle) and handle.failed is not None:
            raise handle.failed
        upload = handle.node.upload
        if upload is None:
            return
        if upload.error:
            raise upload.error
        if isinstance(handle, WriteHandle):  # (any writer: fsync is of the file)
            await self._commit(handle, final=False, durable=True)

    def _reads_own_writes(self, handle: ReadHandle) -> bool:
        """Whether a reader of a file being streamed is the process writing it (ffmpeg's
        faststart reads back its own output): it sees what it wrote. Other processes (a
        checksum job, a restore) read the previous version, complete, until close."""
        upload = handle.node.upload
        return upload is not None and upload.changed and self._writes(handle.node,
                                                                      handle.opener_pid)

    def _writes(self, node: Node, pid: int) -> bool:
        """Whether process `pid` (a FUSE thread id) has the file open for writing."""
        if not pid:
            return False
        process = process_of(pid)
        return any(h.opener_pid and process_of(h.opener_pid) == process
                   for h in self.write_handles(node))

    # -- closing ----------------------------------------------------------------------

    async def flush(self, fh: int) -> None:
        """close() of a descriptor: commit what was written and report the outcome."""
        handle = self.handle(fh)
        if isinstance(handle, WriteHandle):
            await self.renames.ended(handle.node)
            await self._commit(handle, final=False)

    async def release(self, fh: int) -> None:
        """The last descriptor is gone: commit anything left (errors cannot be reported)."""
        handle = self._handles.pop(fh, None)
        if handle is not None and handle.reader is not None:
            handle.reader.close()
        if isinstance(handle, WriteHandle):
            try:
                await self.renames.ended(handle.node)
                await self._commit(handle, final=True)
            except Exception as exc:
                log.debug("release of %s: %s", handle.node.path, describe(exc))

    async def _commit(self, handle: WriteHandle, *, final: bool,
                      durable: bool = False) -> None:
        """Commit the node's upload at the last close of the last descriptor writing it
        (or now, for fsync: `durable`)."""
        node = handle.node
        if handle.failed is not None and not final:
            raise handle.failed  # (an fsync failed: what it wrote is not stored)
        committing = node.committing
        if node.upload is None and committing is not None and not final:
            # A commit another descriptor's release started (its opener had closed it):
            # this close returns once the file is stored, or reports why it is not.
            await self._commit_ended(node)
            if committing.error is not None:
                raise committing.error
        upload = node.upload  # the file's state, whichever descriptor changed it
        if upload is None:
            handle.upload = None
            return
        if not durable:
            if not final and holds_for_writing(handle.opener_pid, os.path.join(
                    self.config.mountpoint, node.path)):
                # Not the opener's last close: a forked child closing its inherited copy,
                # or a duplicate descriptor (shell redirections). Committing now would
                # publish a partial file; the opener's own close (or release) commits it.
                return
            handle.closed = True
            # (not final: the opener holds no descriptor writing it, so those it opened
            # are closed too, their release still on its way)
            gone = 0 if final else handle.opener_pid
            if any(h is not handle and h.upload is upload and not h.closed
                   and h in self._handles.values() and not (gone and h.opener_pid == gone)
                   for h in self.write_handles(node)):
                return  # another descriptor still writes it: the last close commits
        needed = upload.changed or upload.must_commit
        if durable and not needed:
            return
        if not needed and not final:
            return
        if node.unlinked:  # deleted meanwhile: nothing to store
            if durable:
                return  # (fsync of an unlinked file: its descriptors go on with it)
            await self.lose_writes(node)
            return
        handle.upload = None
        if node.upload is upload:
            node.upload = None
        if not needed:
            if any(h is not handle for h in self.write_handles(node)):
                node.stored_etag = node.etag  # what descriptors still open go on from (_state)
            await upload.discard()
            if node.meta_dirty:  # e.g. touch: opened for writing, only futimens()
                self.attributes.write_soon(node)
            return
        for other in self._handles.values():  # the writing process reads what it wrote,
            if isinstance(other, ReadHandle) and other.node is node \
                    and self._writes(node, other.opener_pid):  # also once it is stored
                other.follows_writes = True
        node.committing = upload  # stat and listings show it until S3 lists it
        self._committing[node.inode] = node
        writers = self.write_handles(node)  # (one state, shared by all of them)
        try:
            await upload.close()
        except Exception as exc:
            if durable:  # the descriptors go on: their writes must not go on without these
                failure = exc if isinstance(exc, S3mpfsError) else UploadFailed(
                    f"{node.path}: {describe(exc)}")
                for writer in writers:
                    writer.failed = failure
            self.names.table.detach(node.path)  # S3 still holds the previous version
            self.names.forget_listing(node.parent_path)
            raise
        finally:
            self._committed(node, upload)
        for other in self.write_handles(node):
            if other.upload is upload:
                other.upload = None
        self.names.stored(node.parent_path)
        # (_committed set its size and ETag; a reader woken first may have taken them, and
        # a rename moved the version since: its ETag is the copy's, not `result`'s)
        if node.meta_dirty:  # attributes changed after the object was created
            self.attributes.write_soon(node)

    async def lose_writes(self, node: Node) -> None:
        """The file's name is gone (unlink, or a rename onto it) while it is being written,
        and what was written will never be stored: its upload ends, as the program asked
        (not a failure). Every descriptor of the file loses it alike, from now on: reads
        through any of them fail (EIO), never serving the stored version (it is not what
        was written, and is being deleted), and writes fail too (`_state`); fstat shows
        the size the file had."""
        upload = node.upload
        if upload is None:
            return
        node.size = upload.size
        node.upload = None
        for handle in self._handles.values():
            if handle.node is node:
                handle.lost = True
                if isinstance(handle, WriteHandle) and handle.upload is upload:
                    handle.upload = None
        await upload.abandon("file was deleted while being written")
        self.invalidate_attributes(node.inode)

    async def _commit_ended(self, node: Node) -> None:
        """Wait for the node's commit, if one runs, and take its outcome at once: the
        upload ends before the committing task resumes, and a reader woken in between
        must already see the stored version (its ETag), not the one before."""
        upload = node.committing
        if node.upload is None and upload is not None:
            await upload.wait_done()
            self._committed(node, upload)

    async def settled(self, node: Node) -> None:
        """Wait until no rename, commit or attribute store of the file runs: a new upload
        (what the file's next version is built from) starts only from the version they
        leave, never beside one being stored (both would be built on the version before,
        and one lost), and an unlink deletes only once nothing can store it again."""
        while True:
            if self.renames.holds(node):
                await self.renames.ended(node)
            elif node.upload is None and node.committing is not None:
                await self._commit_ended(node)
            elif self.attributes.storing(node):
                await self.attributes.settled(node)
            else:
                return

    def _committed(self, node: Node, upload: Upload) -> None:
        """The commit of `upload` has ended: the node shows the stored version again."""
        if node.committing is upload:
            node.committing = None
            if upload.result is not None and upload.error is None:
                node.size = upload.size
                node.etag, node.last_modified = upload.result.get("ETag", ""), None
                node.stored_etag = node.etag
                node.edited = upload.random is not None
            self._committing.pop(node.inode, None)

    # -- renames -------------------------------------------------------------------------

    @asynccontextmanager
    async def renaming(self, *nodes: Node | None) -> AsyncIterator[None]:
        """While a rename moves these files: commits and attribute stores running end
        first, and no read, write or commit of them starts (it would reach a key being
        moved)."""
        held = [node for node in nodes if node is not None]
        async with self.renames.holding(held):
            for node in held:
                await self._commit_ended(node)
                await self.attributes.settled(node)
            yield

    async def store_now(self, node: Node) -> None:
        """Commit the file's state now, as fsync would: a reader wants bytes of a file
        being streamed that were sent for good (so that the read sees the file as
        written, not its previous version), or a rename of a file whose parts were sent
        under its old key (a multipart upload cannot change its key)."""
        upload = node.upload
        writer = next((h for h in self.write_handles(node) if h.upload is upload), None)
        if upload is None or writer is None:
            return
        if upload.error:
            raise upload.error
        await self._commit(writer, final=False, durable=True)

    def moved(self, node: Node, key: str, source: ObjectInfo | None,
              copy: ObjectInfo | None, *, only_new: bool) -> None:
        """The file was renamed to `key`; its state follows (see fs/moves.py)."""
        follow_move(node, list(self._handles.values()), key, source, copy, only_new=only_new)
