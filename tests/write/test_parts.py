"""Unit tests of the pure part planner (s3mpfs.write.parts): cutting, boundaries, the
part-size schedule, S3's limits. No I/O."""

from __future__ import annotations

import errno
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3mpfs.config import GiB, MiB
from s3mpfs.errors import FileTooLarge, InvalidWrite
from s3mpfs.write.parts import (
    MAX_PARTS,
    S3_MAX_OBJECT_SIZE,
    TIER_PARTS,
    Part,
    PartPlanner,
    copy_parts,
    max_file_size,
    part_size_for,
    rebuild_plan,
)

PART = 5 * MiB  # S3's minimum part size, the smallest base a mount can use
MAX_PART = 5 * GiB  # S3's maximum part size
S3_MAX_PARTS = 10_000
BASES = [5 * MiB, 6 * MiB, 8 * MiB, 16 * MiB, 5 * GiB]

# Distinct bytes, so that a misplaced or reordered byte shows.
SOURCE = random.Random(1234).randbytes(4 * PART)


def write_all(planner: PartPlanner, offset: int, data: bytes) -> list[Part]:
    """PartPlanner.write is a generator: consume it, as the upload does."""
    return list(planner.write(offset, data))


def plan(size: int, base: int = PART, chunk: int | None = None) -> tuple[list[Part], Part]:
    """Write SOURCE[:size] sequentially in chunks; return (parts cut, the finish() part)."""
    planner = PartPlanner(base)
    chunk = chunk or max(size, 1)
    cut: list[Part] = []
    for start in range(0, size, chunk):
        cut += write_all(planner, start, SOURCE[start:min(start + chunk, size)])
    return cut, planner.finish()


# -------------------------------------------------------------------- file-size boundaries


@pytest.mark.parametrize("chunk", [None, MiB + 1], ids=["one write", "odd chunks"])
@pytest.mark.parametrize(
    ("size", "cut_sizes", "last_size"),
    [
        (0, [], 0),
        (1, [], 1),
        (PART - 1, [], PART - 1),
        (PART, [], PART),
        (PART + 1, [PART], 1),
        (2 * PART, [PART], PART),
        (2 * PART + 1, [PART, PART], 1),
    ],
    ids=["0", "1", "part-1", "part", "part+1", "2*part", "2*part+1"],
)
def test_parts_are_cut_only_when_the_buffer_holds_more_than_a_part(
    size: int, cut_sizes: list[int], last_size: int, chunk: int | None
) -> None:
    cut, last = plan(size, chunk=chunk)
    assert [len(p) for p in cut] == cut_sizes
    assert len(last) == last_size
    assert [p.number for p in [*cut, last]] == list(range(1, len(cut) + 2))
    assert [p.offset for p in [*cut, last]] == [i * PART for i in range(len(cut) + 1)]
    assert b"".join(p.data for p in [*cut, last]) == SOURCE[:size]


def test_the_last_part_is_empty_only_for_an_empty_file() -> None:
    for size in (1, PART, PART + 1, 2 * PART):
        _, last = plan(size)
        assert len(last) > 0, size
    _, last = plan(0)
    assert last == Part(1, 0, b"")


def test_a_file_of_exactly_one_part_is_a_single_finish_part() -> None:
    planner = PartPlanner(PART)
    assert write_all(planner, 0, SOURCE[:PART]) == []
    assert planner.parts_cut == 0
    assert planner.buffered == PART
    last = planner.finish()
    assert (last.number, last.offset, last.data) == (1, 0, SOURCE[:PART])


def test_size_and_buffer_are_tracked_as_writes_arrive() -> None:
    planner = PartPlanner(PART)
    write_all(planner, 0, SOURCE[:3 * MiB])
    assert (planner.size, planner.buffered, planner.next_number) == (3 * MiB, 3 * MiB, 1)
    cut = write_all(planner, 3 * MiB, SOURCE[3 * MiB:7 * MiB])
    assert [p.number for p in cut] == [1]
    assert (planner.size, planner.buffered, planner.next_number) == (7 * MiB, 2 * MiB, 2)


def test_byte_by_byte_writes_cut_the_same_parts_as_one_write() -> None:
    base = 3
    data = SOURCE[:500]
    one = PartPlanner(base)
    many = PartPlanner(base)
    expected = write_all(one, 0, data) + [one.finish()]
    got = [p for i in range(len(data)) for p in write_all(many, i, data[i:i + 1])]
    assert got + [many.finish()] == expected


# -------------------------------------------------------------------- order, holes, limits


def test_a_write_before_the_end_patches_the_part_being_filled() -> None:
    planner = PartPlanner(PART)
    write_all(planner, 0, b"hello")
    assert write_all(planner, 4, b"XYZ") == []
    assert (planner.size, planner.buffered) == (7, 7)
    assert planner.finish().data == b"hellXYZ"


def test_a_rewrite_of_cut_bytes_is_refused_with_einval() -> None:
    planner = PartPlanner(PART)
    write_all(planner, 0, SOURCE[:PART + 5])
    with pytest.raises(InvalidWrite) as info:
        write_all(planner, PART - 1, b"XY")
    assert info.value.errno == errno.EINVAL
    assert (planner.size, planner.buffered) == (PART + 5, 5)  # nothing changed


def _plan(size: int, base: int, changed: list[tuple[int, int]], part: int = 8 * MiB
          ) -> list[tuple[int, int, int, bool]]:
    return [(p.number, p.start, p.end, p.copy) for p in rebuild_plan(size, base, changed, part)]


def test_rebuild_plan_copies_untouched_runs_and_uploads_changed_parts() -> None:
    size = 50 * MiB
    assert _plan(size, size, [(30 * MiB, 30 * MiB + 1000)]) == [
        (1, 0, 24 * MiB, True), (2, 24 * MiB, 32 * MiB, False), (3, 32 * MiB, size, True)]
    # A small file is one upload; bytes past the base are uploaded, never copied.
    assert _plan(3 * MiB, 3 * MiB, [(0, 1)]) == [(1, 0, 3 * MiB, False)]
    assert _plan(20 * MiB, 10 * MiB, []) == [
        (1, 0, 8 * MiB, True), (2, 8 * MiB, 16 * MiB, False), (3, 16 * MiB, 20 * MiB, False)]


def test_rebuild_plan_of_10_gib_with_one_small_change_uploads_one_part() -> None:
    size = 10 * 1024 * MiB
    plan = rebuild_plan(size, size, [(5 * 1024 * MiB + 7, 5 * 1024 * MiB + 4103)], 8 * MiB)
    uploaded = [p for p in plan if not p.copy]
    assert [p.end - p.start for p in uploaded] == [8 * MiB]
    assert all(p.end - p.start <= 5 * 1024 * MiB for p in plan)
    assert [p.number for p in plan] == list(range(1, len(plan) + 1))
    assert plan[-1].end == size
    assert all(a.end == b.start for a, b in zip(plan, plan[1:], strict=False))


def test_rebuild_plan_stays_within_10000_parts() -> None:
    size = 200 * 1024 * MiB  # 25,600 cells of 8 MiB, every one changed
    changed = [(i * 8 * MiB, i * 8 * MiB + 1) for i in range(size // (8 * MiB))]
    plan = rebuild_plan(size, size, changed, 8 * MiB)
    assert len(plan) <= 10_000 and plan[-1].end == size


def test_a_rewrite_of_already_cut_bytes_is_refused_too() -> None:
    planner = PartPlanner(PART)
    write_all(planner, 0, SOURCE[:PART + 1])
    with pytest.raises(InvalidWrite):
        write_all(planner, 0, b"X")


def test_a_write_past_the_end_fills_the_hole_with_zeros() -> None:
    planner = PartPlanner(PART)
    write_all(planner, 0, b"head")
    assert write_all(planner, 10, b"tail") == []
    assert planner.size == 14
    assert planner.finish().data == b"head" + bytes(6) + b"tail"


def test_a_hole_longer_than_parts_is_cut_into_scheduled_zero_parts() -> None:
    planner = PartPlanner(PART)
    cut = write_all(planner, 2 * PART + 3, b"tail")
    last = planner.finish()
    assert [(p.number, p.offset, len(p)) for p in cut] == [(1, 0, PART), (2, PART, PART)]
    assert all(p.data == bytes(PART) for p in cut)
    assert last.data == bytes(3) + b"tail"


def test_an_empty_write_past_the_end_extends_the_file_with_zeros() -> None:
    planner = PartPlanner(PART)
    write_all(planner, 7, b"")
    assert planner.size == 7
    assert planner.finish().data == bytes(7)


@pytest.mark.parametrize("base", BASES)
def test_a_write_beyond_the_largest_file_raises_efbig_without_allocating(base: int) -> None:
    planner = PartPlanner(base)
    limit = max_file_size(base)
    # Were the hole filled before the check, these would allocate tens of terabytes.
    for offset, data in [(limit, b"x"), (limit - 1, b"xy"), (10**15, b"x")]:
        with pytest.raises(FileTooLarge) as info:
            write_all(planner, offset, data)
        assert info.value.errno == errno.EFBIG
    assert (planner.size, planner.buffered) == (0, 0)


def test_the_last_part_of_the_largest_file_is_number_10000() -> None:
    base = 8 * MiB
    planner = PartPlanner(base)
    # As if parts 1..9999 had been planned (copies hold no data, so nothing is allocated).
    planner.continue_after([Part(n, 0, copy_length=part_size_for(n, base))
                            for n in range(1, S3_MAX_PARTS)])
    assert planner.size == max_file_size(base) - MAX_PART
    assert write_all(planner, planner.size, b"abc") == []
    last = planner.finish()
    assert (last.number, last.data) == (S3_MAX_PARTS, b"abc")
    with pytest.raises(FileTooLarge):
        write_all(planner, max_file_size(base) - 2, b"abc")


# -------------------------------------------------------------------- the schedule


@pytest.mark.parametrize("base", BASES)
def test_the_schedule_doubles_every_64_parts_up_to_5_gib(base: int) -> None:
    assert TIER_PARTS == 64
    assert [part_size_for(n, base) for n in (1, 64)] == [base, base]
    assert part_size_for(65, base) == min(2 * base, MAX_PART)
    assert part_size_for(129, base) == min(4 * base, MAX_PART)
    for n in range(1, S3_MAX_PARTS + 1):
        assert part_size_for(n, base) == min(base * 2 ** ((n - 1) // 64), MAX_PART), n
    assert part_size_for(S3_MAX_PARTS, base) == MAX_PART


@pytest.mark.parametrize("base", BASES)
def test_every_scheduled_part_is_within_s3_limits(base: int) -> None:
    sizes = [part_size_for(n, base) for n in range(1, S3_MAX_PARTS + 1)]
    assert min(sizes) >= PART
    assert max(sizes) <= MAX_PART
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("number", [0, -1, S3_MAX_PARTS + 1, 20_000])
def test_part_numbers_outside_1_to_10000_raise(number: int) -> None:
    assert MAX_PARTS == S3_MAX_PARTS
    with pytest.raises(ValueError):
        part_size_for(number, 8 * MiB)


@pytest.mark.parametrize("base", BASES)
def test_the_largest_file_reaches_s3s_object_limit(base: int) -> None:
    size = max_file_size(base)
    assert size == sum(part_size_for(n, base) for n in range(1, S3_MAX_PARTS + 1))
    assert size >= S3_MAX_OBJECT_SIZE
    assert size <= S3_MAX_PARTS * MAX_PART


def test_8_mib_parts_hold_far_more_than_a_fixed_8_mib_part_size() -> None:
    fixed = S3_MAX_PARTS * 8 * MiB  # about 78 GiB
    assert max_file_size(8 * MiB) > fixed
    assert max_file_size(8 * MiB) > 78 * GiB
    assert max_file_size(8 * MiB) >= S3_MAX_OBJECT_SIZE


def test_the_planner_grows_its_parts_across_a_tier_boundary() -> None:
    base = 4
    planner = PartPlanner(base)
    data = SOURCE[:64 * 4 + 3 * 8 + 5]
    cut = write_all(planner, 0, data)
    last = planner.finish()
    assert [len(p) for p in cut] == [4] * 64 + [8] * 3
    assert (last.number, len(last)) == (68, 5)
    assert planner.current_part_size() == 8
    assert b"".join(p.data for p in [*cut, last]) == data


# -------------------------------------------------------------------- property tests


def check_parts(parts: list[Part], base: int, expected: bytes) -> None:
    """Parts are numbered 1.., contiguous, follow the schedule and rebuild the file."""
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    offset = 0
    for part in parts:
        assert part.offset == offset
        offset += len(part)
    for part in parts[:-1]:
        assert len(part) == part_size_for(part.number, base)
    last = parts[-1]
    assert len(last) <= part_size_for(last.number, base)
    assert len(last) > 0 or expected == b""
    assert b"".join(p.data for p in parts) == expected


@st.composite
def write_plans(draw: st.DrawFn, max_size: int, max_chunk: int) -> list[tuple[int, int]]:
    """(gap, length) pairs: each write starts `gap` bytes past the end (a hole if > 0)."""
    plan: list[tuple[int, int]] = []
    total = 0
    for _ in range(draw(st.integers(0, 12))):
        gap = draw(st.sampled_from([0, 0, 0, 1, draw(st.integers(0, max_chunk))]))
        length = draw(st.integers(0, max_chunk))
        if total + gap + length > max_size:
            break
        plan.append((gap, length))
        total += gap + length
    return plan


def run_plan(base: int, plan: list[tuple[int, int]]) -> tuple[list[Part], bytes]:
    planner = PartPlanner(base)
    expected = bytearray()
    parts: list[Part] = []
    for gap, length in plan:
        offset = len(expected) + gap
        data = SOURCE[offset:offset + length]
        parts += write_all(planner, offset, data)
        expected += bytes(gap) + data
    parts.append(planner.finish())
    assert planner.size == len(expected)
    return parts, bytes(expected)


@settings(max_examples=25, deadline=None)
@given(plan=write_plans(max_size=4 * PART, max_chunk=3 * MiB + 17))
def test_any_writes_at_5_mib_give_s3_valid_parts(plan: list[tuple[int, int]]) -> None:
    parts, expected = run_plan(PART, plan)
    check_parts(parts, PART, expected)
    assert all(len(p) >= PART for p in parts[:-1])  # S3's EntityTooSmall rule


@settings(max_examples=200, deadline=None)
@given(base=st.integers(1, 9), plan=write_plans(max_size=2000, max_chunk=97))
def test_any_writes_at_a_tiny_base_follow_the_schedule(
    base: int, plan: list[tuple[int, int]]
) -> None:
    # A tiny base crosses several 64-part tiers with a few kilobytes.
    parts, expected = run_plan(base, plan)
    check_parts(parts, base, expected)


# -------------------------------------------------------------------- copy_parts


@pytest.mark.parametrize(
    "size",
    [PART, PART + 1, 123 * MiB + 7, MAX_PART - 1, MAX_PART, MAX_PART + 1, 3 * MAX_PART - 1,
     10 * MAX_PART + 12345, S3_MAX_OBJECT_SIZE, S3_MAX_PARTS * MAX_PART],
)
def test_copy_parts_cover_the_object_with_s3_sized_parts(size: int) -> None:
    parts = copy_parts(size)
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert len(parts) == -(-size // MAX_PART)  # as few as possible
    assert len(parts) <= S3_MAX_PARTS
    offset = 0
    for part in parts:
        assert part.offset == offset
        assert part.data == b"" and len(part) == 0
        assert PART <= part.copy_length <= MAX_PART
        offset += part.copy_length
    assert offset == size
    lengths = [p.copy_length for p in parts]
    assert max(lengths) - min(lengths) <= 1  # near-equal


@settings(max_examples=200, deadline=None)
@given(size=st.integers(PART, S3_MAX_PARTS * MAX_PART))
def test_copy_parts_of_any_copyable_size(size: int) -> None:
    parts = copy_parts(size)
    assert sum(p.copy_length for p in parts) == size
    assert all(PART <= p.copy_length <= MAX_PART for p in parts)
    ends = list(itertools.accumulate(p.copy_length for p in parts))
    assert [p.offset for p in parts] == [0, *ends[:-1]]


# -------------------------------------------------------------------- continue_after, truncate


def test_continue_after_copies_numbers_new_parts_after_them() -> None:
    planner = PartPlanner(PART)
    copies = copy_parts(12 * MiB)
    planner.continue_after(copies)
    assert (planner.size, planner.next_number, planner.parts_cut) == (12 * MiB, 2, 1)
    with pytest.raises(InvalidWrite):
        write_all(planner, 0, b"x")  # inside the copied bytes
    cut = write_all(planner, 12 * MiB, SOURCE[:PART + 2])
    last = planner.finish()
    assert [(p.number, p.offset, len(p)) for p in [*cut, last]] == [
        (2, 12 * MiB, PART),
        (3, 12 * MiB + PART, 2),
    ]
    assert b"".join(p.data for p in [*cut, last]) == SOURCE[:PART + 2]


def test_continue_after_then_finish_without_new_bytes_gives_an_empty_last_part() -> None:
    planner = PartPlanner(PART)
    planner.continue_after(copy_parts(6 * MiB))
    assert planner.buffered == 0
    assert planner.finish() == Part(2, 6 * MiB, b"")


def test_truncate_to_zero_forgets_buffered_bytes() -> None:
    planner = PartPlanner(PART)
    write_all(planner, 0, b"old contents")
    planner.truncate_to_zero()
    assert (planner.size, planner.buffered) == (0, 0)
    write_all(planner, 0, b"new")
    assert planner.finish() == Part(1, 0, b"new")


def test_truncate_to_zero_is_refused_once_a_part_was_cut() -> None:
    planner = PartPlanner(PART)
    write_all(planner, 0, SOURCE[:PART + 1])
    with pytest.raises(InvalidWrite) as info:
        planner.truncate_to_zero()
    assert info.value.errno == errno.EINVAL
    assert planner.size == PART + 1


def test_truncate_to_zero_is_refused_after_continuing_from_copies() -> None:
    planner = PartPlanner(PART)
    planner.continue_after(copy_parts(PART))
    with pytest.raises(InvalidWrite):
        planner.truncate_to_zero()
