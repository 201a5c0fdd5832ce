"""Frozen, validated mount configuration built from fstab-style `-o` options.

Everything a user can get wrong is checked here, before anything is mounted, and
reported as a `ConfigError` whose message names the option and how to fix it.
"""

from __future__ import annotations

import difflib
import errno
import functools
import os
import re
import stat
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

from .argv import split_options
from .errors import ConfigError
from .values import (
    GiB,
    KiB,
    MiB,
    TiB,
    check_kms_context,
    choice,
    parse_endpoint,
    parse_host_port,
    parse_int,
    parse_mode,
    parse_path,
    parse_profile,
    parse_region,
    parse_seconds,
    parse_size,
    read_sse_c_key,
    show,
)

__all__ = ["ConfigError", "GiB", "KiB", "MiB", "TiB", "MountConfig", "build_config",
           "parse_size", "parse_target", "read_sse_c_key"]

MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_UPLOAD_CONCURRENCY = 4
DEFAULT_MEMORY_LIMIT = 64 * MiB
DEFAULT_CACHE_SIZE = 4 * GiB  # bytes written out of order, spooled on local disk, mount-wide

SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
CHECKSUMS = ("auto", "crc32", "crc32c", "sha1", "sha256", "md5", "off")
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


@functools.cache
def _enum(member: str) -> tuple[str, ...]:
    """The values botocore's S3 model accepts for a CreateMultipartUpload member (kept
    current by boto3). Read from botocore's data files when first needed (0.4 s), not
    through a session: a session reads ~/.aws/config and AWS_PROFILE, and a bad one must
    not break `--version` or `--help`."""
    import botocore.loaders
    import botocore.model

    model = botocore.model.ServiceModel(
        botocore.loaders.create_loader().load_service_model("s3", "service-2"), "s3")
    shape = model.operation_model("CreateMultipartUpload").input_shape
    return tuple(shape.members[member].enum)

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
# mount.fuse3 appends `dev,suid` to every fstab mount's options (unless nodev/nosuid are
# given), so these words cannot tell a request from a default: they are accepted and have
# no effect. The mount is always nosuid,nodev unless allow_suid / allow_dev say otherwise
# (anyone who can write an object could otherwise plant a setuid-root program).
KERNEL_SECURITY = {"suid", "nosuid", "dev", "nodev"}


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
    listing_cache: int = 100_000  # names kept in cached listings, all directories (fs/names.py)
    read_ahead: int = 8 * MiB
    cache_dir: str = field(default_factory=lambda: default_cache_dir())
    cache_size: int = DEFAULT_CACHE_SIZE  # 0: no spool, writes out of order are refused
    debug: bool = False
    log_file: str | None = None
    metrics: tuple[str, int] | None = None  # (host, port) of the Prometheus endpoint
    read_only: bool = False
    stat_index: bool = True  # read and write per-directory stat indexes (fs/statindex.py)
    allow_suid: bool = False  # show and honour stored setuid/setgid bits of files
    allow_dev: bool = False  # let device files be opened
    nonempty: bool = False  # mount on a directory that has entries
    profile: str | None = None  # of ~/.aws/config; None: AWS_PROFILE, else default
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


def build_config(
    target: str, mountpoint: str, option_groups: list[str], *, foreground: bool = False,
    check_mountpoint: bool = True,
) -> MountConfig:
    """Validate BUCKET[:PREFIX], the mount point and every -o option into a MountConfig."""
    bucket, prefix = parse_target(target)
    if check_mountpoint:
        _check_mountpoint(mountpoint)
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
            if name not in MOUNT_ONLY and name not in KERNEL_SECURITY:
                fuse_options.append(name)
            continue
        if name in FUSE_VALUED and value is not None:
            if name not in MOUNT_ONLY:
                fuse_options.append(f"{name}={value}")
            continue
        if (name in _VALUED or name in FUSE_VALUED) and not value:
            raise ConfigError(f"option {name} needs a value: -o {name}=...")
        if name not in _VALUED:
            raise ConfigError(unknown_option(name))
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
    check_aws_config(config.profile)
    return config


def _check_mountpoint(path: str) -> None:
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:  # a FUSE mount whose process is gone
            raise ConfigError(f"mount point {path} is a dead mount: the process that served "
                              "it ended (crash or kill -9); clear it with: "
                              f"s3mpfs unmount {path}") from None
        if exc.errno == errno.ENOENT:
            raise ConfigError(f"mount point {path} does not exist; create it with: "
                              f"mkdir -p {path}") from None
        raise ConfigError(f"mount point {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"mount point {path} is not a directory")


def unknown_option(name: str) -> str:
    """'unknown option ...; did you mean ...?' with the closest known names."""
    known = [*OPTION_NAMES, *FUSE_FLAGS, *FUSE_VALUED]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown option {show(name)}; {hint}see: s3mpfs -o help"


def check_aws_config(profile: str | None) -> None:
    """Fail with one line if the AWS profile (profile=, else AWS_PROFILE) does not exist or
    ~/.aws/config cannot be parsed: botocore would raise a traceback's worth later."""
    import botocore.exceptions
    import botocore.session

    try:
        botocore.session.Session(profile=profile).get_scoped_config()
    except botocore.exceptions.ProfileNotFound as exc:
        name = profile or os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
        where = "profile=" if profile else "AWS_PROFILE"
        raise ConfigError(f"AWS profile {show(str(name or exc))} ({where}) is not in "
                          "~/.aws/config or ~/.aws/credentials; list them with: "
                          "aws configure list-profiles") from None
    except botocore.exceptions.BotoCoreError as exc:  # ConfigParseError, ...
        raise ConfigError(f"cannot read the AWS configuration: {exc}") from None


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
    return parse_size(text, option, MIN_PART_SIZE, MAX_PART_SIZE)


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
    Option("endpoint_url", "http:// or https:// URL",
           "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS",
           "S3 endpoint, for S3-compatible services or a local test server", parse_endpoint),
    Option("region", "region name, e.g. eu-west-1", "the AWS chain's", "region of the bucket",
           parse_region),
    Option("profile", "a profile of ~/.aws/config", "AWS_PROFILE, else default",
           "credentials and settings for this mount", parse_profile),
    Option("sse", " | ".join(SSE_MODES), "the bucket's default",
           "server-side encryption of new objects",
           lambda v, o: choice(v, o, SSE_MODES, case_insensitive=False)),
    Option("sse_kms_key_id", "key id, ARN or alias/...", "",
           "KMS key; needs sse=aws:kms or aws:kms:dsse", lambda v, o: v),
    Option("sse_kms_context", "base64 of a JSON object", "",
           "KMS encryption context; needs sse=aws:kms*", lambda v, o: check_kms_context(v)),
    Option("bucket_key", "flag", "off", "S3 Bucket Key with SSE-KMS; needs sse=aws:kms"),
    Option("sse_c_key_file", "path", "",
           "SSE-C: a 32-byte key, raw or base64, in a file only its owner can read",
           lambda v, o: v),
    Option("storage_class", "a storage class, case-insensitive", "STANDARD",
           "storage class of new objects (STANDARD_IA, GLACIER_IR, ...)",
           lambda v, o: choice(v, o, _enum("StorageClass"), case_insensitive=True)),
    Option("acl", "a canned ACL, e.g. bucket-owner-full-control", "", "ACL of new objects",
           lambda v, o: choice(v, o, _enum("ACL"), case_insensitive=True)),
    Option("part_size", "5M..5G", "8M",
           "size of the first 64 parts; parts then double every 64 parts", _part_size),
    Option("upload_concurrency", "1..64", str(DEFAULT_UPLOAD_CONCURRENCY),
           "parts in flight across the whole mount", lambda v, o: parse_int(v, o, 1, 64)),
    Option("memory_limit", "part_size..1T", "64M",
           "bytes of parts being filled or not yet sent, across the mount; write() "
           "waits beyond it",
           lambda v, o: parse_size(v, o, MIN_PART_SIZE, TiB)),
    Option("checksum", " | ".join(CHECKSUMS), "auto",
           "checksum sent with every part and PutObject, verified by S3",
           lambda v, o: choice(v, o, CHECKSUMS, case_insensitive=True)),
    Option("retries", "1..20", "6", "attempts per request for transient errors",
           lambda v, o: parse_int(v, o, 1, 20)),
    Option("connect_timeout", "seconds, 0.1..600", "10", "connect timeout per request",
           lambda v, o: parse_seconds(v, o, 0.1, 600)),
    Option("read_timeout", "seconds, 0.1..3600", "60", "read timeout per request",
           lambda v, o: parse_seconds(v, o, 0.1, 3600)),
    Option("negative_ttl", "seconds, 0..3600", "0.25",
           "a name absent from a cached listing is asked about again once this mount has "
           "not listed or changed its directory for this long",
           lambda v, o: parse_seconds(v, o, 0, 3600)),
    Option("listing_cache", "entries, 0..1000000000", "100000",
           "names kept in the cached listings of all directories; the least recently used "
           "listings are dropped beyond it (the latest one is always kept)",
           lambda v, o: parse_int(v, o, 0, 10**9)),
    Option("stat_index", "yes | no", "yes",
           "keep each directory's file metadata in one object under PREFIX.s3mpfs/stat/, "
           "so that a cold ls -l needs no HEAD per file (checked against every listing)",
           lambda v, o: choice(v, o, ("yes", "no"), case_insensitive=True) == "yes"),
    Option("uid", "number", "the mounting user's",
           "owner shown for objects without s3fs metadata",
           lambda v, o: parse_int(v, o, 0, 2**32 - 2)),
    Option("gid", "number", "the mounting user's",
           "group shown for objects without s3fs metadata",
           lambda v, o: parse_int(v, o, 0, 2**32 - 2)),
    Option("file_mode", "octal", "0644", "permissions shown for objects without s3fs metadata",
           parse_mode),
    Option("dir_mode", "octal", "0750", "permissions shown for directories without metadata",
           parse_mode),
    Option("object_lock_mode", " | ".join(OBJECT_LOCK_MODES), "",
           "Object Lock (WORM) on new objects; needs object_lock_retain_days",
           lambda v, o: choice(v.upper(), o, OBJECT_LOCK_MODES, False)),
    Option("object_lock_retain_days", "1..36500", "",
           "retain-until = upload time + N days", lambda v, o: parse_int(v, o, 1, 36500)),
    Option("object_lock_legal_hold", "flag", "off", "legal hold on new objects"),
    Option("read_ahead", "64K..1G", "8M", "block size of ranged reads",
           lambda v, o: parse_size(v, o, 64 * KiB, GiB)),
    Option("allow_suid", "flag", "off",
           "honour stored setuid/setgid bits of files (mounts are nosuid otherwise, "
           "whatever mount(8) passes); only for buckets no one untrusted can write to"),
    Option("allow_dev", "flag", "off",
           "let device files be opened (mounts are nodev otherwise, whatever mount(8) "
           "passes)"),
    Option("nonempty", "flag", "off",
           "mount on a directory that is not empty (its entries are hidden while mounted)"),
    Option("debug", "flag", "off",
           "log every S3 request: operation, object key, part number (never credentials, "
           "SSE-C keys or bodies)"),
    Option("log_file", "path", "syslog; with -f, stderr",
           "log to this file instead", parse_path),
    Option("cache_dir", "path", "$XDG_CACHE_HOME/s3mpfs, /var/cache/s3mpfs for root",
           "local spool of files written at random offsets", parse_path),
    Option("cache_size", "size, 0..1P; 0 disables", "4G",
           "spooled bytes across the mount; a write beyond it fails with ENOSPC",
           lambda v, o: parse_size(v, o)),
    Option("metrics", "PORT or HOST:PORT", "off",
           "serve Prometheus metrics over HTTP (HOST defaults to 127.0.0.1)",
           parse_host_port),
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
    fuse = sorted(FUSE_FLAGS - MOUNT_ONLY - KERNEL_SECURITY)
    fuse += sorted(n + "=" for n in FUSE_VALUED - MOUNT_ONLY)
    wrapped = textwrap.wrap(", ".join(fuse), width=72)
    lines.append(f"  {'FUSE options':<24} {wrapped[0]}")
    lines.extend(f"  {'':<24} {line}" for line in wrapped[1:])
    ignored = sorted(MOUNT_ONLY | KERNEL_SECURITY)
    lines.append(f"  {'':<24} passed to FUSE; {', '.join(ignored)} are accepted and ignored")
    return "\n".join(lines)
