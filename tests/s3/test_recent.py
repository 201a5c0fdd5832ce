"""s3/recent.py: bodies kept by key and ETag answer only requests pinned to that version."""

from __future__ import annotations

from s3mpfs.s3.recent import RecentBodies


def test_only_the_version_stored_is_answered() -> None:
    kept = RecentBodies()
    kept.stored("k", '"e1"', b"0123456789")
    assert kept.get("k", 2, 5, '"e1"') == b"234"
    assert kept.get("k", 2, 5, "e1") == b"234"  # quoted or not, the same ETag
    assert kept.get("k", 0, 10, '"e2"') is None  # another version: ask S3
    assert kept.get("k", 0, 10, "") is None  # no version named: ask S3
    assert kept.get("other", 0, 1, '"e1"') is None
    kept.stored("k", '"e2"', b"new")
    assert kept.get("k", 0, 10, '"e1"') is None and kept.body("k", "e2") == b"new"
    kept.forget("k")
    assert kept.body("k", "e2") is None and kept.used == 0


def test_bounded_least_recently_used_first() -> None:
    kept = RecentBodies(max_total=10, max_body=6)
    kept.stored("big", "e", b"x" * 7)  # over max_body: not kept
    assert kept.body("big", "e") is None and kept.used == 0
    kept.stored("a", "e", b"aaaa")
    kept.stored("b", "e", b"bbbb")
    assert kept.body("a", "e") == b"aaaa"  # now the most recently used
    kept.stored("c", "e", b"cccc")  # 12 > 10: b goes
    assert kept.body("b", "e") is None
    assert kept.body("a", "e") == b"aaaa" and kept.body("c", "e") == b"cccc"
    assert kept.used == 8
