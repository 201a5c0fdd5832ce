"""Which pending s3mpfs uploads the sweep may abort: by PID only in the PID namespace the
entry was written in, elsewhere by the age of the entry its mount renews (write/lease.py)."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from s3mpfs.objects import PendingUpload
from s3mpfs.write.lease import EXPIRES_AFTER, RENEW_EVERY
from s3mpfs.write.registry import Owner, Registered, UploadRegistry, _boot_id, stale_reason

HERE_NS = os.readlink("/proc/self/ns/pid")
NOW = datetime.now(UTC)


def item(pid: int, pid_ns: str, lease: timedelta | None,
         started: timedelta = timedelta(0)) -> Registered:
    owner = Owner(socket.gethostname(), _boot_id(), pid, "m1", pid_ns)
    return Registered(PendingUpload("k", "u", NOW - started), owner, NOW - started, lease)


def test_a_fresh_lease_keeps_an_upload_whose_pid_means_nothing_here() -> None:
    other_ns = "pid:[1]"  # another container: PID 1 there is not our PID 1
    assert item(1, other_ns, timedelta(seconds=30)).state() == "live"
    assert stale_reason(item(1, other_ns, EXPIRES_AFTER)) is None
    assert stale_reason(item(1, other_ns, timedelta(seconds=30), timedelta(days=3))) is None


def test_an_entry_no_longer_renewed_lets_it_go() -> None:
    other_ns = "pid:[1]"
    expired = item(1, other_ns, EXPIRES_AFTER + timedelta(seconds=1))
    assert "stopped renewing it 601 s ago" in (stale_reason(expired) or "")
    assert item(1, other_ns, None).state() == "unknown"  # its age could not be read


def test_in_the_same_pid_namespace_the_pid_decides() -> None:
    assert item(os.getpid(), HERE_NS, None).owner.alive() is not None  # type: ignore[union-attr]
    gone = item(2**22 + 1, HERE_NS, timedelta(seconds=1))  # no such PID, fresh lease
    assert "process is gone" in (stale_reason(gone) or "")


def test_entries_from_before_leases_wait_a_day() -> None:
    assert item(1, "", None).state() == "unknown"
    assert stale_reason(item(1, "", None, timedelta(hours=2))) is None
    assert "older than" in (stale_reason(item(1, "", None, timedelta(days=2))) or "")


class Bookkeeping:
    """What the registry writes and deletes (S3Store's put_plain and delete)."""

    def __init__(self) -> None:
        self.puts: list[str] = []
        self.deletes: list[str] = []

    async def put_plain(self, key: str, data: bytes) -> None:
        self.puts.append(key)

    async def delete(self, key: str) -> None:
        self.deletes.append(key)


async def test_a_pending_uploads_entry_is_rewritten_every_minute(autojump_clock: Any) -> None:
    store = Bookkeeping()
    owner = Owner("h", "b", 1, "m", HERE_NS)
    registry = UploadRegistry(store, "p/", owner)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(registry.keep_renewed)
        await registry.register("p/k", "u1")
        await trio.sleep(2 * RENEW_EVERY + 1)
        assert store.puts == ["p/.s3mpfs/uploads/u1.json"] * 3  # written, renewed twice
        await registry.unregister("u1")
        await trio.sleep(3 * RENEW_EVERY)
        assert len(store.puts) == 3  # an upload that ended is renewed no more
        nursery.cancel_scope.cancel()
