"""Tests of the upload driver (s3mpfs.write.upload) against an in-memory S3 (tests/fakestore.py):
what reaches the bucket, bounded parts in flight, backpressure, failures and aborts.

No network and no FUSE. Waiting is done with events and
`trio.testing.wait_all_tasks_blocked`, never with sleeps; every test runs under a deadline
so that a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import errno
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from fakestore import FakeStore, client_error, md5_etag, multipart_etag_of
from trio.testing import wait_all_tasks_blocked

from s3mpfs.errors import InvalidWrite, UploadFailed, errno_for
from s3mpfs.s3.integrity import multipart_etag
from s3mpfs.write.budget import MemoryBudget
from s3mpfs.write.spool import SpoolSpace
from s3mpfs.write.upload import Upload, UploadShared

KiB = 1024
MiB = 1024 * KiB
PART = 5 * MiB  # the smallest base part size; the schedule keeps it for 64 parts
DEADLINE = 10  # seconds; a test that takes longer is hung
KEY = "dir/file"


def payload(size: int, seed: int = 0) -> bytes:
    """Distinct bytes, so that reordered or lost parts show."""
    return random.Random(seed).randbytes(size)


def server_error(operation: str) -> Callable[[], Exception]:
    return lambda: client_error("InternalError", operation, 500)


@asynccontextmanager
async def mount_uploads(store: FakeStore, *, memory: int = 8 * PART, parts: int = 4,
                        **options: Any) -> AsyncIterator[UploadShared]:
    """What a mount shares between uploads, inside the test's own nursery. Every upload a
    test starts must have finished when the block ends."""
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            shared = UploadShared(store, nursery, MemoryBudget(memory),
                                  trio.CapacityLimiter(parts), PART, **options)
            yield shared
            assert not shared.uploads, "an upload is still running"


async def write_in_chunks(upload: Upload, data: bytes, chunk: int = MiB + 3,
                          start: int = 0) -> None:
    for offset in range(0, len(data), chunk):
        assert await upload.write(start + offset, data[offset:offset + chunk]) == len(
            data[offset:offset + chunk])


# -------------------------------------------------------------------- what reaches S3


async def test_a_large_file_becomes_one_multipart_object_with_its_parts_in_order() -> None:
    store = FakeStore()
    data = payload(3 * PART + 12345)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, lambda: {"mode": "33188"})
        await write_in_chunks(upload, data)
        result = await upload.close()
    stored = store.objects[KEY]
    assert stored.data == data
    assert stored.metadata == {"mode": "33188"}
    assert sorted(store.calls_to("upload_part")) == [1, 2, 3, 4]
    assert store.calls_to("create_multipart") == [KEY]
    assert store.calls_to("complete_multipart") == [[1, 2, 3, 4]]
    assert store.calls_to("put_object") == []
    assert store.calls_to("abort_multipart") == []
    assert store.pending == {}
    assert result["ETag"] == stored.etag
    assert (upload.size, upload.done, upload.error) == (len(data), True, None)


async def test_a_small_file_is_a_single_put_object() -> None:
    store = FakeStore()
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, lambda: {"uid": "7"})
        await upload.write(0, b"hello ")
        await upload.write(6, b"world")
        result = await upload.close()
    assert store.calls == [("put_object", (KEY, 11))]
    assert store.objects[KEY].data == b"hello world"
    assert store.objects[KEY].metadata == {"uid": "7"}
    assert result["ETag"] == md5_etag(b"hello world")


async def test_a_file_of_exactly_one_part_is_a_single_put_object() -> None:
    store = FakeStore()
    data = payload(PART)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await write_in_chunks(upload, data)
        await upload.close()
    assert store.calls == [("put_object", (KEY, PART))]
    assert store.objects[KEY].data == data


async def test_one_byte_more_than_a_part_is_a_multipart_upload_of_two_parts() -> None:
    store = FakeStore()
    data = payload(PART + 1)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, data)
        await upload.close()
    assert store.calls_to("complete_multipart") == [[1, 2]]
    assert store.objects[KEY].data == data


async def test_an_empty_file_is_put_as_an_empty_object() -> None:
    store = FakeStore()
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.close()
    assert store.calls == [("put_object", (KEY, 0))]
    assert store.objects[KEY].data == b""


async def test_a_hole_is_uploaded_as_zeros() -> None:
    store = FakeStore()
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, b"head")
        await upload.write(2 * PART, b"tail")
        await upload.close()
    assert store.objects[KEY].data == b"head" + bytes(2 * PART - 4) + b"tail"


async def test_a_write_into_a_sent_part_not_kept_is_refused_and_the_upload_goes_on() -> None:
    store = FakeStore()
    data = payload(2 * PART + 1)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, data)  # parts 1 and 2 cut, the file never went back
        with pytest.raises(InvalidWrite) as info:
            await upload.write(PART + 7, b"Y")  # part 2: sent, its bytes not kept
        assert errno_for(info.value) == errno.EINVAL
        await upload.write(len(data), b"d")
        await upload.close()
    assert store.objects[KEY].data == data + b"d"


async def test_the_first_part_is_sent_again_when_a_header_is_written_last() -> None:
    """A muxer's pattern, opened write-only: placeholder header, media, then the header."""
    store = FakeStore()
    media = payload(3 * PART)
    released = trio.Event()
    upload_part = store.upload_part

    async def first_upload_of_part_1_is_slow(key: str, upload_id: str, number: int,
                                             data: bytes) -> Any:
        if number == 1 and not released.is_set():
            await released.wait()
        return await upload_part(key, upload_id, number, data)

    store.upload_part = first_upload_of_part_1_is_slow  # type: ignore[method-assign]
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, bytes(16))
        await upload.write(16, media)
        await upload.write(16 + len(media), b"moov")
        await upload.write(4, b"HEADER")  # part 1's first upload is still in flight
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload.close)
            await wait_all_tasks_blocked()
            released.set()
    assert store.objects[KEY].data == bytes(4) + b"HEADER" + bytes(6) + media + b"moov"
    assert store.calls_to("upload_part").count(1) == 2  # sent again after the first ended
    assert store.calls_to("upload_part").count(2) == 1


async def test_after_going_back_later_parts_are_kept_in_the_spool(tmp_path: Path) -> None:
    """A zip writer fills in each entry's local header after its data."""
    store = FakeStore()
    space = SpoolSpace(str(tmp_path), 16 * PART)
    entries = [payload(PART + 100, seed) for seed in range(3)]
    expected = bytearray()
    async with mount_uploads(store, spool=space) as shared:
        upload = Upload(shared, KEY, dict)
        for entry in entries:
            header_at = len(expected)
            await upload.write(header_at, bytes(30))
            await upload.write(header_at + 30, entry)
            expected += b"H" * 30 + entry
            await upload.write(header_at, b"H" * 30)  # back into a sent part
        assert space.used > 0
        await upload.close()
    assert store.objects[KEY].data == bytes(expected)
    assert space.used == 0


async def test_a_file_written_in_order_spools_only_its_first_part(tmp_path: Path) -> None:
    store = FakeStore()
    space = SpoolSpace(str(tmp_path / "spool"), 16 * PART)
    data = payload(4 * PART)
    async with mount_uploads(store, spool=space) as shared:
        upload = Upload(shared, KEY, dict)
        for start in range(0, len(data), 128 * KiB):
            await upload.write(start, data[start:start + 128 * KiB])
            assert space.used == (PART if start >= PART else 0)  # kept for a rewrite
        await upload.close()
    assert store.objects[KEY].data == data
    assert space.used == 0
    assert len(store.calls_to("upload_part")) == 4


async def test_without_a_spool_the_first_part_is_kept_in_memory() -> None:
    store = FakeStore()
    data = payload(3 * PART)
    async with mount_uploads(store) as shared:  # cache_size=0
        upload = Upload(shared, KEY, dict)
        await upload.write(0, data)
        await upload.write(7, b"header")  # into part 1, already sent
        await upload.close()
    assert store.objects[KEY].data == data[:7] + b"header" + data[13:]


def apply(model: bytearray, offset: int, data: bytes) -> None:
    if len(model) < offset:
        model += bytes(offset - len(model))
    model[offset:offset + len(data)] = data


async def test_a_file_written_backwards_from_the_start_keeps_every_part(
    tmp_path: Path
) -> None:
    """s3fs-fuse's write_multiblock, write-only: the second half first, then the first."""
    store = FakeStore()
    space = SpoolSpace(str(tmp_path), 16 * PART)
    model = bytearray()
    writes = [(4 * PART + 1, payload(2 * PART, 1)), (2 * PART, payload(2 * PART, 2)),
              (3, b"head")]
    async with mount_uploads(store, spool=space) as shared:
        upload = Upload(shared, KEY, dict)
        for offset, data in writes:
            await upload.write(offset, data)
            apply(model, offset, data)
        await upload.close()
    assert store.objects[KEY].data == bytes(model)
    assert space.used == 0


async def test_parts_of_zeros_after_a_hole_are_kept_without_a_byte(tmp_path: Path) -> None:
    store = FakeStore()
    space = SpoolSpace(str(tmp_path), 16 * PART)
    model = bytearray()
    async with mount_uploads(store, spool=space) as shared:
        upload = Upload(shared, KEY, dict)
        for offset, data in [(0, payload(2 * PART + 1, 1)), (6 * PART, b"end")]:
            await upload.write(offset, data)  # parts 1 and 2 sent, then a hole
            apply(model, offset, data)
        assert space.used == PART  # the first part's; the parts of zeros cost none
        await upload.write(4 * PART + 9, b"into the hole")
        apply(model, 4 * PART + 9, b"into the hole")
        with pytest.raises(InvalidWrite):
            await upload.write(PART + 1, b"x")  # part 2: data sent before the hole
        await upload.close()
    assert store.objects[KEY].data == bytes(model)


async def test_when_the_spool_has_no_room_later_parts_are_not_kept(tmp_path: Path) -> None:
    store = FakeStore()
    space = SpoolSpace(str(tmp_path), 2 * PART)  # room for the first part and one more
    data = payload(4 * PART)
    async with mount_uploads(store, spool=space) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, b"x")
        await upload.write(0, data)  # went back at once: parts 2.. are kept while room
        await upload.write(PART + 1, b"2")  # part 2: kept
        with pytest.raises(InvalidWrite):
            await upload.write(2 * PART + 1, b"3")  # part 3: no room was left for it
        await upload.close()
    assert store.objects[KEY].data == data[:PART + 1] + b"2" + data[PART + 2:]


async def test_an_empty_etag_from_complete_is_replaced_by_the_objects() -> None:
    """Ceph RGW 16 answers CompleteMultipartUpload with `<ETag></ETag>`: the ETag the
    mount remembers (and pins later reads to) comes from the HEAD that checks the object."""
    store = FakeStore()
    complete = store.complete_multipart

    async def complete_without_etag(*args: Any, **kwargs: Any) -> dict:
        return {**await complete(*args, **kwargs), "ETag": ""}

    store.complete_multipart = complete_without_etag  # type: ignore[method-assign]
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(PART + 1))
        result = await upload.close()
    assert result["ETag"] == store.objects[KEY].etag != ""


async def test_metadata_is_taken_when_the_object_is_created() -> None:
    store = FakeStore()
    state = {"mtime": "1"}
    async with mount_uploads(store) as shared:
        small = Upload(shared, "small", lambda: dict(state))
        large = Upload(shared, "large", lambda: dict(state))
        await small.write(0, b"x")
        await large.write(0, payload(PART + 1))  # creates the multipart upload now
        await wait_all_tasks_blocked()
        state["mtime"] = "2"  # e.g. utimens() while the files are open
        await small.close()  # the PutObject happens now
        await large.close()
    assert store.objects["small"].metadata == {"mtime": "2"}
    assert store.objects["large"].metadata == {"mtime": "1"}


async def test_a_write_after_a_successful_close_is_refused() -> None:
    store = FakeStore()
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, b"done")
        first = await upload.close()
        assert await upload.close() == first  # closing again reports the same outcome
        with pytest.raises(UploadFailed):
            await upload.write(4, b"more")
    assert store.objects[KEY].data == b"done"


# -------------------------------------------------------------------- concurrency, memory


@pytest.mark.parametrize("limit", [1, 3])
async def test_parts_in_flight_never_exceed_the_limiter(limit: int) -> None:
    store = FakeStore()
    release = store.hold("upload_part")
    data = payload(6 * PART + 1)
    async with mount_uploads(store, memory=8 * PART, parts=limit) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, data)  # six parts: within the budget, so the write returns
        await wait_all_tasks_blocked()
        assert store.parts_in_flight == limit
        assert len(store.calls_to("upload_part")) == limit
        release.set()
        await upload.close()
    assert store.max_parts_in_flight == limit
    assert store.objects[KEY].data == data


async def test_the_part_limiter_is_shared_by_all_uploads() -> None:
    store = FakeStore()
    release = store.hold("upload_part")
    files = {f"file{i}": payload(2 * PART + 1, seed=i) for i in range(3)}
    async with mount_uploads(store, memory=16 * PART, parts=2) as shared:
        uploads = {key: Upload(shared, key, dict) for key in files}
        for key, data in files.items():
            await uploads[key].write(0, data)
        await wait_all_tasks_blocked()
        assert store.parts_in_flight == 2
        release.set()
        for upload in uploads.values():
            await upload.close()
    assert store.max_parts_in_flight == 2
    assert {key: store.objects[key].data for key in files} == files


async def test_a_writer_waits_while_the_memory_budget_is_used_up() -> None:
    store = FakeStore()
    release = store.hold("upload_part")
    data = payload(8 * PART)
    accepted = 0  # bytes whose write() returned
    writer_done = trio.Event()
    async with mount_uploads(store, memory=2 * PART, parts=8) as shared:
        upload = Upload(shared, KEY, dict)

        async def writer() -> None:
            nonlocal accepted
            for offset in range(0, len(data), MiB):
                await upload.write(offset, data[offset:offset + MiB])
                accepted = offset + MiB
            writer_done.set()

        shared.nursery.start_soon(writer)
        await wait_all_tasks_blocked()
        # Held: parts 1 and 2 uploading (the whole budget); the write that begins part
        # 3 waits for room for the part it fills. The writer cannot get further.
        assert not writer_done.is_set()
        assert store.parts_in_flight == 2
        assert shared.budget.used == 2 * PART
        assert accepted == 2 * PART
        release.set()
        await writer_done.wait()
        await upload.close()
    assert store.max_part_bytes_in_flight <= 2 * PART
    assert shared.budget.used == 0
    assert store.objects[KEY].data == data


async def test_memory_budget_blocks_until_released() -> None:
    budget = MemoryBudget(10)
    got: list[int] = []

    async def take(size: int) -> None:
        got.append(await budget.acquire(size))

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            assert await budget.acquire(6) == 6
            nursery.start_soon(take, 5)
            await wait_all_tasks_blocked()
            assert got == []  # 6 + 5 > 10
            nursery.start_soon(take, 4)
            await wait_all_tasks_blocked()
            assert got == [4]  # 6 + 4 fits
            budget.release(6)
            await wait_all_tasks_blocked()
            assert got == [4, 5]
            assert budget.used == 9


async def test_a_part_larger_than_the_budget_is_charged_as_the_whole_budget() -> None:
    budget = MemoryBudget(10)
    with trio.fail_after(DEADLINE):
        charge = await budget.acquire(25)  # would otherwise wait forever
        assert (charge, budget.used) == (10, 10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(budget.acquire, 1)
            await wait_all_tasks_blocked()
            assert budget.used == 10  # the next one waits for it
            budget.release(charge)
        assert budget.used == 1


# -------------------------------------------------------------------- failures


async def test_a_failing_part_aborts_the_upload_and_the_error_sticks() -> None:
    store = FakeStore()
    store.add_object(KEY, b"previous version")
    release = store.hold("upload_part")
    store.fail_on[("upload_part", 2)] = server_error("UploadPart")
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(3 * PART + 1))  # parts 1-3 handed over and held
        release.set()
        await wait_all_tasks_blocked()
        assert upload.done
        with pytest.raises(UploadFailed) as info:
            await upload.close()
        assert info.value.errno == errno.EIO
        with pytest.raises(UploadFailed) as later:
            await upload.write(3 * PART + 1, b"more")
        assert errno_for(later.value) == errno.EIO
        with pytest.raises(UploadFailed):
            await upload.close()
    assert store.calls_to("abort_multipart") == ["upload-1"]
    assert store.calls_to("complete_multipart") == []
    assert store.pending == {}
    assert store.objects[KEY].data == b"previous version"  # S3 keeps the old version


async def test_a_failing_last_part_fails_close() -> None:
    store = FakeStore()
    store.fail_on[("upload_part", 2)] = server_error("UploadPart")
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(PART + 10))
        with pytest.raises(UploadFailed) as info:
            await upload.close()
        assert info.value.errno == errno.EIO
    assert store.calls_to("abort_multipart") == ["upload-1"]
    assert store.calls_to("complete_multipart") == []
    assert KEY not in store.objects


async def test_a_writer_held_back_by_the_budget_gets_the_failure() -> None:
    store = FakeStore()
    release = store.hold("upload_part")
    store.fail_on[("upload_part", 1)] = server_error("UploadPart")
    errors: list[BaseException] = []
    writer_done = trio.Event()
    async with mount_uploads(store, memory=2 * PART) as shared:
        upload = Upload(shared, KEY, dict)

        async def writer() -> None:
            try:
                await write_in_chunks(upload, payload(8 * PART), chunk=MiB)
            except UploadFailed as exc:
                errors.append(exc)
            finally:
                writer_done.set()

        shared.nursery.start_soon(writer)
        await wait_all_tasks_blocked()
        assert not writer_done.is_set()  # held back by the budget
        release.set()
        await writer_done.wait()
        assert len(errors) == 1 and errno_for(errors[0]) == errno.EIO
        with pytest.raises(UploadFailed):
            await upload.close()
    assert store.calls_to("abort_multipart") == ["upload-1"]
    assert store.pending == {} and KEY not in store.objects


async def test_a_failing_create_fails_close_with_nothing_to_abort() -> None:
    store = FakeStore()
    store.fail_on[("create_multipart", 1)] = lambda: client_error(
        "AccessDenied", "CreateMultipartUpload", 403)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(PART + 1))
        with pytest.raises(UploadFailed) as info:
            await upload.close()
        assert info.value.errno == errno.EIO
    assert store.calls_to("create_multipart") == [KEY]
    assert store.calls_to("upload_part") == []
    assert store.calls_to("abort_multipart") == []
    assert store.calls_to("complete_multipart") == []
    assert KEY not in store.objects


async def test_a_failing_put_object_fails_close() -> None:
    store = FakeStore()
    store.fail_on[("put_object", 1)] = server_error("PutObject")
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, b"small")
        with pytest.raises(UploadFailed):
            await upload.close()
    assert store.calls_to("abort_multipart") == []
    assert KEY not in store.objects


async def test_a_lost_complete_answer_after_the_commit_still_succeeds() -> None:
    store = FakeStore()
    store.commit_then_lose_complete = True  # committed, then NoSuchUpload
    data = payload(2 * PART + 5)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, data)
        result = await upload.close()
    stored = store.objects[KEY]
    assert stored.data == data
    assert result["ETag"] == stored.etag
    assert result["ETag"] == multipart_etag(list(upload.parts.values()))
    assert result["ETag"] == multipart_etag_of([p.etag for p in upload.parts.values()])
    assert KEY in store.calls_to("head")  # how it knew the commit was its own
    assert store.calls_to("abort_multipart") == []


async def test_no_such_upload_on_complete_without_a_commit_fails() -> None:
    store = FakeStore()
    store.add_object(KEY, b"someone else's version")
    store.fail_on[("complete_multipart", 1)] = lambda: client_error(
        "NoSuchUpload", "CompleteMultipartUpload", 404)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(2 * PART + 5))
        with pytest.raises(UploadFailed) as info:
            await upload.close()
        assert info.value.errno == errno.EIO
    assert store.calls_to("head") == [KEY]  # checked, and found another object
    assert store.objects[KEY].data == b"someone else's version"


async def test_no_such_upload_on_complete_with_no_object_at_all_fails() -> None:
    store = FakeStore()
    store.fail_on[("complete_multipart", 1)] = lambda: client_error(
        "NoSuchUpload", "CompleteMultipartUpload", 404)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(PART + 5))
        with pytest.raises(UploadFailed):
            await upload.close()
    assert KEY not in store.objects


async def test_another_complete_error_fails_without_checking_the_object() -> None:
    store = FakeStore()
    store.fail_on[("complete_multipart", 1)] = server_error("CompleteMultipartUpload")
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(PART + 5))
        with pytest.raises(UploadFailed):
            await upload.close()
    assert store.calls_to("head") == []
    assert store.calls_to("abort_multipart") == ["upload-1"]
    assert store.pending == {} and KEY not in store.objects


# -------------------------------------------------------------------- cancel, discard


async def test_cancel_aborts_a_pending_multipart_upload() -> None:
    store = FakeStore()
    store.hold("upload_part")  # never released: part 1 stays in flight
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(PART + 1))
        await wait_all_tasks_blocked()
        assert store.parts_in_flight == 1
        await upload.cancel("unmounting")
        assert upload.done
        assert store.parts_in_flight == 0
        with pytest.raises(UploadFailed, match="unmounting"):
            await upload.close()
    assert store.calls_to("abort_multipart") == ["upload-1"]
    assert store.calls_to("complete_multipart") == []
    assert store.pending == {} and KEY not in store.objects


async def test_cancel_before_any_part_makes_no_request() -> None:
    store = FakeStore()
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, b"buffered only")
        await upload.cancel("unmounting")
        with pytest.raises(UploadFailed):
            await upload.close()
    assert store.calls == []


async def test_cancel_after_completion_changes_nothing() -> None:
    store = FakeStore()
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, b"kept")
        await upload.close()
        await upload.cancel("unmounting")
        assert upload.error is None
    assert store.objects[KEY].data == b"kept"
    assert store.calls_to("abort_multipart") == []


async def test_discard_makes_no_request() -> None:
    store = FakeStore()
    async with mount_uploads(store) as shared:
        untouched = Upload(shared, "untouched", dict)
        written = Upload(shared, "written", dict)
        await written.write(0, b"not worth committing")
        await untouched.discard()
        await written.discard()
        assert untouched.done and written.done
    assert store.calls == []
    assert store.objects == {}


# -------------------------------------------------------------------- appending to a base


async def test_appending_to_a_large_object_copies_it_server_side() -> None:
    store = FakeStore()
    old = payload(PART + 7, seed=1)
    new = payload(PART + 3, seed=2)
    store.add_object(KEY, old)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict, base=store.info(KEY))
        assert upload.size == len(old)
        await write_in_chunks(upload, new, start=len(old))
        await upload.close()
    assert store.objects[KEY].data == old + new
    assert store.calls_to("upload_part_copy") == [(1, KEY, 0, len(old))]
    assert sorted(store.calls_to("upload_part")) == [2, 3]
    assert store.calls_to("complete_multipart") == [[1, 2, 3]]
    assert store.calls_to("get_range") == []  # the old bytes never came down


async def test_appending_to_an_object_that_changed_meanwhile_fails() -> None:
    store = FakeStore()
    store.add_object(KEY, payload(PART, seed=1))
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict, base=store.info(KEY))
        store.add_object(KEY, b"replaced by someone else")
        await upload.write(PART, b"appended")
        with pytest.raises(UploadFailed):
            await upload.close()
    assert store.objects[KEY].data == b"replaced by someone else"
    assert store.calls_to("abort_multipart") == ["upload-1"]


async def test_an_append_is_not_stored_over_a_version_stored_after_its_copies() -> None:
    """The base is copied intact, then another host stores a new version before the
    commit: the commit is conditional on the base (If-Match, or the store's HEAD)."""
    store = FakeStore()
    old = payload(PART + 7, seed=1)
    store.add_object(KEY, old)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict, base=store.info(KEY))
        await write_in_chunks(upload, payload(PART + 3, seed=2), start=len(old))
        await wait_all_tasks_blocked()  # the copies and parts are done
        store.add_object(KEY, old + b"theirs")
        with pytest.raises(UploadFailed) as failure:
            await upload.close()
    assert "another client changed" in str(failure.value)
    assert store.objects[KEY].data == old + b"theirs"
    assert not store.pending


async def test_appending_to_a_small_object_reads_it_back_and_puts_it_whole() -> None:
    store = FakeStore()
    store.add_object(KEY, b"small base")
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict, base=store.info(KEY))
        await upload.write(10, b"+tail")
        await upload.close()
    assert store.objects[KEY].data == b"small base+tail"
    assert store.calls_to("get_range") == [(KEY, 0, 10)]
    assert store.calls_to("put_object") == [(KEY, 15)]
    assert store.calls_to("upload_part_copy") == []


async def test_a_base_that_cannot_be_read_fails_the_file_for_good() -> None:
    """If the old bytes cannot be fetched, no later write may go on as if the file
    started empty (that would store zeros where the old bytes were)."""
    store = FakeStore()
    store.add_object(KEY, b"small base")
    store.fail_on[("get_range", 1)] = server_error("GetObject")
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict, base=store.info(KEY))
        with pytest.raises(UploadFailed) as first:
            await upload.write(10, b"+tail")
        assert first.value.errno == errno.EIO
        with pytest.raises(UploadFailed):
            await upload.write(15, b"more")
        with pytest.raises(UploadFailed):
            await upload.close()
    assert store.objects[KEY].data == b"small base"
    assert store.calls_to("put_object") == []


async def test_a_small_base_that_grows_past_a_part_becomes_multipart() -> None:
    store = FakeStore()
    old = payload(MiB, seed=1)
    new = payload(PART, seed=2)
    store.add_object(KEY, old)
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict, base=store.info(KEY))
        await upload.write(len(old), new)
        await upload.close()
    assert store.objects[KEY].data == old + new
    assert store.calls_to("complete_multipart") == [[1, 2]]
    assert store.calls_to("upload_part_copy") == []


async def test_discarding_an_upload_with_a_base_leaves_the_object_alone() -> None:
    store = FakeStore()
    store.add_object(KEY, payload(PART, seed=1))
    before = store.objects[KEY]
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict, base=store.info(KEY))
        await upload.discard()
    assert store.calls == []
    assert store.objects[KEY] is before


# -------------------------------------------------------------------- encryption checks


async def test_a_multipart_object_stored_with_the_wrong_encryption_is_deleted() -> None:
    store = FakeStore()
    store.sse = "AES256"  # e.g. a bucket policy or an S3 clone ignoring the request
    async with mount_uploads(store, expected_sse="aws:kms") as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, payload(PART + 1))
        with pytest.raises(UploadFailed, match="encryption"):
            await upload.close()
    assert KEY not in store.objects


async def test_a_small_object_stored_with_the_wrong_encryption_fails_close() -> None:
    store = FakeStore()
    store.sse = "AES256"
    async with mount_uploads(store, expected_sse="aws:kms") as shared:
        upload = Upload(shared, KEY, dict)
        await upload.write(0, b"small")
        with pytest.raises(UploadFailed):
            await upload.close()


async def test_the_expected_encryption_is_accepted() -> None:
    store = FakeStore()
    store.sse = "aws:kms"
    async with mount_uploads(store, expected_sse="aws:kms") as shared:
        small = Upload(shared, "small", dict)
        large = Upload(shared, "large", dict)
        await small.write(0, b"small")
        await large.write(0, payload(PART + 1))
        await small.close()
        await large.close()
    assert set(store.objects) == {"small", "large"}


# -------------------------------------------------------------------- new objects


@pytest.mark.parametrize("size", [10, PART + 1])
async def test_a_new_file_does_not_replace_an_object_created_meanwhile(size: int) -> None:
    store = FakeStore()
    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, dict, only_new=True)
        await upload.write(0, payload(size))
        store.add_object(KEY, b"another client's")
        with pytest.raises(UploadFailed, match="another client created"):
            await upload.close()
    assert store.objects[KEY].data == b"another client's"
    assert store.pending == {}


async def test_many_writers_fill_no_more_parts_than_the_budget_holds() -> None:
    """Each file filling a part holds a whole part of the budget: six files written at once
    through a budget of two parts fill two parts at a time (a file waiting for room holds
    at most the write it waits with), and all finish."""
    store = FakeStore()
    files = {f"f{i}": payload(3 * PART + i, i) for i in range(6)}
    filling: list[int] = []
    async with mount_uploads(store, memory=2 * PART, parts=2) as shared:

        async def write(key: str, data: bytes) -> None:
            upload = Upload(shared, key, dict)
            for offset in range(0, len(data), MiB):
                await upload.write(offset, data[offset:offset + MiB])
                filling.append(sum(1 for u in shared.uploads if u.filling.held))
                assert all(u.filling.held or u.planner.buffered <= MiB
                           for u in shared.uploads)
            await upload.close()

        async with trio.open_nursery() as nursery:
            for key, data in files.items():
                nursery.start_soon(write, key, data)
    assert all(store.objects[key].data == data for key, data in files.items())
    assert max(filling) <= 2 and shared.budget.used == 0


async def test_an_upload_abandoned_while_it_creates_its_multipart_upload_returns_its_memory(
) -> None:
    """The part the driver received before CreateMultipartUpload answered holds budget:
    an abandon (the file deleted) then must give it back. Before, each such abandon kept
    a part's worth, until writes waited for room forever (a hang the differential test's
    long mode found)."""
    store = FakeStore()
    started = trio.Event()
    release = trio.Event()
    create = store.create_multipart

    async def slow_create(key: str, metadata: dict[str, str], replacing: Any = None) -> str:
        started.set()
        await release.wait()
        return await create(key, metadata, replacing)

    store.create_multipart = slow_create  # type: ignore[method-assign]

    async def write(upload: Upload) -> None:
        with contextlib.suppress(UploadFailed):  # (its writes fail once it is abandoned)
            await write_in_chunks(upload, payload(2 * PART))

    async with mount_uploads(store) as shared:
        upload = Upload(shared, KEY, lambda: {})
        async with trio.open_nursery() as writers:
            writers.start_soon(write, upload)
            await started.wait()
            await upload.abandon("file was deleted while being written")
            writers.cancel_scope.cancel()
        assert shared.budget.used == 0
