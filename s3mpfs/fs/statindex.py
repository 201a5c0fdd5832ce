"""Stat indexes: what a HEAD of each file of a directory would say, in one object.

A listing gives a file's size, ETag and LastModified but not its mode, owner and times
(user metadata), so a cold `ls -l` used to cost one HEAD per entry. A directory's stat
index, `PREFIX.s3mpfs/stat/DIR/index.json.gz` (gzip'ed JSON), holds for each file the
version it describes (ETag, size, LastModified as listed) and that version's user
metadata. An entry is used only for a file the listing shows with that very ETag, size
and LastModified: another client's new version, or a metadata-only copy (which changes
LastModified), does not match and is HEADed as before. The index is never a source of
names, only of metadata for names a listing returned; a stale or foreign index costs
HEADs, never a wrong stat. Directories (common prefixes, which listings give no ETag to
check) are not indexed.

This module reads indexes, remembers the listings they are checked against and which
directories need theirs written; `fs/statwriter.py` writes them.
"""

from __future__ import annotations

import gzip
import json
import logging
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

import trio

from ..config import MountConfig
from ..errors import describe
from ..objects import ObjectInfo
from ..s3.metadata import OWNED
from ..s3.store import S3Store, is_not_found
from ..write.registry import REGISTRY_DIR
from .node import Node

log = logging.getLogger(__name__)

VERSION = 1
FRESH = 2.0  # seconds a listing checks entries (names.LISTING_TTL); older: listed again
INDEX_TTL = 30.0  # seconds a fetched index (or its absence) is kept unused (a large
# directory's `ls -l` uses it for longer than that: one GET, not one every 30 s)
KEPT_DIRECTORIES = 1000
KEPT_FILES = 100_000  # index entries, and listed files, kept in memory (each, at least
# one directory's): the directories used last
MIN_BATCH = 2  # files of a lookup's batch for which an index is worth a GET
HEADS_FOR_AN_INDEX = 16  # HEADs in a directory that make it worth (re)writing its index
BODY_BYTES_PER_ENTRY = 40  # about what an entry compresses to (distinct ETags and times):
# a kept body counts as that many entries
MAX_KEY = 1024

# One entry: [ETag, size, LastModified as listed, LastModified as a HEAD gives it, metadata]
Entry = list[Any]
Listed = tuple[str, int, float]  # a listed file's ETag, size and LastModified
_SIZE_AND_TIME = struct.Struct("<qd")


class ListedFiles(Mapping[str, Listed]):
    """A listing's files by name, each packed in one bytes object (size, LastModified,
    ETag): a 100,000-file directory's is 13 MB, not the 33 MB of its ObjectInfos."""

    __slots__ = ("_packed",)

    def __init__(self, objects: Iterable[tuple[str, ObjectInfo]] = ()) -> None:
        self._packed: dict[str, bytes] = {}
        for name, info in objects:
            self.put(name, info)

    def put(self, name: str, info: ObjectInfo) -> None:
        self._packed[name] = _SIZE_AND_TIME.pack(info.size, info.mtime) + info.etag.encode()

    def __getitem__(self, name: str) -> Listed:
        packed = self._packed[name]
        size, mtime = _SIZE_AND_TIME.unpack_from(packed)
        return packed[_SIZE_AND_TIME.size:].decode(), size, mtime

    def __contains__(self, name: object) -> bool:
        return name in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


def index_key(prefix: str, dir_path: str) -> str | None:
    """The key of a directory's index; None when it would exceed S3's key length."""
    key = f"{prefix}{REGISTRY_DIR}/stat/{dir_path + '/' if dir_path else ''}index.json.gz"
    return key if len(key.encode()) <= MAX_KEY else None


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class IndexBody:
    """An index encoded and compressed entry by entry: a large directory's entries are
    never all in memory at once (a 100,000-file one's took 80 MB as a dict)."""

    CHUNK = 1024  # entries encoded at once

    def __init__(self, dir_path: str) -> None:
        self._gzip = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        head = f'{{"version":{VERSION},"directory":{_json(dir_path)},"entries":{{'
        self._parts = [self._gzip.compress(head.encode())]
        self._chunk: dict[str, Entry] = {}
        self.names: set[str] = set()  # added (each once)

    def add(self, name: str, entry: Entry) -> None:
        self._chunk[name] = entry
        self.names.add(name)
        if len(self._chunk) >= self.CHUNK:
            self._encode()

    def _encode(self) -> None:
        if self._chunk:
            text = _json(self._chunk)[1:-1]
            comma = "," if len(self.names) > len(self._chunk) else ""
            self._parts.append(self._gzip.compress((comma + text).encode()))
            self._chunk = {}

    def finish(self) -> bytes:
        """The gzip'ed JSON (decode_index reads it)."""
        self._encode()
        self._parts += [self._gzip.compress(b"}}"), self._gzip.flush()]
        return b"".join(self._parts)


def encode_index(dir_path: str, entries: dict[str, Entry]) -> bytes:
    body = IndexBody(dir_path)
    for name, entry in entries.items():
        body.add(name, entry)
    return body.finish()


class IndexEntries(Mapping[str, Entry]):
    """An index's entries as read, each kept as its JSON text and parsed when used: a
    100,000-file index takes about 25 MB, not the 70 MB of its lists and dicts."""

    __slots__ = ("texts",)

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def __getitem__(self, name: str) -> Entry:
        entry: Entry = json.loads(self.texts[name])
        return entry

    def get(self, name: str, default: Any = None) -> Any:  # Mapping's goes by a KeyError
        text = self.texts.get(name)
        return default if text is None else json.loads(text)

    def __contains__(self, name: object) -> bool:
        return name in self.texts

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def __len__(self) -> int:
        return len(self.texts)


_DECODER = json.JSONDecoder()


def decode_index(data: bytes, dir_path: str) -> IndexEntries:
    """The entries of an index; an index that is damaged, of another version or of
    another directory gives none (its entries are then HEADed), never an error."""
    try:
        text = gzip.decompress(data).decode()
        try:
            return _decode_entries(text, dir_path)
        except (ValueError, IndexError):  # not in the form IndexBody writes
            pass
        entries = IndexEntries()
        document = json.loads(text)
        if document.get("version") != VERSION or document.get("directory") != dir_path:
            return entries
        for name, entry in document["entries"].items():
            if _valid(entry):
                entries.texts[name] = _json(entry)
        return entries
    except (OSError, EOFError, zlib.error, ValueError, TypeError, KeyError, AttributeError):
        return IndexEntries()


def _decode_entries(text: str, dir_path: str) -> IndexEntries:
    """The entries of an index as IndexBody writes it, read one at a time (the whole
    document parsed at once would hold every entry's objects): ValueError otherwise."""
    entries = IndexEntries()
    head = f'{{"version":{VERSION},"directory":{_json(dir_path)},"entries":{{'
    if not text.startswith(head):
        raise ValueError("another form")  # (or another version or directory: see above)
    at = len(head)
    while text[at] != "}":
        if text[at] != '"':
            raise ValueError(at)
        name, at = scanstring(text, at + 1)
        if text[at] != ":":
            raise ValueError(at)
        entry, end = _DECODER.raw_decode(text, at + 1)
        if _valid(entry):
            entries.texts[name] = text[at + 1:end]
        else:
            entries.texts.pop(name, None)
        at = end + 1 if text[end] == "," and text[end + 1] == '"' else end
    if text[at:] != "}}":
        raise ValueError(at)
    return entries


def _valid(entry: Any) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 5
        and isinstance(entry[0], str)
        and isinstance(entry[1], int)
        and isinstance(entry[2], (int, float))
        and isinstance(entry[3], (int, float))
        and isinstance(entry[4], dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in entry[4].items())
    )


def owned(metadata: dict[str, str]) -> dict[str, str]:
    """The user metadata stat is made of (what `s3/metadata.decode` reads)."""
    return {k.lower(): v for k, v in metadata.items() if k.lower() in OWNED}


def matches(entry: Entry, listed: Listed) -> bool:
    """Whether an index entry describes the version a listing shows."""
    return entry[0] == listed[0] and entry[1] == listed[1] and entry[2] == listed[2]


class StatIndex:
    """Indexes read (by directory, for INDEX_TTL), the last listing of each directory
    (what entries are checked against and written from), and the directories whose
    index this mount should write."""

    def __init__(self, config: MountConfig, store: S3Store) -> None:
        self.config = config
        self.store = store
        self.enabled = config.stat_index
        self.writable = config.stat_index and not config.read_only
        self._indexes: OrderedDict[str, tuple[float, Mapping[str, Entry] | bytes]] = OrderedDict()
        self._fetching: dict[str, trio.Event] = {}
        # Directory -> (when its last listing began, complete, its files by name).
        self._listed: OrderedDict[str, tuple[float, bool, ListedFiles]] = OrderedDict()
        self._heads: dict[str, int] = {}
        # Directory -> (when it last changed here, whether a LIST must come first).
        self.dirty: dict[str, tuple[float, bool]] = {}
        self.wake = trio.Event()

    # -- what listings showed ------------------------------------------------------------

    def listed(
        self, dir_path: str, files: ListedFiles | None, complete: bool, taken: float
    ) -> None:
        """A listing of the directory (begun at `taken`, monotonic): its files by name."""
        if not self.enabled or files is None:
            return
        self._listed[dir_path] = (taken, complete, files)
        self._listed.move_to_end(dir_path)
        _trim(self._listed, lambda listing: len(listing[2]))

    def last_listing(self, dir_path: str) -> tuple[bool, Mapping[str, Listed]] | None:
        listing = self._listed.get(dir_path)
        return None if listing is None else (listing[1], listing[2])

    # -- reading -------------------------------------------------------------------------

    async def fill(
        self, dir_path: str, nodes: list[Node], apply: Callable[[str, ObjectInfo], None]
    ) -> None:
        """Give the files among `nodes` (of one directory, metadata unknown) their
        metadata from the directory's index where an entry matches the listed version."""
        if not self.enabled:
            return
        listing = self._listed.get(dir_path)
        if listing is None:
            return
        taken, _, files = listing
        wanted = [n for n in nodes if not n.is_dir and n.name in files]
        if len(wanted) < MIN_BATCH:
            return  # one HEAD costs what the GET would
        entries = await self.entries(dir_path)
        if not any(node.name in entries for node in wanted):
            return
        if time.monotonic() - taken >= FRESH:
            files = await self._relisted(dir_path, wanted, files)
        for node in wanted:
            listed = files.get(node.name)
            entry = entries.get(node.name)
            if (
                listed is not None
                and entry is not None
                and matches(entry, listed)
                and not node.meta_known
                and node.written is None
                and node.etag == listed[0]
            ):
                apply(
                    node.path,
                    ObjectInfo(
                        self.config.prefix + node.path,
                        listed[1],
                        float(entry[3]),
                        etag=listed[0],
                        metadata=entry[4],
                    ),
                )

    async def _relisted(
        self, dir_path: str, wanted: list[Node], files: ListedFiles
    ) -> Mapping[str, Listed]:
        """The listing is older than a HEAD would be (a large directory's `ls -l` stats
        for a while after it): the stretch of it holding `wanted` is listed again, one
        LIST of about as many keys as names, and the entries are checked against that.
        Names it does not reach, or no longer shows, are HEADed."""
        prefix = f"{self.config.prefix}{dir_path}/" if dir_path else self.config.prefix
        first = min(node.name for node in wanted)
        try:
            page = await self.store.list(
                prefix, max_keys=len(wanted) + 8, start_after=prefix + first[:-1]
            )
        except Exception as exc:
            log.info("listing of /%s not renewed: %s", dir_path, describe(exc))
            return {}
        fresh = ListedFiles((info.key[len(prefix) :], info) for info in page.objects)
        for info in page.objects:
            name = info.key[len(prefix) :]
            if name in files:
                files.put(name, info)  # what the writer records, too
        return fresh

    async def entries(self, dir_path: str) -> Mapping[str, Entry]:
        """The directory's index ({} if there is none), fetched again once it has not
        been used for INDEX_TTL."""
        while True:
            cached = self._indexes.get(dir_path)
            if cached is not None and time.monotonic() - cached[0] < INDEX_TTL:
                entries = cached[1]
                if isinstance(entries, bytes):  # written here: decoded once read
                    entries = decode_index(entries, dir_path)
                self.remember(dir_path, entries)  # in use: kept
                return entries
            if dir_path not in self._fetching:
                break
            await self._fetching[dir_path].wait()  # one GET, however many lookups wait
        self._fetching[dir_path] = done = trio.Event()
        try:
            entries = await self._fetch(dir_path)
            self.remember(dir_path, entries)
            return entries
        finally:
            del self._fetching[dir_path]
            done.set()

    async def _fetch(self, dir_path: str) -> Mapping[str, Entry]:
        key = index_key(self.config.prefix, dir_path)
        if key is None:
            return {}
        try:
            data = await self.store.get_object(key)
        except Exception as exc:
            if not is_not_found(exc):  # the HEADs will do: never an error for the user
                log.info("stat index of /%s not read: %s", dir_path, describe(exc))
            return {}
        entries = decode_index(data, dir_path)
        if not entries and data:
            log.info("stat index %s is damaged or of another version: ignored", key)
        return entries

    def remember(self, dir_path: str, entries: Mapping[str, Entry] | bytes) -> None:
        """Keep an index read (its entries) or written (its body, decoded if read)."""
        self._indexes[dir_path] = (time.monotonic(), entries)
        self._indexes.move_to_end(dir_path)
        _trim(self._indexes, lambda cached: len(cached[1]) // (
            BODY_BYTES_PER_ENTRY if isinstance(cached[1], bytes) else 1))

    # -- what to write -------------------------------------------------------------------

    def headed(self, dir_path: str, count: int) -> None:
        """`count` files of the directory were HEADed: once enough were, its index is
        worth writing (the next mount then needs none of those HEADs)."""
        if not self.writable or not count:
            return
        total = self._heads.get(dir_path, 0) + count
        self._heads[dir_path] = total
        listing = self._listed.get(dir_path)
        size = len(listing[2]) if listing is not None else 0
        if total >= HEADS_FOR_AN_INDEX or (total >= 4 and total * 10 >= size):
            self.changed(dir_path, relist=False)

    def changed(self, dir_path: str, *, relist: bool = True) -> None:
        """A file of the directory was stored through this mount (`relist`: its
        LastModified is known only from a new listing), or its index is worth writing."""
        if not self.writable:
            return
        previous = self.dirty.get(dir_path)
        self.dirty[dir_path] = (time.monotonic(), relist or (previous is not None and previous[1]))
        self.wake.set()

    def written(self, dir_path: str) -> None:
        self._heads.pop(dir_path, None)


def _trim(kept: OrderedDict[str, Any], size: Callable[[Any], int]) -> None:
    """Forget the directories used longest ago beyond KEPT_FILES or KEPT_DIRECTORIES
    (never the last one)."""
    while len(kept) > KEPT_DIRECTORIES:
        kept.popitem(last=False)
    total = sum(size(value) for value in kept.values())
    while len(kept) > 1 and total > KEPT_FILES:
        total -= size(kept.popitem(last=False)[1])
