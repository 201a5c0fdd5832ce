"""Frozen, validated mount configuration built from fstab-style `-o` options.

Everything a user can get wrong is checked here, before anything is mounted, and
reported as a `ConfigError` whose message names the option and how to fix it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import botocore.session

from .errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_UPLOAD_CONCURRENCY = 4
DEFAULT_MEMORY_LIMIT = 64 * MiB
DEFAULT_CACHE_SIZE = 4 * GiB  # bytes written out of order, spooled on local disk, mount-wide

SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
CHECKSUMS = ("auto", "crc32", "crc32c", "sha1", "sha256", "md5", "off")
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


def _enum(operation: str, member: str) -> tuple[str, ...]:
    """The values botocore's S3 model accepts for a request member (kept current by boto3)."""
    model = botocore.session.get_session().get_service_model("s3")
    return tuple(model.operation_model(operation).input_shape.members[member].enum)


STORAGE_CLASSES = _enum("CreateMultipartUpload", "StorageClass")
CANNED_ACLS = _enum("CreateMultipartUpload", "ACL")

# Options that are ours; anything else is handed to FUSE only if it is a known FUSE option.
FUSE_FLAGS = {
    "ro", "rw", "allow_other", "allow_root", "auto_unmount", "default_permissions",
    "noatime", "nodiratime", "relatime", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
    "sync", "async", "dirsync", "_netdev", "nofail", "noauto", "auto", "user", "users",
    "defaults",
}
FUSE_VALUED = {"fsname", "subtype", "max_read", "blkdev", "blksize", "context", "fscontext",
               "defcontext", "rootcontext", "comment"}
# fstab/mount(8) bookkeeping that must not be passed to libfuse.
MOUNT_ONLY = {"_netdev", "nofail", "noauto", "auto", "user", "users", "defaults", "comment"}


@dataclass(frozen=True)
class MountConfig:
    bucket: str
    prefix: str = ""  # "" or ends with "/"
    mountpoint: str = ""
    foreground: bool = False
    endpoint_url: str | None = None
    region: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    sse_kms_context: str | None = None  # base64 JSON, passed to S3 as is
    bucket_key: bool = False
    sse_c_key: bytes | None = field(default=None, repr=False)  # never printed
    storage_class: str | None = None
    acl: str | None = None
    part_size: int = DEFAULT_PART_SIZE
    upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    checksum: str = "auto"
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    file_mode: int = 0o644
    dir_mode: int = 0o750  # as s3fs shows directories without metadata
    object_lock_mode: str | None = None
    object_lock_retain_days: int | None = None
    object_lock_legal_hold: bool = False
    retries: int = 6
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    negative_ttl: float = 0.25  # seconds a name found absent is trusted absent (fs/names.py)
    read_ahead: int = 8 * MiB
    cache_dir: str = field(default_factory=lambda: default_cache_dir())
    cache_size: int = DEFAULT_CACHE_SIZE  # 0: no spool, writes out of order are refused
    debug: bool = False
    log_file: str | None = None
    metrics: tuple[str, int] | None = None  # (host, port) of the Prometheus endpoint
    read_only: bool = False
    fuse_options: tuple[str, ...] = ()

    @property
    def prefix_display(self) -> str:
        return f"{self.bucket}:{self.prefix}" if self.prefix else self.bucket


def default_cache_dir() -> str:
    """Where files written at random offsets are spooled: $XDG_CACHE_HOME/s3mpfs, else
    /var/cache/s3mpfs for root, ~/.cache/s3mpfs for others."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(os.path.abspath(xdg), "s3mpfs")
    if os.geteuid() == 0:
        return "/var/cache/s3mpfs"
    return os.path.join(os.path.expanduser("~"), ".cache", "s3mpfs")


_SIZE_RE = re.compile(r"^(\d+)([kKmMgGtT]?)(i?[bB])?$")
_SIZE_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}


def parse_size(text: str, option: str) -> int:
    """'8M' -> 8 MiB. Suffixes K, M, G, T are powers of 1024."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ConfigError(
            f"{option}={text!r} is not a size; use a number with K, M or G (e.g. 16M)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def _parse_int(text: str, option: str, low: int, high: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ConfigError(f"{option}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{option}={value} is out of range; use {low}..{high}")
    return value


def _parse_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{option}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{option} must be positive")
    return value


def _parse_mode(text: str, option: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ConfigError(f"{option}={text!r} is not an octal mode like 0644") from None
    if not 0 <= value <= 0o7777:
        raise ConfigError(f"{option}={text} is not a permission mode (0000..7777)")
    return value


def _choice(text: str, option: str, choices: tuple[str, ...], case_insensitive: bool) -> str:
    for choice in choices:
        if text == choice or (case_insensitive and text.lower() == choice.lower()):
            return choice
    raise ConfigError(f"{option}={text!r} is not supported; use one of: {', '.join(choices)}")


def read_sse_c_key(path: str) -> bytes:
    """Read a 32-byte SSE-C key, raw or base64, from a file only its owner can read."""
    try:
        info = os.stat(path)
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as exc:
        raise ConfigError(f"sse_c_key_file: cannot read {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"sse_c_key_file {path} is readable by group or others; run: chmod 600 {path}"
        )
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


def _check_kms_context(text: str) -> str:
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


def split_options(groups: list[str]) -> list[tuple[str, str | None]]:
    """['a=1,b', 'c'] -> [('a', '1'), ('b', None), ('c', None)]."""
    pairs: list[tuple[str, str | None]] = []
    for group in groups:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            pairs.append((name.strip(), value if sep else None))
    return pairs


def build_config(
    target: str, mountpoint: str, option_groups: list[str], *, foreground: bool = False,
    check_mountpoint: bool = True,
) -> MountConfig:
    """Validate BUCKET[:PREFIX], the mount point and every -o option into a MountConfig."""
    bucket, prefix = parse_target(target)
    if check_mountpoint:
        if not os.path.isdir(mountpoint):
            raise ConfigError(f"mount point {mountpoint} does not exist or is not a directory; "
                              f"create it with: mkdir -p {mountpoint}")
        mountpoint = os.path.abspath(mountpoint)

    values: dict[str, object] = {}
    fuse_options: list[str] = []
    sse_c_key_file: str | None = None

    for name, value in split_options(option_groups):
        if name in _FLAGS:
            if value not in (None, "1", "true", "yes"):
                raise ConfigError(f"option {name} takes no value")
            values[name] = True
            continue
        if name in FUSE_FLAGS and value is None:
            if name == "ro":
                values["read_only"] = True
            if name not in MOUNT_ONLY:
                fuse_options.append(name)
            continue
        if name in FUSE_VALUED and value is not None:
            if name not in MOUNT_ONLY:
                fuse_options.append(f"{name}={value}")
            continue
        if value is None or value == "":
            if name in _VALUED:
                raise ConfigError(f"option {name} needs a value: -o {name}=...")
            raise ConfigError(f"unknown option {name!r}; see 'Mount options' in the README")
        if name not in _VALUED:
            raise ConfigError(f"unknown option {name!r}; see 'Mount options' in the README")
        if name == "sse_c_key_file":
            sse_c_key_file = value
            continue
        values[name] = _VALUED[name](value, name)

    if sse_c_key_file is not None:
        values["sse_c_key"] = read_sse_c_key(sse_c_key_file)
    if "endpoint_url" not in values:  # botocore reads these too; we name it in errors
        env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if env:
            values["endpoint_url"] = env

    config = MountConfig(
        bucket=bucket, prefix=prefix, mountpoint=mountpoint, foreground=foreground,
        fuse_options=tuple(fuse_options), **values,  # type: ignore[arg-type]
    )
    _check_combinations(config)
    return config


def _check_combinations(config: MountConfig) -> None:
    kms = config.sse in ("aws:kms", "aws:kms:dsse")
    if config.sse_kms_key_id and not kms:
        raise ConfigError("sse_kms_key_id needs sse=aws:kms or sse=aws:kms:dsse")
    if config.sse_kms_context and not kms:
        raise ConfigError("sse_kms_context needs sse=aws:kms or sse=aws:kms:dsse")
    if config.bucket_key and config.sse != "aws:kms":
        raise ConfigError("bucket_key needs sse=aws:kms")
    if config.sse_c_key is not None and config.sse is not None:
        raise ConfigError("sse_c_key_file cannot be combined with sse=; choose one encryption")
    if config.memory_limit < config.part_size:
        raise ConfigError(
            f"memory_limit must be at least part_size ({config.part_size // MiB}M)"
        )
    if (config.object_lock_mode is None) != (config.object_lock_retain_days is None):
        raise ConfigError("object_lock_mode and object_lock_retain_days must be given together")


def parse_target(target: str) -> tuple[str, str]:
    """'bucket:some/prefix' -> ('bucket', 'some/prefix/')."""
    bucket, _, prefix = target.partition(":")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,254}", bucket):
        raise ConfigError(f"{bucket!r} is not a valid bucket name; use BUCKET or BUCKET:PREFIX")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def _part_size(text: str, option: str) -> int:
    size = parse_size(text, option)
    if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise ConfigError(f"{option}={text} is out of range; S3 parts must be 5M..5G")
    return size


def _memory(text: str, option: str) -> int:
    size = parse_size(text, option)
    if size < MIN_PART_SIZE:
        raise ConfigError(f"{option}={text} is too small; use at least 5M")
    return size


def _metrics_address(text: str, option: str) -> tuple[str, int]:
    """'9464' or 'HOST:PORT' -> (host, port); the host defaults to loopback."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    return host or "127.0.0.1", _parse_int(port, option, 0, 65535)


@dataclass(frozen=True)
class Option:
    """One mount option: the parser, `s3mpfs -o help` and the README table all come from
    `OPTIONS` (a test checks that the README names the same options)."""

    name: str
    values: str  # what it takes, as the help shows it
    default: str  # as the help shows it ("" when there is none)
    meaning: str
    parse: Callable[[str, str], object] | None = None  # None: a flag, which takes no value


OPTIONS: tuple[Option, ...] = (
    Option("endpoint_url", "URL", "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS",
           "S3 endpoint, for S3-compatible services or a local test server", lambda v, o: v),
    Option("region", "region name, e.g. eu-west-1", "the AWS chain's", "region of the bucket",
           lambda v, o: v),
    Option("sse", " | ".join(SSE_MODES), "the bucket's default",
           "server-side encryption of new objects",
           lambda v, o: _choice(v, o, SSE_MODES, case_insensitive=False)),
    Option("sse_kms_key_id", "key id, ARN or alias/...", "",
           "KMS key; needs sse=aws:kms or aws:kms:dsse", lambda v, o: v),
    Option("sse_kms_context", "base64 of a JSON object", "",
           "KMS encryption context; needs sse=aws:kms*", lambda v, o: _check_kms_context(v)),
    Option("bucket_key", "flag", "off", "S3 Bucket Key with SSE-KMS; needs sse=aws:kms"),
    Option("sse_c_key_file", "path", "",
           "SSE-C: a 32-byte key, raw or base64, in a file only its owner can read",
           lambda v, o: v),
    Option("storage_class", "a storage class, case-insensitive", "STANDARD",
           "storage class of new objects (STANDARD_IA, GLACIER_IR, ...)",
           lambda v, o: _choice(v, o, STORAGE_CLASSES, case_insensitive=True)),
    Option("acl", "a canned ACL, e.g. bucket-owner-full-control", "", "ACL of new objects",
           lambda v, o: _choice(v, o, CANNED_ACLS, case_insensitive=True)),
    Option("part_size", "5M..5G", "8M",
           "size of the first 64 parts; parts then double every 64 parts", _part_size),
    Option("upload_concurrency", "1..64", str(DEFAULT_UPLOAD_CONCURRENCY),
           "parts in flight across the whole mount", lambda v, o: _parse_int(v, o, 1, 64)),
    Option("memory_limit", "size, at least part_size", "64M",
           "bytes of parts being filled or not yet sent, across the mount; write() waits "
           "beyond it", _memory),
    Option("checksum", " | ".join(CHECKSUMS), "auto",
           "checksum sent with every part and PutObject, verified by S3",
           lambda v, o: _choice(v, o, CHECKSUMS, case_insensitive=True)),
    Option("retries", "1..20", "6", "attempts per request for transient errors",
           lambda v, o: _parse_int(v, o, 1, 20)),
    Option("connect_timeout", "seconds", "10", "connect timeout per request", _parse_float),
    Option("read_timeout", "seconds", "60", "read timeout per request", _parse_float),
    Option("negative_ttl", "seconds", "0.25",
           "a name absent from a cached listing is asked about again once this mount has "
           "not listed or changed its directory for this long", _parse_float),
    Option("uid", "number", "the mounting user's",
           "owner shown for objects without s3fs metadata",
           lambda v, o: _parse_int(v, o, 0, 2**32 - 2)),
    Option("gid", "number", "the mounting user's",
           "group shown for objects without s3fs metadata",
           lambda v, o: _parse_int(v, o, 0, 2**32 - 2)),
    Option("file_mode", "octal", "0644", "permissions shown for objects without s3fs metadata",
           _parse_mode),
    Option("dir_mode", "octal", "0750", "permissions shown for directories without metadata",
           _parse_mode),
    Option("object_lock_mode", " | ".join(OBJECT_LOCK_MODES), "",
           "Object Lock (WORM) on new objects; needs object_lock_retain_days",
           lambda v, o: _choice(v.upper(), o, OBJECT_LOCK_MODES, False)),
    Option("object_lock_retain_days", "1..36500", "",
           "retain-until = upload time + N days", lambda v, o: _parse_int(v, o, 1, 36500)),
    Option("object_lock_legal_hold", "flag", "off", "legal hold on new objects"),
    Option("read_ahead", "size", "8M", "block size of ranged reads",
           lambda v, o: parse_size(v, o)),
    Option("debug", "flag", "off", "log every S3 request (never keys or bodies)"),
    Option("log_file", "path", "syslog; with -f, stderr",
           "log to this file instead", lambda v, o: os.path.abspath(v)),
    Option("cache_dir", "path", "$XDG_CACHE_HOME/s3mpfs, /var/cache/s3mpfs for root",
           "local spool of files written at random offsets", lambda v, o: os.path.abspath(v)),
    Option("cache_size", "size; 0 disables", "4G",
           "spooled bytes across the mount; a write beyond it fails with ENOSPC",
           lambda v, o: parse_size(v, o)),
    Option("metrics", "PORT or HOST:PORT", "off",
           "serve Prometheus metrics over HTTP (HOST defaults to 127.0.0.1)",
           _metrics_address),
)
OPTION_NAMES = tuple(option.name for option in OPTIONS)
_VALUED = {o.name: o.parse for o in OPTIONS if o.parse is not None}
_FLAGS = {o.name for o in OPTIONS if o.parse is None}


def options_help() -> str:
    """The text of `s3mpfs -o help`: every mount option with its values and default."""
    lines = ["Mount options (-o NAME=VALUE,FLAG,...):"]
    for o in OPTIONS:
        default = f" (default: {o.default})" if o.default else ""
        lines.append(f"  {o.name:<24} {o.values}{default}")
        lines.append(f"  {'':<24} {o.meaning}")
    fuse = sorted(FUSE_FLAGS - MOUNT_ONLY) + sorted(n + "=" for n in FUSE_VALUED - MOUNT_ONLY)
    wrapped = textwrap.wrap(", ".join(fuse), width=72)
    lines.append(f"  {'FUSE options':<24} {wrapped[0]}")
    lines.extend(f"  {'':<24} {line}" for line in wrapped[1:])
    lines.append(f"  {'':<24} passed to FUSE; {', '.join(sorted(MOUNT_ONLY))} are accepted "
                 "and ignored")
    return "\n".join(lines)
