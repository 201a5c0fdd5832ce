"""The bodies of small objects this mount stored a moment ago, by key and ETag.

Programs that commit often (SQLite's journal and database in `journal_mode=DELETE`, git's
index and objects) read back, or edit in place, what they stored a moment ago: the next
read, and the next in-place edit's rebuild, would GET bytes this mount just sent. A body
is kept under the ETag the server gave it, so only a request pinned to that very version
(every read and rebuild names the ETag it opened) is answered from here; a version stored
by anyone else, or a read that names no version, still goes to S3. Bounded: bodies up to
MAX_BODY, MAX_TOTAL in all, least recently used dropped first. No I/O.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_BODY = 8 << 20  # bytes: a small database is one PutObject (up to part_size) per commit
MAX_TOTAL = 32 << 20  # bytes kept mount-wide


def _version(etag: str) -> str:
    return etag.strip('"')


class RecentBodies:
    """Bodies this mount stored, each under its key and the ETag S3 answered."""

    def __init__(self, max_total: int = MAX_TOTAL, max_body: int = MAX_BODY) -> None:
        self.max_total = max_total
        self.max_body = max_body
        self.used = 0
        self._bodies: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # key -> (etag, body)

    def stored(self, key: str, etag: str, body: bytes) -> None:
        """`body` is now version `etag` of `key` (a PutObject, or a copy of a kept body)."""
        self.forget(key)
        if not etag or len(body) > self.max_body:
            return
        self._bodies[key] = (_version(etag), bytes(body))
        self.used += len(body)
        while self.used > self.max_total:
            _, (_, dropped) = self._bodies.popitem(last=False)
            self.used -= len(dropped)

    def body(self, key: str, etag: str) -> bytes | None:
        """The whole body of version `etag` of `key`, if kept."""
        kept = self._bodies.get(key)
        if kept is None or not etag or kept[0] != _version(etag):
            return None
        self._bodies.move_to_end(key)
        return kept[1]

    def get(self, key: str, start: int, end: int, etag: str) -> bytes | None:
        """Bytes [start, end) of version `etag` of `key`, if kept (None: ask S3)."""
        body = self.body(key, etag)
        return None if body is None else body[start:end]

    def forget(self, key: str) -> None:
        """The key changed or is gone through this mount (a delete, a new version)."""
        kept = self._bodies.pop(key, None)
        if kept is not None:
            self.used -= len(kept[1])
