"""Parsers for the values of mount options: each returns the value or raises a
`ConfigError` whose one line names the option, what was wrong and what is accepted.

Every number gets a range (finite, bounded both ways) here, at parse time: a value that
parses but makes no sense (`read_ahead=0`, `read_timeout=1e400`, `negative_ttl=nan`)
would otherwise mount and then fail every read.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import os
import re
import stat
from urllib.parse import urlsplit

from .errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_SIZE_RE = re.compile(r"^(\d{1,20})([kKmMgGtT]?)(i?[bB])?$")
_SIZE_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
KEY_FILE_LIMIT = 4096  # bytes read of an SSE-C key file


def show(text: str, limit: int = 60) -> str:
    """`text` quoted for an error line, cut short if long (a 10,000-character value)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def size_text(n: int) -> str:
    """8388608 -> '8M', 1000 -> '1000'."""
    for unit, factor in (("T", TiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def parse_size(text: str, option: str, low: int = 0, high: int = 1024 * TiB) -> int:
    """'8M' -> 8 MiB. Suffixes K, M, G, T are powers of 1024."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ConfigError(
            f"{option}={show(text)} is not a size; use a number with K, M or G (e.g. 16M)")
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if not low <= size <= high:
        raise ConfigError(f"{option}={text} is out of range; use {size_text(low)}.."
                          f"{size_text(high)}")
    return size


def parse_int(text: str, option: str, low: int, high: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ConfigError(f"{option}={show(text)} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{option}={value} is out of range; use {low}..{high}")
    return value


def parse_seconds(text: str, option: str, low: float, high: float) -> float:
    """A finite number of seconds in low..high (0 allowed only if low is 0)."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{option}={show(text)} is not a number of seconds") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{option}={show(text)} is out of range; use {low:g}..{high:g} "
                          "seconds")
    return value


def parse_mode(text: str, option: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ConfigError(f"{option}={show(text)} is not an octal mode like 0644") from None
    if not 0 <= value <= 0o7777:
        raise ConfigError(f"{option}={text} is not a permission mode (0000..7777)")
    return value


def choice(text: str, option: str, choices: tuple[str, ...], case_insensitive: bool) -> str:
    for candidate in choices:
        if text == candidate or (case_insensitive and text.lower() == candidate.lower()):
            return candidate
    raise ConfigError(f"{option}={show(text)} is not supported; use one of: "
                      f"{', '.join(choices)}")


def parse_endpoint(text: str, option: str) -> str:
    """An http(s) URL with a host: botocore takes `127.0.0.1:9000` or `file:///...` and
    fails later with a traceback."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{option}={show(text)} is not a valid URL ({exc}); use e.g. "
                          "https://s3.example.com or http://127.0.0.1:9000") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option}={show(text)} must start with http:// or https:// and name "
                          "a host, e.g. http://127.0.0.1:9000")
    return text


def parse_region(text: str, option: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise ConfigError(f"{option}={show(text)} is not a region name; use e.g. eu-west-1")
    return text


def parse_profile(text: str, option: str) -> str:
    if not re.fullmatch(r"[\w.@+-]{1,128}", text):
        raise ConfigError(f"{option}={show(text)} is not a profile name of ~/.aws/config")
    return text


def parse_host_port(text: str, option: str) -> tuple[str, int]:
    """'9464' or 'HOST:PORT' -> (host, port); the host defaults to loopback."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    host = host or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
            raise ConfigError(f"{option}={show(text)}: {show(host)} is not a host name or "
                              "address") from None
    return host, parse_int(port, option, 0, 65535)  # 0: any free port


def parse_path(text: str, option: str) -> str:
    if "\0" in text:
        raise ConfigError(f"{option}: a path cannot contain a NUL byte")
    return os.path.abspath(text)


def read_sse_c_key(path: str) -> bytes:
    """Read a 32-byte SSE-C key, raw or base64, from a file only its owner can read. The
    type is checked before the file is opened, and it is opened non-blocking: a FIFO or a
    device named here would otherwise block the mount forever."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"sse_c_key_file: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"sse_c_key_file {path} is not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"sse_c_key_file {path} is readable by group or others; run: chmod 600 {path}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat
                raise ConfigError(f"sse_c_key_file {path} is not a regular file")
            data = os.read(fd, KEY_FILE_LIMIT)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"sse_c_key_file: cannot read {path}: {exc.strerror}") from None
    if len(data) == 32:
        return data
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            f"sse_c_key_file {path} must hold a 32-byte key (raw, or base64 of 32 bytes); "
            "make one with: head -c 32 /dev/urandom > KEYFILE"
        )
    return key


def check_kms_context(text: str) -> str:
    try:
        decoded = json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        decoded = None
    if not isinstance(decoded, dict):
        raise ConfigError(
            "sse_kms_context must be base64 of a JSON object, e.g. "
            "$(echo -n '{\"project\":\"backup\"}' | base64 -w0)"
        )
    return text
