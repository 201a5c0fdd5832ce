"""Object metadata codec: POSIX attributes <-> S3 user metadata.

Uses the headers s3fs writes and reads (`x-amz-meta-mode` as decimal st_mode,
`x-amz-meta-uid`, `x-amz-meta-gid`, `x-amz-meta-mtime` in seconds, fraction allowed);
rclone reads and writes the same `mtime` header. boto3 hands user metadata over
without the `x-amz-meta-` prefix, lowercased.
"""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass
from datetime import datetime

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to chown


@dataclass
class Attributes:
    mode: int  # full st_mode, file type bits included
    uid: int
    gid: int
    mtime: float  # seconds since the epoch

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


def parse_mtime(value: str | None) -> float | None:
    """Seconds (s3fs, rclone: '1234567890.123456789') or an RFC 3339 time."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and abs(seconds) * 1e9 < 2**63 else None
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
    elif directory and not stat.S_ISDIR(mode):
        mode = stat.S_IFDIR | stat.S_IMODE(mode)
    uid = _int(meta.get("uid"), MAX_ID)
    gid = _int(meta.get("gid"), MAX_ID)
    mtime = parse_mtime(meta.get("mtime"))
    return Attributes(
        mode=mode,
        uid=defaults.uid if uid is None else uid,
        gid=defaults.gid if gid is None else gid,
        mtime=last_modified if mtime is None else mtime,
    )


def encode(attrs: Attributes, *, with_mtime: bool = True) -> dict[str, str]:
    """The user metadata to store for these attributes."""
    meta = {"mode": str(attrs.mode), "uid": str(attrs.uid), "gid": str(attrs.gid)}
    if with_mtime:
        meta["mtime"] = format_mtime(attrs.mtime)
    return meta


def format_mtime(mtime: float) -> str:
    """Seconds with up to nanosecond fraction, trailing zeros dropped ('981158400')."""
    text = f"{mtime:.9f}".rstrip("0").rstrip(".")
    return text or "0"
