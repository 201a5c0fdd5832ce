"""The cached listings of directories, bounded by the number of names they hold.

A listing answers lookups for LISTING_TTL seconds (OWN_LISTING_TTL in a directory this
mount created and keeps changing); after that it is listed again before it answers, so an
old listing is worth nothing but memory. The sorted names of each directory's last
complete listing are kept apart, for stat-ahead (`ls -l` stats a directory in listing
order long after listing it). Both are bounded by `limit` names in all (the mount option
`listing_cache`): beyond it the least recently used go, except a listing still answering
lookups and an order used in the last IN_USE seconds (the directory `ls -l` is going
through), so the limit holds once a walk moves on. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

LISTING_TTL = 2.0  # seconds a directory listing answers lookups without a request
# A directory this mount created started empty, and every name added through the mount is
# recorded in its listing: lookups trust that record until the directory has had no change
# through the mount for this long (cp -r into it makes no LIST, no HEAD before each PUT).
OWN_LISTING_TTL = 30.0
WINDOWS = 64  # large directories whose latest page is kept
IN_USE = 10.0  # seconds after its last use a directory's order is kept beyond the limit


@dataclass(slots=True)
class Listing:
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

    @property
    def ttl(self) -> float:
        return OWN_LISTING_TTL if self.ours else LISTING_TTL


@dataclass(slots=True)
class Window:
    """One page of a large directory's listing: the names after `after` up to `last` (a
    key, relative to the directory; None: to its end), taken at `taken`. Lookups there
    (`ls -l` goes through a directory in order) trust it for LISTING_TTL seconds."""

    taken: float
    after: str
    last: str | None
    names: set[str]

    def covers(self, name: str) -> bool:
        """Whether the page holds `name`'s keys, as a file and as a directory."""
        return self.after < name and (self.last is None or name + "/" <= self.last)


@dataclass(slots=True)
class _Order:
    names: list[str]  # sorted
    used: float


class Listings:
    def __init__(self, limit: int, dropped: Callable[[str, set[str]], None]) -> None:
        """`dropped(path, names)`: called for each listing evicted (its nodes may go)."""
        self.limit = limit
        self._dropped = dropped
        self._listings: dict[str, Listing] = {}  # least recently used first
        self._orders: dict[str, _Order] = {}  # least recently used first
        self._windows: dict[str, Window] = {}  # the latest page of large directories
        self._names = 0  # in self._listings
        self._ordered = 0  # in self._orders

    def __len__(self) -> int:
        """Names held, listings and orders."""
        return self._names + self._ordered

    def get(self, path: str) -> Listing | None:
        return self._listings.get(path)

    def use(self, path: str) -> None:
        """The listing answered a lookup: the last to be evicted."""
        listing = self._listings.pop(path, None)
        if listing is not None:
            self._listings[path] = listing

    def put(self, path: str, listing: Listing, order: list[str] | None = None) -> None:
        """Cache a listing (and its sorted names, when complete), then evict beyond the
        limit."""
        self.pop(path, orders=order is not None)
        self._listings[path] = listing
        self._names += len(listing.names)
        if order is not None:
            self._orders[path] = _Order(order, time.monotonic())
            self._ordered += len(order)
        self._evict()

    def pop(self, path: str, *, orders: bool = True) -> Listing | None:
        listing = self._listings.pop(path, None)
        if listing is not None:
            self._names -= len(listing.names)
        self._windows.pop(path, None)
        if orders:
            order = self._orders.pop(path, None)
            if order is not None:
                self._ordered -= len(order.names)
        return listing

    def large(self, path: str, small: int) -> bool:
        """Whether the directory is known to hold more than `small` names."""
        listing, order = self._listings.get(path), self._orders.get(path)
        return (listing is not None and not listing.complete) or (
            order is not None and len(order.names) > small)

    def window(self, path: str) -> Window | None:
        """The directory's latest page, if it still answers lookups."""
        window = self._windows.get(path)
        if window is None or time.monotonic() - window.taken >= LISTING_TTL:
            return None
        return window

    def put_window(self, path: str, window: Window) -> None:
        """A new page of a large directory, replacing its last one; beyond WINDOWS
        directories, the oldest page goes."""
        old = self._windows.pop(path, None)
        if old is not None:
            self._dropped(path, old.names - window.names)
        self._windows[path] = window
        if len(self._windows) > WINDOWS:
            oldest = next(iter(self._windows))
            self._dropped(oldest, self._windows.pop(oldest).names)

    def paths(self) -> list[str]:
        return list(self._listings)

    def change(self, path: str, name: str, present: bool) -> Listing | None:
        """A name added to or removed from a cached listing."""
        listing = self._listings.get(path)
        if listing is not None:
            before = len(listing.names)
            (listing.names.add if present else listing.names.discard)(name)
            self._names += len(listing.names) - before
        return listing

    def following(self, path: str, name: str, count: int) -> list[str]:
        """The `count` names after `name` in the directory's last complete listing."""
        order = self._orders.get(path)
        if order is None:
            return []
        at = bisect_left(order.names, name)
        if at == len(order.names) or order.names[at] != name:
            return []
        order.used = time.monotonic()
        self._orders[path] = self._orders.pop(path)
        return order.names[at + 1:at + 1 + count]

    def _evict(self) -> None:
        """Beyond the limit, the least recently used go first; never the latest, nor a
        listing that still answers lookups, nor an order a walk is going through."""
        now = time.monotonic()
        for path in list(self._listings)[:-1]:
            if self._names <= self.limit:
                break
            listing = self._listings[path]
            if now - listing.taken >= listing.ttl:
                del self._listings[path]
                self._names -= len(listing.names)
                self._dropped(path, listing.names)
        for path in list(self._orders)[:-1]:
            if self._ordered <= self.limit:
                break
            order = self._orders[path]
            if now - order.used >= IN_USE:
                del self._orders[path]
                self._ordered -= len(order.names)
