"""Unit tests of the object metadata codec (s3mpfs.s3.metadata): the headers s3fs and rclone
write are understood, anything missing or malformed falls back to the mount's defaults."""

from __future__ import annotations

import math
import stat
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3mpfs.s3.metadata import (
    Attributes,
    Defaults,
    decode,
    encode,
    encode_xattrs,
    format_mtime,
    parse_mtime,
    stored_type,
)

DEFAULTS = Defaults(uid=1500, gid=1600, file_mode=0o644, dir_mode=0o755)
LAST_MODIFIED = 1_600_000_000.0
NS = 10**9
LAST_MODIFIED_NS = 1_600_000_000 * NS


def decode_file(metadata: dict[str, str] | None) -> Attributes:
    return decode(metadata, directory=False, last_modified=LAST_MODIFIED, defaults=DEFAULTS)


def decode_dir(metadata: dict[str, str] | None) -> Attributes:
    return decode(metadata, directory=True, last_modified=LAST_MODIFIED, defaults=DEFAULTS)


# -------------------------------------------------------------------- decode


def test_s3fs_headers() -> None:
    attrs = decode_file({"mode": "33184", "uid": "1000", "gid": "100", "mtime": "1234567890"})
    assert attrs == Attributes(mode=0o100640, uid=1000, gid=100, mtime=1234567890 * NS)
    assert stat.S_ISREG(attrs.mode) and not attrs.is_dir


def test_header_names_are_case_insensitive() -> None:
    attrs = decode_file({"Mode": "33184", "UID": "7", "Gid": "8", "MTime": "5"})
    assert attrs == Attributes(0o100640, 7, 8, 5 * NS)


def test_rclone_mtime_only() -> None:
    attrs = decode_file({"mtime": "1234567890.123456789"})
    assert attrs.mtime == 1234567890_123456789
    assert (attrs.mode, attrs.uid, attrs.gid) == (stat.S_IFREG | 0o644, 1500, 1600)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2009-02-13T23:31:30Z", 1234567890_000000000),
        ("2009-02-13T23:31:30.5Z", 1234567890_500000000),
        ("2009-02-14T00:31:30.25+01:00", 1234567890_250000000),
        ("2009-02-13T23:31:30.123456789Z", 1234567890_123456000),  # (microseconds)
    ],
)
def test_rfc3339_mtime(text: str, ns: int) -> None:
    assert parse_mtime(text) == ns
    assert decode_file({"mtime": text}).mtime == ns


def test_no_headers_give_the_defaults_and_last_modified() -> None:
    for metadata in (None, {}, {"unrelated": "x"}):
        assert decode_file(metadata) == Attributes(stat.S_IFREG | 0o644, 1500, 1600,
                                                   LAST_MODIFIED_NS)
        assert decode_dir(metadata) == Attributes(stat.S_IFDIR | 0o755, 1500, 1600,
                                                  LAST_MODIFIED_NS)


@pytest.mark.parametrize("field", ["mode", "uid", "gid", "mtime"])
@pytest.mark.parametrize("value", ["", "abc", "12.5.1", "0x1A4", "1e", "--1"])
def test_a_malformed_value_falls_back_to_its_default(field: str, value: str) -> None:
    good = {"mode": "33184", "uid": "1000", "gid": "100", "mtime": "1234567890"}
    attrs = decode_file({**good, field: value})
    expected = Attributes(0o100640, 1000, 100, 1234567890 * NS)
    default = {"mode": stat.S_IFREG | 0o644, "uid": 1500, "gid": 1600,
               "mtime": LAST_MODIFIED_NS}
    expected = replace(expected, **{field: default[field]})
    if field == "mtime":  # atime and ctime, absent, follow mtime
        expected = replace(expected, atime=LAST_MODIFIED_NS, ctime=LAST_MODIFIED_NS)
    assert attrs == expected


@pytest.mark.parametrize("value", ["", "soon", "2009-13-45T99:00:00Z", "12:30"])
def test_parse_mtime_rejects_what_it_cannot_read(value: str) -> None:
    assert parse_mtime(value) is None


def test_parse_mtime_of_nothing() -> None:
    assert parse_mtime(None) is None


def test_a_mode_with_permission_bits_only_gets_the_file_type() -> None:
    assert decode_file({"mode": str(0o640)}).mode == stat.S_IFREG | 0o640
    assert decode_dir({"mode": str(0o750)}).mode == stat.S_IFDIR | 0o750
    assert decode_file({"mode": str(0o4755)}).mode == stat.S_IFREG | 0o4755


def test_a_directory_keeps_its_s3fs_mode() -> None:
    attrs = decode_dir({"mode": str(stat.S_IFDIR | 0o700), "uid": "0", "gid": "0"})
    assert attrs == Attributes(stat.S_IFDIR | 0o700, 0, 0, LAST_MODIFIED_NS)
    assert attrs.is_dir


def test_a_directory_marker_with_a_file_mode_is_still_a_directory() -> None:
    attrs = decode_dir({"mode": "33184"})  # 0o100640
    assert attrs.mode == stat.S_IFDIR | 0o640
    assert attrs.is_dir


def test_a_file_key_with_a_directory_mode_is_a_file() -> None:
    """The key's shape decides: an object without a trailing "/" has a body to show."""
    metadata = {"mode": str(stat.S_IFDIR | 0o750)}
    assert decode_file(metadata).mode == stat.S_IFREG | 0o750
    assert stored_type(metadata) == stat.S_IFDIR
    assert stored_type({"mode": "420"}) == 0 and stored_type(None) == 0


def test_a_symlink_mode_is_kept() -> None:
    attrs = decode_file({"mode": str(stat.S_IFLNK | 0o777)})
    assert attrs.is_symlink and not attrs.is_dir


def test_uid_and_gid_zero_are_not_mistaken_for_missing() -> None:
    attrs = decode_file({"uid": "0", "gid": "0", "mtime": "0"})
    assert (attrs.uid, attrs.gid, attrs.mtime) == (0, 0, 0)


# -------------------------------------------------------------------- encode


def test_encode_writes_s3fs_headers() -> None:
    meta = encode(Attributes(0o100640, 1000, 100, 1234567890_500000000, atime=7_250000000,
                             ctime=8 * NS))
    assert meta == {"mode": "33184", "uid": "1000", "gid": "100", "mtime": "1234567890.5",
                    "atime": "7.25", "ctime": "8"}


def test_atime_and_ctime_default_to_mtime() -> None:
    attrs = decode_file({"mtime": "5"})
    assert (attrs.atime, attrs.ctime) == (5 * NS, 5 * NS)


def test_special_files_keep_their_type_and_device() -> None:
    fifo = decode_file({"mode": str(stat.S_IFIFO | 0o600)})
    assert stat.S_ISFIFO(fifo.mode) and fifo.rdev == 0
    device = decode_file(encode(Attributes(stat.S_IFCHR | 0o600, 0, 0, NS, rdev=0x0501)))
    assert stat.S_ISCHR(device.mode) and device.rdev == 0x0501


def test_xattrs_use_s3fs_form() -> None:
    meta = encode(Attributes(0o100640, 1, 2, 3 * NS,
                             xattrs={"user.a": b"\x00bin", "user.b": b""}))
    # url-encoded JSON of name -> base64 value, as s3fs writes x-amz-meta-xattr
    assert meta["xattr"] == "%7B%22user.a%22%3A%22AGJpbg%3D%3D%22%2C%22user.b%22%3A%22%22%7D"
    assert decode_file(meta).xattrs == {"user.a": b"\x00bin", "user.b": b""}


@pytest.mark.parametrize("value", ["%7Bnot json", "%5B1%5D", "%7B%22a%22%3A%22%21%21%22%7D"])
def test_malformed_xattrs_count_as_none(value: str) -> None:
    assert decode_file({"xattr": value}).xattrs == {}


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (981158400 * NS, "981158400"),
        (0, "0"),
        (100 * NS, "100"),
        (NS // 2, "0.5"),
        (1234567890_250000000, "1234567890.25"),
        (1_000000001, "1.000000001"),
        (-1_500000000, "-1.5"),
        (-1, "-0.000000001"),
        (1900000000_123456789, "1900000000.123456789"),
    ],
)
def test_format_mtime_drops_trailing_zeros(ns: int, text: str) -> None:
    assert format_mtime(ns) == text
    assert parse_mtime(text) == ns


@pytest.mark.parametrize("directory", [False, True])
def test_encode_then_decode_round_trips_with_a_sub_second_mtime(directory: bool) -> None:
    kind = stat.S_IFDIR if directory else stat.S_IFREG
    attrs = Attributes(kind | 0o2750, 1234, 5678, 1700000000_123456789, atime=1_500000000,
                       ctime=-2_500000000, xattrs={"user.k": b"v"})
    decoded = decode(encode(attrs), directory=directory, last_modified=LAST_MODIFIED,
                     defaults=DEFAULTS)
    assert decoded == attrs


@given(
    mode=st.sampled_from([stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK]).flatmap(
        lambda kind: st.integers(0, 0o7777).map(lambda perms: kind | perms)),
    uid=st.integers(0, 2**32 - 2),
    gid=st.integers(0, 2**32 - 2),
    # st_mtime_ns is an int64: 1677 to 2262
    mtime=st.integers(-(2**63) + 1, 2**63 - 1),
)
def test_any_attributes_round_trip(mode: int, uid: int, gid: int, mtime: int) -> None:
    attrs = Attributes(mode, uid, gid, mtime)
    decoded = decode(encode(attrs), directory=stat.S_ISDIR(mode), last_modified=LAST_MODIFIED,
                     defaults=DEFAULTS)
    assert (decoded.mode, decoded.uid, decoded.gid, decoded.mtime) == (mode, uid, gid, mtime)


def test_equal_attributes_are_one_shared_object_that_cannot_change_in_place() -> None:
    meta = {"mode": "33188", "uid": "1", "gid": "2", "mtime": "1700000000"}
    first, second = decode_file(dict(meta)), decode_file(dict(meta))
    assert first is second  # a million equal entries hold one object
    assert decode_file({**meta, "mtime": "1700000001"}) is not first
    with_xattr = {**meta, "xattr": encode_xattrs({"user.a": b"1"})}
    assert decode_file(with_xattr) is not decode_file(with_xattr)  # (a dict of its own)
    with pytest.raises(AttributeError):  # (FrozenInstanceError)
        first.mode = 0  # type: ignore[misc]
    touched = first.touched(5 * NS, mtime=False)
    assert (touched.ctime, touched.mtime, first.ctime) == (5 * NS, first.mtime,
                                                           1700000000 * NS)


@given(whole=st.integers(-(2**34), 2**34), digits=st.text("0123456789", max_size=12))
def test_parse_mtime_reads_decimals_as_a_fraction_would(whole: int, digits: str) -> None:
    """The int fast path of the usual 'seconds.nanoseconds' form gives what Fraction
    parsing gives, rounded to the nanosecond (half up)."""
    text = f"{whole}.{digits}" if digits else str(whole)
    exact = Fraction(text) * NS
    expected = math.floor(exact + Fraction(1, 2))
    got = parse_mtime(text)
    if abs(expected) >= 2**63:  # past what nanoseconds in 64 bits hold
        assert got is None
        return
    assert got == expected
