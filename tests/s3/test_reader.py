"""ObjectReader's read-ahead, with a store that answers block 0 and never the rest."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from s3mpfs.s3.reader import READ_AHEAD_BLOCKS, ObjectReader

BLOCK = 1024


class SlowStore:
    """Block 0 at once; every other block waits until it is cancelled (recorded)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.cancelled: list[int] = []

    async def get_range(self, key: str, start: int, end: int, etag: str = "") -> bytes:
        if start == 0:
            return bytes(end - start)
        self.started.append(start // BLOCK)
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled.append(start // BLOCK)
        raise AssertionError("unreachable")


async def test_closing_a_reader_cancels_the_read_ahead_it_never_reached() -> None:
    """Read-ahead a program never reads (it closed the file) is not paid for: its GETs
    and their retries stop at close(), not after the last retry."""
    store: Any = SlowStore()
    async with trio.open_nursery() as nursery:
        reader = ObjectReader(store, nursery, "k", 8 * BLOCK, BLOCK, '"e"')
        assert await reader.read(0, 100) == bytes(100)
        with trio.fail_after(5):
            while len(store.started) < READ_AHEAD_BLOCKS:
                await trio.sleep(0)
        assert store.cancelled == []
        reader.close()
        with trio.fail_after(5):
            while sorted(store.cancelled) != sorted(store.started):
                await trio.sleep(0)
    assert sorted(store.cancelled) == list(range(1, 1 + READ_AHEAD_BLOCKS))


async def test_closing_a_reader_leaves_a_read_waiting_for_its_block_alone() -> None:
    """A descriptor's reader is renewed (closed) while another READ of it still waits
    for a block: that read gets its bytes, not a cancelled fetch's EIO."""
    release = trio.Event()

    class HeldStore:
        async def get_range(self, key: str, start: int, end: int, etag: str = "") -> bytes:
            if start:
                await release.wait()
            return bytes([start // BLOCK]) * (end - start)

    store: Any = HeldStore()
    async with trio.open_nursery() as nursery:
        reader = ObjectReader(store, nursery, "k", 8 * BLOCK, BLOCK, '"e"')
        got: list[bytes | memoryview] = []

        async def read_block_one() -> None:
            got.append(await reader.read(BLOCK, 10))

        nursery.start_soon(read_block_one)
        await trio.testing.wait_all_tasks_blocked()
        reader.close()
        release.set()
    assert [bytes(g) for g in got] == [b"\x01" * 10]


class OneSlowBlock:
    """Every block at once but block 1, which waits for `release` (fetches recorded,
    and the cancelled ones)."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.fetched: list[int] = []
        self.cancelled: list[int] = []

    async def get_range(self, key: str, start: int, end: int, etag: str = "") -> bytes:
        self.fetched.append(start // BLOCK)
        if start == BLOCK:
            try:
                await self.release.wait()
            except trio.Cancelled:
                self.cancelled.append(1)
                raise
        return bytes([start // BLOCK]) * (end - start)


async def overtake(reader: ObjectReader) -> None:
    """Read-ahead starts blocks 1 and 2; block 2 comes first and reads move past 1."""
    assert bytes(await reader.read(0, 10)) == b"\x00" * 10
    assert bytes(await reader.read(2 * BLOCK, 10)) == b"\x02" * 10
    assert bytes(await reader.read(3 * BLOCK, 10)) == b"\x03" * 10


async def test_a_block_overtaken_by_later_ones_is_fetched_once() -> None:
    """A read-ahead block whose GET is slow (retried) while later blocks arrive and are
    read: the read that reaches it waits for that fetch; no second GET of it."""
    store = OneSlowBlock()
    async with trio.open_nursery() as nursery:
        reader = ObjectReader(store, nursery, "k", 8 * BLOCK, BLOCK, '"e"')  # type: ignore[arg-type]
        await overtake(reader)
        got: list[bytes] = []

        async def read_block_one() -> None:
            got.append(bytes(await reader.read(BLOCK, 10)))

        nursery.start_soon(read_block_one)
        await trio.testing.wait_all_tasks_blocked()
        store.release.set()
        await trio.testing.wait_all_tasks_blocked()
        reader.close()
    assert got == [b"\x01" * 10]
    assert store.fetched.count(1) == 1, store.fetched


async def test_closing_a_reader_cancels_an_overtaken_block_too() -> None:
    """No fetch outlives its reader's close() unless a read waits for it, overtaken or
    not (its retries would go on being paid for after the file was closed)."""
    store = OneSlowBlock()
    async with trio.open_nursery() as nursery:
        reader = ObjectReader(store, nursery, "k", 8 * BLOCK, BLOCK, '"e"')  # type: ignore[arg-type]
        await overtake(reader)
        await trio.testing.wait_all_tasks_blocked()
        reader.close()
        with trio.fail_after(5):
            while not store.cancelled:
                await trio.sleep(0)
    assert store.cancelled == [1]
