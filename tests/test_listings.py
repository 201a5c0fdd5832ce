"""The listing cache's bound (fs/listings.py): beyond `listing_cache` names the least
recently used listings and orders go, never the latest, nor a listing that still answers
lookups, nor an order a walk is going through. The clock is the test's."""

from __future__ import annotations

from typing import Any

import pytest

from s3mpfs.fs import listings
from s3mpfs.fs.listings import IN_USE, LISTING_TTL, Listing, Listings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(listings, "time", clock)
    return clock


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(count)]


def put(cache: Listings, clock: Clock, path: str, count: int) -> None:
    order = names("f", count)
    cache.put(path, Listing(clock.now, set(order)), order)


def test_old_listings_go_beyond_the_limit_with_their_names_reported(clock: Clock) -> None:
    dropped: list[tuple[str, int]] = []
    cache = Listings(100, lambda path, gone: dropped.append((path, len(gone))))
    for path in ("a", "b", "c"):
        put(cache, clock, path, 60)
    assert dropped == []  # all three still answer lookups: none goes yet
    clock.now += IN_USE + LISTING_TTL
    put(cache, clock, "d", 60)
    assert dropped == [("a", 60), ("b", 60), ("c", 60)]
    assert [cache.get(p) is not None for p in "abcd"] == [False, False, False, True]
    assert len(cache) == 120  # d's listing and order


def test_the_latest_listing_stays_however_large(clock: Clock) -> None:
    cache = Listings(10, lambda path, gone: None)
    put(cache, clock, "small", 5)
    clock.now += IN_USE + LISTING_TTL
    put(cache, clock, "big", 1000)
    assert cache.get("big") is not None and cache.get("small") is None
    assert cache.following("big", "f0010", 3) == ["f0011", "f0012", "f0013"]


def test_an_order_in_use_stays_while_its_listing_goes(clock: Clock) -> None:
    cache = Listings(100, lambda path, gone: None)
    put(cache, clock, "walked", 80)
    clock.now += LISTING_TTL + 1
    assert cache.following("walked", "f0001", 2) == ["f0002", "f0003"]  # ls -l stats on
    put(cache, clock, "other", 30)
    assert cache.get("walked") is None  # stale: no lookup trusts it any more
    assert cache.following("walked", "f0002", 2) == ["f0003", "f0004"]  # stat-ahead goes on
    clock.now += IN_USE
    put(cache, clock, "third", 30)
    assert cache.following("walked", "f0002", 2) == []  # the walk ended


def test_changes_keep_the_count(clock: Clock) -> None:
    cache = Listings(1000, lambda path, gone: None)
    cache.put("d", Listing(clock.now, {"x"}))
    cache.change("d", "y", True)
    cache.change("d", "y", True)
    cache.change("d", "x", False)
    cache.change("d", "gone", False)
    assert len(cache) == 1
    cache.pop("d")
    assert len(cache) == 0


def test_a_truncated_listing_keeps_the_last_order(clock: Any) -> None:
    cache = Listings(1000, lambda path, gone: None)
    put(cache, clock, "d", 10)
    cache.put("d", Listing(clock.now, {"f0000"}, complete=False))  # a lookup's first page
    assert cache.following("d", "f0000", 2) == ["f0001", "f0002"]


def test_a_page_covers_the_names_whose_keys_it_holds() -> None:
    page = listings.Window(0.0, after="f000", last="f0999", names=set())
    assert page.covers("f0001") and page.covers("f0998")
    assert not page.covers("f000")  # StartAfter is exclusive
    assert not page.covers("f0999")  # its directory key "f0999/" may be on the next page
    assert not page.covers("g")
    assert listings.Window(0.0, after="", last=None, names=set()).covers("anything")


def test_pages_are_kept_for_a_few_directories_only(clock: Clock) -> None:
    dropped: list[str] = []
    cache = Listings(1000, lambda path, gone: dropped.append(path))
    for i in range(listings.WINDOWS + 1):
        cache.put_window(f"d{i}", listings.Window(clock.now, "", None, {"x"}))
    assert dropped == ["d0"] and cache.window("d0") is None
    assert cache.window(f"d{listings.WINDOWS}") is not None
    clock.now += LISTING_TTL
    assert cache.window(f"d{listings.WINDOWS}") is None  # no lookup trusts it any more
