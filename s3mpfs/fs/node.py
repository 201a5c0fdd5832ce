"""One node: what the mount keeps of a name the kernel holds (a million after `ls -lR`
of a million entries), with the fields few nodes use in one side object."""

from __future__ import annotations

import re
import stat
from typing import TYPE_CHECKING, Any

from ..s3.metadata import SHARED_KEPT, Attributes

if TYPE_CHECKING:
    from ..objects import ObjectInfo
    from ..write.upload import Upload

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
            self._etag = shared_etag(int(etag[1:33], 16))
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


def shared_etag(number: int) -> int:
    """The one int object for a plain ETag's number among those set lately."""
    shared = _ETAGS.get(number)
    if shared is None:
        if len(_ETAGS) >= SHARED_KEPT:
            del _ETAGS[next(iter(_ETAGS))]
        shared = _ETAGS[number] = number
    return shared
