"""Integration tests of the namespace: directories, listings, stat, reads, prefixes, and
the POSIX operations S3 cannot do, through real mounts against moto."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import drop_kernel_caches, list_keys, random_file, wait_for

pytestmark = pytest.mark.mount

MiB = 1024 * 1024


def visible(keys: list[str]) -> list[str]:
    """Keys the tests created (s3mpfs's own bookkeeping under .s3mpfs/ left out)."""
    return [k for k in keys if not k.startswith(".s3mpfs/") and "/.s3mpfs/" not in k]


# --------------------------------------------------------------------- directories


def test_mkdir_creates_a_marker_object(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    os.mkdir(m.path / "dir")
    head = s3.head_object(Bucket=bucket, Key="dir/")
    assert head["ContentLength"] == 0
    assert visible(list_keys(s3, bucket)) == ["dir/"]
    assert (m.path / "dir").is_dir()
    assert os.listdir(m.path) == ["dir"]


def test_mkdir_p_creates_every_level(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    subprocess.run(["mkdir", "-p", str(m.path / "a/b/c")], check=True, timeout=30)
    assert visible(list_keys(s3, bucket)) == ["a/", "a/b/", "a/b/c/"]
    assert (m.path / "a/b/c").is_dir()
    # Again: every level exists now, so nothing changes and nothing fails.
    subprocess.run(["mkdir", "-p", str(m.path / "a/b/c")], check=True, timeout=30)
    assert visible(list_keys(s3, bucket)) == ["a/", "a/b/", "a/b/c/"]


def test_mkdir_of_an_existing_name_fails(bucket: str, mount: Any) -> None:
    m = mount(bucket)
    os.mkdir(m.path / "d")
    with pytest.raises(FileExistsError):
        os.mkdir(m.path / "d")


def test_rmdir_of_an_empty_directory_removes_its_marker(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    os.mkdir(m.path / "gone")
    assert "gone/" in list_keys(s3, bucket)
    os.rmdir(m.path / "gone")
    assert "gone/" not in list_keys(s3, bucket)
    assert not (m.path / "gone").exists()
    assert "gone" not in os.listdir(m.path)


def test_rmdir_of_a_non_empty_directory_fails(s3: Any, bucket: str, mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="full/", Body=b"")
    s3.put_object(Bucket=bucket, Key="full/file", Body=b"x")
    s3.put_object(Bucket=bucket, Key="implicit/child", Body=b"y")  # no marker
    m = mount(bucket)
    for name in ("full", "implicit"):
        with pytest.raises(OSError) as info:
            os.rmdir(m.path / name)
        assert info.value.errno == errno.ENOTEMPTY, name
    assert list_keys(s3, bucket) == ["full/", "full/file", "implicit/child"]
    # A directory made through the mount and holding a file written through it, too.
    os.mkdir(m.path / "made")
    (m.path / "made/f").write_bytes(b"z")
    with pytest.raises(OSError) as info:
        os.rmdir(m.path / "made")
    assert info.value.errno == errno.ENOTEMPTY
    assert {"made/", "made/f"} <= set(list_keys(s3, bucket))


def test_rm_deletes_the_object(s3: Any, bucket: str, mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="doomed", Body=b"bye")
    s3.put_object(Bucket=bucket, Key="dir/doomed2", Body=b"bye")
    s3.put_object(Bucket=bucket, Key="keep", Body=b"stay")
    m = mount(bucket)
    subprocess.run(
        ["rm", str(m.path / "doomed"), str(m.path / "dir/doomed2")], check=True, timeout=30
    )
    assert list_keys(s3, bucket) == ["keep"]
    assert os.listdir(m.path) == ["keep"]
    assert not (m.path / "doomed").exists()
    with pytest.raises(FileNotFoundError):
        os.unlink(m.path / "doomed")


# --------------------------------------------------------------------- listings and stat


def test_listing_shows_objects_put_directly(s3: Any, bucket: str, mount: Any) -> None:
    for key, body in {
        "top.txt": b"top",
        "marked/": b"",
        "marked/inner.txt": b"inner",
        "implicit/deeper/leaf.bin": b"leaf",  # "implicit" and "deeper": prefixes only
        "implicit/file": b"f",
    }.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    m = mount(bucket)

    assert sorted(os.listdir(m.path)) == ["implicit", "marked", "top.txt"]
    assert sorted(os.listdir(m.path / "marked")) == ["inner.txt"]
    assert sorted(os.listdir(m.path / "implicit")) == ["deeper", "file"]
    assert os.listdir(m.path / "implicit/deeper") == ["leaf.bin"]
    assert (m.path / "implicit").is_dir() and (m.path / "implicit/deeper").is_dir()
    assert (m.path / "marked").is_dir()
    assert (m.path / "top.txt").is_file()
    assert (m.path / "implicit/deeper/leaf.bin").read_bytes() == b"leaf"
    ls = subprocess.run(
        ["ls", "-l", str(m.path / "implicit")], capture_output=True, text=True, timeout=30
    )
    assert ls.returncode == 0, ls.stderr
    kinds = {line.split()[-1]: line[0] for line in ls.stdout.splitlines()[1:]}
    assert kinds == {"deeper": "d", "file": "-"}, ls.stdout
    with pytest.raises(FileNotFoundError):
        os.stat(m.path / "nothing-here")
    # An object put while mounted shows up once the (short-lived) caches expire.
    s3.put_object(Bucket=bucket, Key="implicit/late.txt", Body=b"late")
    wait_for(
        lambda: "late.txt" in os.listdir(m.path / "implicit"),
        timeout=15,
        message="late.txt in the listing",
    )
    assert (m.path / "implicit/late.txt").read_bytes() == b"late"


def test_stat_matches_the_listing(s3: Any, bucket: str, mount: Any) -> None:
    sizes = {"zero": 0, "one": 1, "kib": 1024, "odd": 123_457, "sub/nested": 77}
    for key, size in sizes.items():
        s3.put_object(Bucket=bucket, Key=key, Body=b"s" * size)
    listed = {o["Key"]: o for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    m = mount(bucket)
    for key, size in sizes.items():
        st = os.stat(m.path / key)
        assert st.st_size == size == listed[key]["Size"], key
        last_modified = listed[key]["LastModified"].timestamp()
        assert abs(st.st_mtime - last_modified) <= 1.0, (key, st.st_mtime, last_modified)
        assert st.st_mode & 0o170000 == 0o100000  # a regular file
    # ls -l agrees with stat.
    ls = subprocess.run(["ls", "-l", str(m.path)], capture_output=True, text=True, timeout=30)
    assert ls.returncode == 0, ls.stderr
    for line in ls.stdout.splitlines()[1:]:
        fields = line.split()
        if fields[-1] in sizes:
            assert int(fields[4]) == sizes[fields[-1]], line


def test_read_back_a_large_object_put_directly(
    s3: Any, bucket: str, mount: Any, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "src.bin", 30 * MiB + 17, seed=303)
    s3.upload_file(str(src), bucket, "data/big.bin")
    m = mount(bucket)
    assert os.stat(m.path / "data/big.bin").st_size == src.stat().st_size
    result = subprocess.run(
        ["cmp", str(src), str(m.path / "data/big.bin")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Random access: reads in the middle and at the end.
    with open(m.path / "data/big.bin", "rb") as f, open(src, "rb") as ref:
        for offset in (12 * MiB + 5, 1, 30 * MiB + 10, 8 * MiB - 3):
            f.seek(offset)
            ref.seek(offset)
            assert f.read(100_000) == ref.read(100_000), offset


def test_a_file_being_written_is_listed_with_its_size_so_far(
    s3: Any, bucket: str, mount: Any
) -> None:
    m = mount(bucket)
    path = m.path / "growing.bin"
    with open(path, "wb") as f:
        block = b"g" * MiB
        for _ in range(12):
            f.write(block)
        f.flush()  # out of Python's buffer, into the mount
        assert "growing.bin" in os.listdir(m.path)
        wait_for(
            lambda: os.stat(path).st_size >= 12 * MiB,
            timeout=30,
            message="stat showing the 12 MiB written so far",
        )
        # S3 does not hold it yet: the object appears at close().
        assert "growing.bin" not in list_keys(s3, bucket)
    assert s3.head_object(Bucket=bucket, Key="growing.bin")["ContentLength"] == 12 * MiB
    wait_for(lambda: os.stat(path).st_size == 12 * MiB, timeout=30, message="final size")


# --------------------------------------------------------------------- prefixes, tools


def test_prefix_mount_shows_and_writes_only_under_the_prefix(
    s3: Any, bucket: str, mount: Any
) -> None:
    for key in ("outside.txt", "other/x", "pfx/a.txt", "pfx/sub/b.txt", "pfxsibling/c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    m = mount(f"{bucket}:pfx")
    assert sorted(os.listdir(m.path)) == ["a.txt", "sub"]
    assert (m.path / "a.txt").read_bytes() == b"pfx/a.txt"
    assert (m.path / "sub/b.txt").read_bytes() == b"pfx/sub/b.txt"
    assert not (m.path / "outside.txt").exists()

    (m.path / "new.txt").write_bytes(b"new")
    os.mkdir(m.path / "d")
    (m.path / "d/deep.txt").write_bytes(b"deep")
    os.unlink(m.path / "a.txt")

    assert visible(list_keys(s3, bucket)) == [
        "other/x",
        "outside.txt",
        "pfx/d/",
        "pfx/d/deep.txt",
        "pfx/new.txt",
        "pfx/sub/b.txt",
        "pfxsibling/c",
    ]
    assert s3.get_object(Bucket=bucket, Key="pfx/new.txt")["Body"].read() == b"new"
    assert sorted(os.listdir(m.path)) == ["d", "new.txt", "sub"]


def test_find_lists_the_whole_tree(s3: Any, bucket: str, mount: Any) -> None:
    for key in ("a/1", "a/b/2", "a/b/c/3", "x/", "x/4", "5"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"f" if not key.endswith("/") else b"")
    m = mount(bucket)
    os.mkdir(m.path / "empty")
    (m.path / "a/b/written").write_bytes(b"w")
    result = subprocess.run(["find", str(m.path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = sorted(os.path.relpath(p, m.path) for p in result.stdout.splitlines())
    assert found == sorted(
        [
            ".",
            "5",
            "a",
            "a/1",
            "a/b",
            "a/b/2",
            "a/b/c",
            "a/b/c/3",
            "a/b/written",
            "empty",
            "x",
            "x/4",
        ]
    )
    files = subprocess.run(
        ["find", str(m.path), "-type", "f"], capture_output=True, text=True, timeout=60
    )
    assert sorted(os.path.relpath(p, m.path) for p in files.stdout.splitlines()) == [
        "5",
        "a/1",
        "a/b/2",
        "a/b/c/3",
        "a/b/written",
        "x/4",
    ]


def test_df_works_on_the_mount(bucket: str, mount: Any) -> None:
    m = mount(bucket)
    result = subprocess.run(["df", "-P", str(m.path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split()[-1] == str(m.path)
    st = os.statvfs(m.path)
    assert st.f_bavail > 0 and st.f_bsize > 0
    assert st.f_namemax == 255


# --------------------------------------------------------------------- what S3 cannot do


def test_names_longer_than_255_bytes_are_refused(s3: Any, bucket: str, mount: Any) -> None:
    m = mount(bucket)
    longest = "n" * 255
    (m.path / longest).write_bytes(b"ok")
    assert s3.get_object(Bucket=bucket, Key=longest)["Body"].read() == b"ok"
    too_long = "n" * 256
    with pytest.raises(OSError) as info:
        (m.path / too_long).write_bytes(b"no")
    assert info.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as info:
        os.mkdir(m.path / ("é" * 128))  # 256 bytes in UTF-8, 128 characters
    assert info.value.errno == errno.ENAMETOOLONG
    assert visible(list_keys(s3, bucket)) == [longest]


def test_hard_links_are_refused(s3: Any, bucket: str, mount: Any) -> None:
    s3.put_object(Bucket=bucket, Key="orig", Body=b"data")
    m = mount(bucket)
    with pytest.raises(OSError) as info:
        os.link(m.path / "orig", m.path / "alias")
    assert info.value.errno in (errno.EOPNOTSUPP, errno.EPERM)
    result = subprocess.run(
        ["ln", str(m.path / "orig"), str(m.path / "alias2")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert list_keys(s3, bucket) == ["orig"]
    assert sorted(os.listdir(m.path)) == ["orig"]


def test_a_listed_name_whose_inode_the_kernel_forgot_is_found(
    s3: Any, bucket: str, mount: Any
) -> None:
    """The kernel forgets inodes it no longer caches (memory pressure; here drop_caches):
    a later lookup of such a name, still in the mount's listing of its directory, finds
    it again (`git add` after `cp -r` failed with "unable to stat" otherwise)."""
    m = mount(bucket)
    tree = m.path / "tree"
    tree.mkdir()  # a directory this mount created: its listing is the mount's own record
    for i in range(50):
        (tree / f"f{i:02d}").write_bytes(b"x" * i)
    sorted(os.listdir(tree))
    subprocess.run(["sync"], check=True)
    drop_kernel_caches()
    assert [(tree / f"f{i:02d}").stat().st_size for i in range(50)] == list(range(50))
