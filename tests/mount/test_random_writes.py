"""Writes at any offset, files changed in place, reads of what was written, fsync as a
durable point and several descriptors on one file (docs/SEMANTICS.md, "Random writes")."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from helpers import random_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from s3proxy import S3Proxy

KiB = 1024
MiB = 1024 * KiB


def body(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def pending(s3: Any, bucket: str) -> list[Any]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def pwrite_all(path: Path, writes: list[tuple[int, bytes]], flags: int) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        for offset, data in writes:
            assert os.pwrite(fd, data, offset) == len(data)
    finally:
        os.close(fd)


def test_dd_conv_notrunc_patches_an_existing_object(
    s3: Any, bucket: str, proxy: S3Proxy, mount: Any, tmp_path: Path
) -> None:
    original = random_bytes(20 * MiB, seed=1)
    s3.put_object(Bucket=bucket, Key="disk.img", Body=original)
    local = tmp_path / "disk.img"
    local.write_bytes(original)
    m = mount(bucket, f"endpoint_url={proxy.url}")
    patch = tmp_path / "patch"
    patch.write_bytes(random_bytes(4 * KiB, seed=2))
    proxy.clear()
    for offset in (0, 9 * MiB + 123, 20 * MiB - 4 * KiB):
        for target in (local, m.path / "disk.img"):
            result = subprocess.run(
                ["dd", f"if={patch}", f"of={target}", "bs=4096", "conv=notrunc",
                 "oflag=seek_bytes", f"seek={offset}"], capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
    assert body(s3, bucket, "disk.img") == local.read_bytes()
    assert (m.path / "disk.img").read_bytes() == local.read_bytes()
    # Three versions, each one part (8 MiB) uploaded and the rest copied server-side.
    sent = sum(r.body_size for r in proxy.of_kind("UploadPart"))
    copies = proxy.count("UploadPartCopy")
    assert sent <= 3 * 8 * MiB + 64 * KiB, sent
    assert copies >= 3
    assert pending(s3, bucket) == []


def test_write_into_the_part_being_filled_is_patched_in_memory(
    s3: Any, bucket: str, mount: Any
) -> None:
    m = mount(bucket, "cache_size=0")  # no spool: patched in the buffer
    pwrite_all(m.path / "f", [(0, b"0123456789"), (0, b"AB"), (5, b"xxxxxxxx")],
               os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert body(s3, bucket, "f") == b"AB234xxxxxxxx"


def test_write_into_a_part_already_uploaded_of_a_write_only_file_fails_cleanly(
    s3: Any, bucket: str, mount: Any
) -> None:
    """A file that streamed parts without ever going back keeps only its first part."""
    m = mount(bucket, "part_size=5M")
    data = random_bytes(16 * MiB, seed=3)
    fd = os.open(m.path / "stream", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, data) == len(data)
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"x", 6 * MiB)  # part 2: sent, its bytes not kept
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert body(s3, bucket, "stream") == data  # the refused write changed nothing
    assert "already uploaded" in m.log_text()


def test_write_only_header_written_last_sends_the_first_part_again(
    s3: Any, bucket: str, proxy: S3Proxy, mount: Any
) -> None:
    """ffmpeg's MP4 muxer opens its output write-only and fills in the header last."""
    m = mount(bucket, f"part_size=5M,endpoint_url={proxy.url}")
    media = random_bytes(17 * MiB, seed=5)
    proxy.clear()
    with open(m.path / "movie.mp4", "wb") as f:  # O_WRONLY
        f.write(b"\0" * 64)
        f.write(media)
        f.seek(8)
        f.write(b"HEAD" * 14)
        f.seek(0, os.SEEK_END)
        f.write(b"moov-at-the-end")
    assert body(s3, bucket, "movie.mp4") == bytes(8) + b"HEAD" * 14 + media + b"moov-at-the-end"
    # Streamed as it was written: four parts, then the first one again; nothing spooled.
    parts = [r.query.get("partNumber") for r in proxy.of_kind("UploadPart")]
    assert sorted(parts) == ["1", "1", "2", "3", "4"], parts
    assert pending(s3, bucket) == []


def test_write_only_blocks_written_backwards_match_a_local_file(
    s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    """s3fs-fuse's write_multiblock test: the block at 20 MiB first, then the one at
    10 MiB, through one write-only descriptor."""
    m = mount(bucket)
    blocks = [(20 * MiB + 1, random_bytes(10 * MiB, seed=30)),
              (10 * MiB, random_bytes(10 * MiB, seed=31))]
    for target in (tmp_path / "local", m.path / "backwards"):
        pwrite_all(target, blocks, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert body(s3, bucket, "backwards") == (tmp_path / "local").read_bytes()


def mux(target: Path, seconds: int, *options: str) -> None:
    """An MP4 of noisy test video (about 2.2 MiB a second), written by ffmpeg with
    bit-exact flags: the same bytes wherever it is written."""
    assert shutil.which("ffmpeg"), "ffmpeg is installed by scripts/test.sh"
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc=size=640x360:rate=25,noise=alls=60:allf=t+u", "-t", str(seconds),
         "-c:v", "mpeg4", "-q:v", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
         *options, "-y", str(target)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_ffmpeg_mp4_mux_onto_the_mount(s3: Any, bucket: str, mount: Any,
                                      tmp_path: Path) -> None:
    """ffmpeg's MP4 muxer, write-only, rewrites the mdat size at the start when it ends:
    byte for byte the file it writes on local disk."""
    m = mount(bucket, "part_size=5M")
    mux(tmp_path / "local.mp4", 6)
    mux(m.path / "movie.mp4", 6)
    expected = (tmp_path / "local.mp4").read_bytes()
    assert len(expected) > 2 * 5 * MiB  # several parts, the first one sent before the end
    assert body(s3, bucket, "movie.mp4") == expected
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                            "-of", "csv=p=0", str(m.path / "movie.mp4")],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and float(probe.stdout) == pytest.approx(6.0), probe


def test_ffmpeg_faststart_reads_back_what_it_wrote(s3: Any, bucket: str, mount: Any,
                                                  tmp_path: Path) -> None:
    """`-movflags +faststart` reopens its output for reading while its write-only
    descriptor is still open, and moves everything forward to put the header first."""
    m = mount(bucket, "part_size=5M")
    mux(tmp_path / "local.mp4", 5, "-movflags", "+faststart")
    mux(m.path / "fast.mp4", 5, "-movflags", "+faststart")
    assert body(s3, bucket, "fast.mp4") == (tmp_path / "local.mp4").read_bytes()
    assert pending(s3, bucket) == []


def test_a_reader_sees_a_streaming_file_as_written(
    s3: Any, bucket: str, proxy: S3Proxy, mount: Any
) -> None:
    """Bytes still at hand are read from memory; a read of bytes already sent stores
    what was written so far first (as fsync would), then the writer goes on."""
    m = mount(bucket, f"part_size=5M,endpoint_url={proxy.url}")
    data = random_bytes(12 * MiB, seed=7)
    path = m.path / "growing"
    proxy.clear()
    with open(path, "wb") as writer:
        writer.write(data)
        writer.flush()
        with open(path, "rb") as reader:
            reader.seek(11 * MiB)  # in the part being filled: no request
            assert reader.read(MiB) == data[11 * MiB:]
            assert proxy.count("CompleteMultipartUpload") == 0
            reader.seek(0)  # the first part, kept: no request either
            assert reader.read(4096) == data[:4096]
            assert proxy.count("CompleteMultipartUpload") == 0
            reader.seek(6 * MiB)  # sent for good: stored now, then read
            assert reader.read(MiB) == data[6 * MiB:7 * MiB]
            assert proxy.count("CompleteMultipartUpload") == 1
        writer.write(b"more")
    assert body(s3, bucket, "growing") == data + b"more"
    assert pending(s3, bucket) == []


def test_python_zipfile_written_write_only_fills_in_every_header(
    s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    """A zip writer given a write-only file seeks back to each entry's local header
    after its data; once a file has gone back, its later parts are kept in the spool."""
    m = mount(bucket, "part_size=5M")
    entries = {f"e{i}.bin": random_bytes(6 * MiB + i * 1000, seed=10 + i) for i in range(3)}

    def write_zip(path: Path) -> None:
        with open(path, "wb") as out, zipfile.ZipFile(out, "w") as archive:  # O_WRONLY
            for name, data in entries.items():
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                with archive.open(info, "w") as member:
                    member.write(data)

    write_zip(m.path / "a.zip")
    write_zip(tmp_path / "a.zip")
    assert body(s3, bucket, "a.zip") == (tmp_path / "a.zip").read_bytes()
    with zipfile.ZipFile(m.path / "a.zip") as archive:
        assert archive.testzip() is None
        assert {n: archive.read(n) for n in archive.namelist()} == entries


def test_writes_at_random_offsets_match_a_local_file(
    s3: Any, bucket: str, mount: Any
) -> None:
    m = mount(bucket, "part_size=5M")
    examples = iter(range(10**6))

    @settings(max_examples=12, deadline=None, derandomize=True)
    @given(writes=st.lists(st.tuples(st.integers(0, 13 * MiB), st.integers(1, 300 * KiB)),
                           min_size=1, max_size=10),
           base_size=st.sampled_from([0, 3 * MiB, 12 * MiB]),
           seed=st.integers(0, 2**16))
    def check(writes: list[tuple[int, int]], base_size: int, seed: int) -> None:
        name = f"r{next(examples)}"
        base = random_bytes(base_size, seed)
        expected = bytearray(base)
        if base_size:
            s3.put_object(Bucket=bucket, Key=name, Body=base)
        fd = os.open(m.path / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for i, (offset, length) in enumerate(writes):
                data = random_bytes(length, seed + i + 1)
                assert os.pwrite(fd, data, offset) == length
                if len(expected) < offset:
                    expected += bytes(offset - len(expected))
                expected[offset:offset + length] = data
                # Reads through the same descriptor see the writes.
                start = max(0, offset - 1000)
                got = os.pread(fd, length + 2000, start)
                assert got == bytes(expected[start:start + length + 2000])
        finally:
            os.close(fd)
        assert body(s3, bucket, name) == bytes(expected)
        assert (m.path / name).read_bytes() == bytes(expected)

    check()


def test_zip_onto_the_mount_and_unzip_test(
    s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(20):
        (tree / f"f{i}.txt").write_text(f"file {i}\n" * (i * 500 + 1))
    (tree / "sub" / "big.bin").write_bytes(random_bytes(12 * MiB, seed=4))
    m = mount(bucket)
    result = subprocess.run(["zip", "-qr", str(m.path / "out.zip"), "tree"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    result = subprocess.run(["unzip", "-t", str(m.path / "out.zip")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors detected" in result.stdout
    # (read through the mount: moto's copy of a multipart object, zip's rename, carries a
    # wrong full-object checksum that boto3 would refuse)
    assert s3.head_object(Bucket=bucket, Key="out.zip")["ContentLength"] > 12 * MiB
    with zipfile.ZipFile(m.path / "out.zip") as archive:
        assert archive.testzip() is None
        assert archive.read("tree/sub/big.bin") == (tree / "sub" / "big.bin").read_bytes()


def test_header_written_last_like_a_muxer(s3: Any, bucket: str, mount: Any) -> None:
    """An MP4/MKV muxer writes a placeholder header, the media, then seeks back."""
    m = mount(bucket, "part_size=5M")
    media = random_bytes(17 * MiB, seed=5)
    with open(m.path / "movie.mp4", "w+b") as f:
        f.write(b"\0" * 64)
        f.write(media)
        f.seek(0)
        f.write(b"HEAD" * 16)
        f.seek(0, os.SEEK_END)
        f.write(b"moov-at-the-end")
    assert body(s3, bucket, "movie.mp4") == b"HEAD" * 16 + media + b"moov-at-the-end"


def test_sqlite_database_on_the_mount(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    path = m.path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value BLOB)")
    for batch in range(10):
        with db:
            db.executemany("INSERT INTO t (name, value) VALUES (?, ?)",
                           [(f"row {batch * 1000 + i}", os.urandom(40)) for i in range(1000)])
    db.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (10_000,)
    db.close()
    stored = Path(m.path.parent / "app-copy.db")
    stored.write_bytes(body(s3, bucket, "app.db"))
    db = sqlite3.connect(stored)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM t").fetchone() == (10_000,)
    db.close()


def test_rsync_inplace_sends_only_the_changed_part(
    s3: Any, bucket: str, proxy: S3Proxy, mount: Any, tmp_path: Path
) -> None:
    size = 50 * MiB
    original = random_bytes(size, seed=6)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=original)
    changed = bytearray(original)
    changed[30 * MiB:30 * MiB + 1000] = os.urandom(1000)
    src = tmp_path / "big.bin"
    src.write_bytes(changed)
    m = mount(bucket, f"endpoint_url={proxy.url}")
    proxy.clear()
    result = subprocess.run(["rsync", "-I", "--inplace", "--no-whole-file", str(src),
                             str(m.path / "big.bin")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    stored = body(s3, bucket, "big.bin")
    if stored != changed:
        diffs = [i for i in range(0, size, 4096) if stored[i:i + 4096] != changed[i:i + 4096]]
        raise AssertionError(f"{len(stored)} bytes; blocks differing: {diffs[:5]} "
                             f"... {diffs[-5:]} ({len(diffs)}), same as original: "
                             f"{stored == original}")
    sent = sum(r.body_size for r in proxy.of_kind("UploadPart") + proxy.of_kind("PutObject")
               if r.key == "big.bin")
    print(f"rsync --inplace of a 50 MiB file with 1000 bytes changed: {sent} bytes sent")
    assert sent <= 2 * 8 * MiB, sent  # one part (two if the change straddles a boundary)
    assert proxy.count("UploadPartCopy") >= 2
    assert pending(s3, bucket) == []


def test_spool_full_fails_the_write_with_enospc(
    s3: Any, bucket: str, mount: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="obj", Body=b"a" * 100_000)
    m = mount(bucket, "cache_size=64K")
    fd = os.open(m.path / "obj", os.O_WRONLY)
    try:
        assert os.pwrite(fd, b"b" * 1000, 10) == 1000
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"c" * 100_000, 0)
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert body(s3, bucket, "obj") == b"a" * 10 + b"b" * 1000 + b"a" * (100_000 - 1010)
    assert "spool" in m.log_text() and "full" in m.log_text()


def test_fsync_publishes_what_was_written_and_writing_goes_on(
    s3: Any, bucket: str, mount: Any
) -> None:
    m = mount(bucket, "part_size=5M")
    first = random_bytes(6 * MiB, seed=7)
    fd = os.open(m.path / "log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, first)
        os.fsync(fd)
        assert body(s3, bucket, "log") == first  # durable before close
        os.write(fd, b"more")
        os.fsync(fd)
        assert body(s3, bucket, "log") == first + b"more"
        os.write(fd, b"tail")
    finally:
        os.close(fd)
    assert body(s3, bucket, "log") == first + b"moretail"
    assert pending(s3, bucket) == []


def test_two_writers_on_one_file_last_close_publishes_both(
    s3: Any, bucket: str, mount: Any
) -> None:
    m = mount(bucket)
    path = m.path / "shared"
    a = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    b = os.open(path, os.O_RDWR)
    try:
        os.pwrite(a, b"A" * 100, 0)
        os.pwrite(b, b"B" * 50, 100)
        os.pwrite(a, b"a" * 10, 120)
        assert os.pread(b, 200, 0) == b"A" * 100 + b"B" * 20 + b"a" * 10 + b"B" * 20
        os.close(a)
        a = -1
        os.pwrite(b, b"!", 0)
    finally:
        if a >= 0:
            os.close(a)
        os.close(b)
    assert body(s3, bucket, "shared") == b"!" + b"A" * 99 + b"B" * 20 + b"a" * 10 + b"B" * 20
    # A second process writing the same file through its own descriptor.
    fd = os.open(path, os.O_RDWR)
    try:
        script = (f"import os; f = os.open({str(path)!r}, os.O_RDWR); "
                  "os.pwrite(f, b'P', 5); os.close(f)")
        subprocess.run(["python3", "-c", script], check=True, timeout=60)
        os.pwrite(fd, b"Q", 6)
    finally:
        os.close(fd)
    assert body(s3, bucket, "shared")[:8] == b"!AAAAPQA"
