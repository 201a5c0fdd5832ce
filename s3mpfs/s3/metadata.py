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
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from urllib.parse import quote, unquote

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to chown
MAX_METADATA = 2048  # bytes of user metadata S3 stores per object (keys and values)
OWNED = ("mode", "uid", "gid", "mtime", "atime", "ctime", "rdev", "xattr")  # ours


# Empty extended attributes, shared by every Attributes that has none (a million entries
# would hold a million empty dicts): never changed in place, `copy()` first.
NO_XATTRS: dict[str, bytes] = {}
NS = 10**9  # nanoseconds in a second
AS_MTIME = -(2**63)  # an atime or ctime not given: the mtime (no time stat can show)


@dataclass(slots=True, frozen=True)
class Attributes:
    """Never changed in place (`dataclasses.replace` makes changed ones): `decode` hands
    the same object to every entry whose attributes are equal (see `_SHARED`)."""

    mode: int  # full st_mode, file type bits included
    uid: int
    gid: int
    # Nanoseconds since the epoch, exact (rsync and cp -p compare st_mtim to the
    # nanosecond): what stat shows, what utimensat set, what is stored. An int, not a
    # float (which cannot hold them) or a Fraction (three objects for every entry).
    mtime: int
    atime: int = AS_MTIME
    ctime: int = AS_MTIME
    rdev: int = 0
    xattrs: dict[str, bytes] = field(default_factory=lambda: NO_XATTRS)

    def __post_init__(self) -> None:
        if self.atime == AS_MTIME:
            object.__setattr__(self, "atime", self.mtime)
        if self.ctime == AS_MTIME:
            object.__setattr__(self, "ctime", self.mtime)

    def copy(self) -> Attributes:
        return replace(self, xattrs=dict(self.xattrs))

    def touched(self, now: int, *, mtime: bool = True) -> Attributes:
        """These attributes with ctime (and mtime, unless not `mtime`) `now` (ns)."""
        # (built directly: dataclasses.replace costs 10 µs, paid by every file written)
        return Attributes(self.mode, self.uid, self.gid, now if mtime else self.mtime,
                          self.atime, now, self.rdev, self.xattrs)

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
    """Seconds (a LastModified, a header's Fraction) in whole nanoseconds, rounded."""
    numerator, denominator = seconds.as_integer_ratio()  # exact, for floats too
    return (2 * numerator * 10**9 + denominator) // (2 * denominator)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DECIMAL = re.compile(r"-?[0-9]+(?:\.([0-9]+))?")


def parse_mtime(value: str | None) -> int | None:
    """Nanoseconds from a time header: seconds (s3fs, rclone: '1234567890.123456789',
    read exactly) or an RFC 3339 time; None if it is neither, or out of stat's range."""
    if not value:
        return None
    decimal = _DECIMAL.fullmatch(value)
    if decimal is not None:  # the usual form, read with ints (a Fraction costs 10x more)
        digits = len(decimal[1] or "")
        numerator = int(value.replace(".", "", 1))
        ns = (numerator * 10 ** (9 - digits) if digits <= 9
              else nanoseconds(Fraction(numerator, 10**digits)))
    else:
        try:
            ns = nanoseconds(Fraction(value))
        except ValueError:
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            # exact: microseconds, counted from the epoch (naive: local time)
            ns = (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1) * 1000
    return ns if abs(ns) < 2**63 else None


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
    mtime = nanoseconds(last_modified) if mtime is None else mtime
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
    return shared_attributes(mode, uid, gid, mtime, atime, ctime, rdev)


def shared_attributes(mode: int, uid: int, gid: int, mtime: int, atime: int, ctime: int,
                      rdev: int) -> Attributes:
    """Attributes without extended attributes: the object equal ones decoded lately got."""
    mode = _MODES.setdefault(mode, mode)
    key = (mode, uid, gid, mtime, atime, ctime, rdev)
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
# one object and its times. The oldest go beyond SHARED_KEPT.
SHARED_KEPT = 4096
_SHARED: dict[tuple[Any, ...], Attributes] = {}


def stored_type(metadata: dict[str, str] | None) -> int:
    """The file type bits of the stored mode (0: none, or no mode)."""
    if not metadata:
        return 0
    value = metadata.get("mode")  # S3 gives metadata names in lower case
    if value is None:
        value = next((v for k, v in metadata.items() if k.lower() == "mode"), None)
    return stat.S_IFMT(_int(value, 0o177777) or 0)


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


def format_mtime(ns: int) -> str:
    """Nanoseconds as seconds with up to nine decimals, trailing zeros dropped
    ('981158400', '981158400.5')."""
    whole, fraction = divmod(abs(ns), NS)
    text = f"{'-' if ns < 0 else ''}{whole}.{fraction:09d}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"
