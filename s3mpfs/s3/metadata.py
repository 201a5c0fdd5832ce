"""Object metadata codec: POSIX attributes <-> S3 user metadata.

Uses the headers s3fs writes and reads: `x-amz-meta-mode` (decimal st_mode, file type
included: FIFOs, sockets and devices are zero-byte objects with their type here),
`-uid`, `-gid`, `-mtime`, `-atime`, `-ctime` (seconds, fraction allowed), `-rdev`
(device number) and `-xattr` (extended attributes: url-encoded JSON of name ->
base64 value). rclone reads and writes the same `mtime` header. boto3 hands user
metadata over without the `x-amz-meta-` prefix, lowercased.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import stat
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from typing import Any
from urllib.parse import quote, unquote

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to chown
MAX_METADATA = 2048  # bytes of user metadata S3 stores per object (keys and values)
OWNED = ("mode", "uid", "gid", "mtime", "atime", "ctime", "rdev", "xattr")  # ours


# Empty extended attributes, shared by every Attributes that has none (a million entries
# would hold a million empty dicts): never changed in place, `copy()` first.
NO_XATTRS: dict[str, bytes] = {}


@dataclass(slots=True, frozen=True)
class Attributes:
    """Never changed in place (`dataclasses.replace` makes changed ones): `decode` hands
    the same object to every entry whose attributes are equal (see `_SHARED`)."""

    mode: int  # full st_mode, file type bits included
    uid: int
    gid: int
    # Seconds since the epoch: a float (time.time()), or a Fraction holding the exact
    # nanoseconds utimensat set or a header stored (a float cannot: rsync and cp -p compare
    # st_mtim to the nanosecond). See `nanoseconds`.
    mtime: float | Fraction
    atime: float | Fraction = -1.0  # -1: as mtime
    ctime: float | Fraction = -1.0  # -1: as mtime
    rdev: int = 0
    xattrs: dict[str, bytes] = field(default_factory=lambda: NO_XATTRS)

    def __post_init__(self) -> None:
        if self.atime < 0:
            object.__setattr__(self, "atime", self.mtime)
        if self.ctime < 0:
            object.__setattr__(self, "ctime", self.mtime)

    def copy(self) -> Attributes:
        return replace(self, xattrs=dict(self.xattrs))

    def touched(self, now: float, *, mtime: bool = True) -> Attributes:
        """These attributes with ctime (and mtime, unless not `mtime`) `now`."""
        return replace(self, ctime=now, mtime=now if mtime else self.mtime)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


@dataclass(frozen=True)
class Defaults:
    uid: int
    gid: int
    file_mode: int  # permission bits only
    dir_mode: int


def _int(value: str | None, high: int) -> int | None:
    """A whole number in 0..high, else None (malformed headers fall back to defaults)."""
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and 0 <= number <= high else None


def nanoseconds(seconds: float | Fraction) -> int:
    """A time in whole nanoseconds: what stat shows and what is stored, the same number.
    (Cheap: it runs for every entry stat and readdir return.)"""
    numerator, denominator = seconds.as_integer_ratio()  # exact, for floats too
    return (2 * numerator * 10**9 + denominator) // (2 * denominator)


_DECIMAL = re.compile(r"-?[0-9]+(?:\.([0-9]+))?")


def parse_mtime(value: str | None) -> float | Fraction | None:
    """Seconds (s3fs, rclone: '1234567890.123456789', read exactly) or an RFC 3339 time.
    A float when it holds the value exactly (whole seconds, most often): a third of the
    memory of a Fraction, for every cached entry."""
    if not value:
        return None
    decimal = _DECIMAL.fullmatch(value)
    if decimal is not None:  # the usual form, read with ints (a Fraction costs 10x more)
        numerator, denominator = int(value.replace(".", "", 1)), 10 ** len(decimal[1] or "")
        if abs(numerator) * 10**9 >= 2**63 * denominator:
            return None
        exact = numerator / denominator  # correctly rounded
        p, q = exact.as_integer_ratio()
        return exact if p * denominator == numerator * q else Fraction(numerator, denominator)
    try:
        seconds = Fraction(value)
    except ValueError:
        pass
    else:
        if abs(seconds) * 10**9 >= 2**63:
            return None
        exact = float(seconds)
        return exact if exact == seconds else seconds
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def decode(metadata: dict[str, str] | None, *, directory: bool, last_modified: float,
           defaults: Defaults) -> Attributes:
    """Attributes of an object; missing or malformed headers fall back to defaults."""
    meta = {k.lower(): v for k, v in (metadata or {}).items()}
    file_type = stat.S_IFDIR if directory else stat.S_IFREG
    mode = _int(meta.get("mode"), 0o177777)
    if mode is None:
        mode = file_type | (defaults.dir_mode if directory else defaults.file_mode)
    elif stat.S_IFMT(mode) == 0:  # permission bits only: add the type
        mode |= file_type
    elif directory != stat.S_ISDIR(mode):  # the key's shape decides: "dir/" or "file"
        mode = file_type | stat.S_IMODE(mode)
    uid = _int(meta.get("uid"), MAX_ID)
    gid = _int(meta.get("gid"), MAX_ID)
    mtime = parse_mtime(meta.get("mtime"))
    mtime = last_modified if mtime is None else mtime
    atime, ctime = parse_mtime(meta.get("atime")), parse_mtime(meta.get("ctime"))
    atime = mtime if atime is None or atime == mtime else atime  # one object for equal
    ctime = mtime if ctime is None or ctime == mtime else ctime  # times (memory)
    uid = defaults.uid if uid is None else uid
    gid = defaults.gid if gid is None else gid
    rdev = _int(meta.get("rdev"), 2**64 - 1) or 0
    xattrs = decode_xattrs(meta.get("xattr"))
    mode = _MODES.setdefault(mode, mode)
    if xattrs:
        return Attributes(mode, uid, gid, mtime, atime, ctime, rdev, xattrs)
    key = (mode, uid, gid, _hashed(mtime), _hashed(atime), _hashed(ctime), rdev)
    shared = _SHARED.get(key)
    if shared is None:
        shared = Attributes(mode, uid, gid, mtime, atime, ctime, rdev)
        if len(_SHARED) >= SHARED_KEPT:
            del _SHARED[next(iter(_SHARED))]
        _SHARED[key] = shared
    return shared


# Each distinct st_mode once: every cached entry shares its int object.
_MODES: dict[int, int] = {}
# Attributes decoded lately, by value: entries whose attributes are equal (files of one
# upload, one tar extraction, objects without metadata listed in the same second) share
# one object and its times. (Equal times compare equal whether float or Fraction, and
# show the same nanoseconds.) The oldest go beyond SHARED_KEPT.
SHARED_KEPT = 4096
_SHARED: dict[tuple[Any, ...], Attributes] = {}


def _hashed(seconds: float | Fraction) -> float | tuple[int, int]:
    """A time as a key of _SHARED: a Fraction's hash costs a modular inverse, its
    (normalised) numerator and denominator hash as two ints."""
    return seconds if type(seconds) is float else (seconds.numerator, seconds.denominator)


def stored_type(metadata: dict[str, str] | None) -> int:
    """The file type bits of the stored mode (0: none, or no mode)."""
    meta = {k.lower(): v for k, v in (metadata or {}).items()}
    return stat.S_IFMT(_int(meta.get("mode"), 0o177777) or 0)


def encode(attrs: Attributes) -> dict[str, str]:
    """The user metadata to store for these attributes."""
    meta = {"mode": str(attrs.mode), "uid": str(attrs.uid), "gid": str(attrs.gid),
            "mtime": format_mtime(attrs.mtime), "atime": format_mtime(attrs.atime),
            "ctime": format_mtime(attrs.ctime)}
    if attrs.rdev:
        meta["rdev"] = str(attrs.rdev)
    if attrs.xattrs:
        meta["xattr"] = encode_xattrs(attrs.xattrs)
    return meta


def metadata_size(meta: dict[str, str]) -> int:
    """What S3 counts against MAX_METADATA: the UTF-8 bytes of every key and value."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())


def encode_xattrs(xattrs: dict[str, bytes]) -> str:
    """s3fs's form: url-encoded JSON of name -> base64 value."""
    document = {name: base64.b64encode(value).decode() for name, value in xattrs.items()}
    return quote(json.dumps(document, separators=(",", ":")), safe="")


def decode_xattrs(value: str | None) -> dict[str, bytes]:
    """Extended attributes from s3fs's header; a malformed one counts as none."""
    if not value:
        return NO_XATTRS
    try:
        document = json.loads(unquote(value))
        return {str(name): base64.b64decode(data, validate=True)
                for name, data in document.items()} or NO_XATTRS
    except (ValueError, AttributeError, TypeError, binascii.Error):
        return NO_XATTRS


def format_mtime(mtime: float | Fraction) -> str:
    """Seconds with up to nanosecond fraction, trailing zeros dropped ('981158400')."""
    ns = nanoseconds(mtime)
    whole, fraction = divmod(abs(ns), 10**9)
    text = f"{'-' if ns < 0 else ''}{whole}.{fraction:09d}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"
