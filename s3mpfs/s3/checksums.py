"""Checksum values as S3 spells them: the base64 of the big-endian CRC, or of the digest.

The CRCs are awscrt's, in C and hardware-assisted (CRC32C is the SSE4.2 instruction:
0.06 CPU-s per GiB, against 0.4 for zlib's CRC32); without awscrt, CRC32 falls back to
zlib and the others are not at hand. Each releases the GIL on large buffers. Used to
send a checksum (s3/integrity.py) and to check one an answer carries (s3/ranged.py).
"""

from __future__ import annotations

import base64
import hashlib
import zlib

try:
    from awscrt import checksums as _crt
except ImportError:  # pragma: no cover - awscrt is a dependency
    _crt = None  # type: ignore[assignment]

_CRC_WIDTHS = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8}


def value(algorithm: str, data: bytes | bytearray | memoryview) -> str | None:
    """S3's checksum of `data` for `algorithm` (CRC32, CRC32C, CRC64NVME, SHA1, SHA256);
    None for one not at hand."""
    if algorithm in ("SHA1", "SHA256"):
        return base64.b64encode(hashlib.new(algorithm.lower(), data).digest()).decode()
    width = _CRC_WIDTHS.get(algorithm)
    if width is None:
        return None
    if _crt is not None:
        crc = getattr(_crt, algorithm.lower())(data)
    elif algorithm == "CRC32":
        crc = zlib.crc32(data)
    else:
        return None
    return base64.b64encode(crc.to_bytes(width, "big")).decode()


def crc32c_available() -> bool:
    return _crt is not None
