"""Objects s3mpfs did not write, in shapes it cannot show as they are (issue 18, items 6-9):
a symbolic link longer than PATH_MAX, a directory mode on an object with a body, a key of
exactly 1,024 bytes, keys no path can name. Planted with boto3; the mount must never read
more than it needs, never lose their bytes, and say in its log what it does not show."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import STORE_DEADLINE, wait_for

pytestmark = pytest.mark.mount

PATH_MAX = 4096
LINK = str(stat.S_IFLNK | 0o777)
DIRECTORY = str(stat.S_IFDIR | 0o755)


def body(s3: Any, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3: Any, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def lines(m: Any, *words: str) -> list[str]:
    return [line for line in m.log_text().splitlines() if all(w in line for w in words)]


def plant(s3: Any, bucket: str, key: str, data: bytes = b"theirs") -> str | None:
    """Put `key`; None if stored under that very key, else why the server would not."""
    shown = repr(key) if len(key) < 40 else f"of {len(key)} bytes"
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    except ClientError as exc:
        return f"the server refuses the key {shown}: {exc}"
    if key not in keys(s3, bucket):
        return f"the server stores the key {shown} under another key"
    return None


# -- item 6 ------------------------------------------------------------------------------


def test_a_symlink_longer_than_path_max_is_refused_without_reading_it(
    proxy: Any, s3: Any, bucket: str, mount: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="l/big", Body=b"t" * (1024 * 1024),
                  Metadata={"mode": LINK})
    longest = b"x/" * ((PATH_MAX - 1) // 2) + b"y"  # PATH_MAX - 1 bytes: the longest target
    s3.put_object(Bucket=bucket, Key="l/longest", Body=longest, Metadata={"mode": LINK})
    m = mount(bucket, f"endpoint_url={proxy.url}")
    listed = subprocess.run(["ls", "-la", m.path / "l"], capture_output=True, text=True,
                            timeout=30)
    assert "big" in listed.stdout, listed
    with pytest.raises(OSError) as refused:
        os.readlink(m.path / "l" / "big")
    assert refused.value.errno == errno.ENAMETOOLONG
    assert os.readlink(m.path / "l" / "longest") == longest.decode()
    assert stat.S_ISLNK(os.lstat(m.path / "l" / "big").st_mode)
    for get in proxy.of_kind("GetObject"):  # no more than PATH_MAX bytes asked for
        if not (get.key or "").startswith("l/"):
            continue
        first, _, last = get.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
        assert last and int(last) - int(first) < PATH_MAX, (get.key, get.headers.get("Range"))
    assert len(lines(m, "l/big", "PATH_MAX")) == 1, m.log_text()
    assert body(s3, bucket, "l/big") == b"t" * (1024 * 1024)


# -- item 7 ------------------------------------------------------------------------------


def test_a_directory_mode_on_a_file_key_with_a_body_is_a_file(
    s3: Any, bucket: str, mount: Any
) -> None:
    """`d` (no trailing slash) says directory but holds bytes: it is shown, read, moved
    and removed as the file it is; nothing is left behind or lost."""
    for key in ("rm-me", "mv-me"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"their bytes", Metadata={"mode": DIRECTORY})
    m = mount(bucket)
    st = os.stat(m.path / "rm-me")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
    assert (m.path / "rm-me").read_bytes() == b"their bytes"
    with pytest.raises(NotADirectoryError):
        os.rmdir(m.path / "rm-me")
    os.rename(m.path / "mv-me", m.path / "moved")
    assert body(s3, bucket, "moved") == b"their bytes"
    os.unlink(m.path / "rm-me")
    assert keys(s3, bucket) == {"moved"}
    assert lines(m, "rm-me", "directory"), m.log_text()


def test_a_directory_marker_with_a_body_is_not_deleted_by_rmdir(
    s3: Any, bucket: str, mount: Any
) -> None:
    """`dm/` holds bytes a directory cannot show: rmdir, and a rename onto it, refuse
    (ENOTEMPTY, a log line saying how to reach them); a rename of it moves them along."""
    for key in ("dm/", "mv/"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"their bytes", Metadata={"mode": DIRECTORY})
    m = mount(bucket)
    assert os.path.isdir(m.path / "dm") and os.listdir(m.path / "dm") == []
    with pytest.raises(OSError) as refused:
        os.rmdir(m.path / "dm")
    assert refused.value.errno == errno.ENOTEMPTY
    assert body(s3, bucket, "dm/") == b"their bytes"
    assert lines(m, "dm/", "11 bytes", "rmdir"), m.log_text()
    os.mkdir(m.path / "src")
    with pytest.raises(OSError) as refused:  # nor replaced by a directory renamed onto it
        os.rename(m.path / "src", m.path / "dm")
    assert refused.value.errno == errno.ENOTEMPTY
    os.rmdir(m.path / "src")
    assert body(s3, bucket, "dm/") == b"their bytes"
    os.rename(m.path / "mv", m.path / "moved")
    assert body(s3, bucket, "moved/") == b"their bytes"
    assert keys(s3, bucket) == {"dm/", "moved/"}


# -- item 8 ------------------------------------------------------------------------------


def test_a_key_of_exactly_1024_bytes_can_be_stat_read_and_removed(
    s3: Any, bucket: str, mount: Any
) -> None:
    parts = ["a" * 200] * 4
    key = "/".join(parts) + "/" + "b" * (1024 - 4 * 201)
    assert len(key) == 1024
    refused = plant(s3, bucket, key, b"long")
    if refused:
        pytest.skip(refused)
    m = mount(bucket)
    path = m.path.joinpath(*key.split("/"))
    assert os.stat(path).st_size == 4  # looked up by name: no listing of its directory
    assert path.read_bytes() == b"long"
    with pytest.raises(OSError) as too_long:  # its directory key would be 1,025 bytes
        os.mkdir(path.parent / ("c" * len(path.name)))
    assert too_long.value.errno == errno.ENAMETOOLONG
    result = subprocess.run(["rm", "-rf", m.path / parts[0]], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr + m.log_text()
    assert keys(s3, bucket) == set()


# -- item 9 ------------------------------------------------------------------------------

UNNAMABLE = ["h//b", "h/./b", "h/../b", "h/dot/.", "h/" + "n" * 256]


def test_keys_no_path_can_name_are_logged_and_kept(s3: Any, bucket: str, mount: Any) -> None:
    planted = {}
    for key in UNNAMABLE:
        refused = plant(s3, bucket, key)
        if refused is None:
            planted[key] = True
        else:
            print(refused)  # the rest is tested
    if not planted:
        pytest.skip("the server refuses every key shape no path can name")
    m = mount(bucket)
    assert os.listdir(m.path / "h") == (["dot"] if "h/dot/." in planted else [])
    os.listdir(m.path / "h")  # listed again: logged once per directory
    if "h/dot/." in planted:
        assert os.listdir(m.path / "h" / "dot") == []
    for key in planted:
        hidden = key if key == "h/" + "n" * 256 or key.endswith("/.") else \
            key[:key.index("/", 2) + 1]  # listed as a prefix: 'h//', 'h/./', 'h/../'
        assert len(lines(m, repr(hidden), "hidden")) == 1, (hidden, m.log_text())
    with pytest.raises(OSError) as refused:
        os.rmdir(m.path / "h")
    assert refused.value.errno == errno.ENOTEMPTY
    assert lines(m, "rmdir", "no path can name"), m.log_text()
    if "h/dot/." in planted:  # a directory whose only entry is unnamable: same answer
        with pytest.raises(OSError) as refused:
            os.rmdir(m.path / "h" / "dot")
        assert refused.value.errno == errno.ENOTEMPTY
    result = subprocess.run(["rm", "-rf", m.path / "h"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0 and "not empty" in result.stderr.lower(), result
    assert set(planted) <= keys(s3, bucket)  # nothing of theirs deleted


def test_a_file_beside_a_directory_of_the_same_name_is_logged(
    s3: Any, bucket: str, mount: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="x", Body=b"the file")
    s3.put_object(Bucket=bucket, Key="x/inside", Body=b"in the directory")
    for key in ("./x", "/lead"):
        refused = plant(s3, bucket, key)
        if refused:
            pytest.skip(refused)
    m = mount(bucket)
    assert sorted(os.listdir(m.path)) == ["x"]
    assert os.path.isdir(m.path / "x")
    for hidden in ("'x'", "'./'", "'/'"):
        assert len(lines(m, hidden, "hidden")) == 1, (hidden, m.log_text())
    os.unlink(m.path / "x" / "inside")
    os.rmdir(m.path / "x")  # the directory goes; the file it hid appears
    wait_for(lambda: os.path.isfile(m.path / "x"), message="the file x", timeout=STORE_DEADLINE)
    assert (m.path / "x").read_bytes() == b"the file"
