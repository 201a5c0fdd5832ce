"""Mount lifecycle: the S3 client, the mount's nursery, pyfuse3 init/main/close, signals.

Order matters: the bucket is checked before anything is mounted, so that every bad
input fails before the mount point changes; on the way out, uploads of files that were
never closed are aborted (their writer did not finish, so committing them would
publish a truncated file) and only then is the filesystem unmounted.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from .config import MountConfig
from .errors import S3mpfsError, describe, s3_error_code
from .fs.kernel import tune_read_ahead
from .fs.namespace import Namespace
from .fs.operations import S3Operations
from .run import control, memory, metrics
from .s3.client import new_session
from .s3.gaps import Gaps, probe_gaps
from .s3.integrity import ChecksumIgnored
from .s3.optioncheck import OptionRefused, check_options
from .s3.stats import MountStats
from .s3.store import S3Store
from .write.budget import MemoryBudget
from .write.registry import UploadRegistry
from .write.spool import SpoolSpace
from .write.upload import UploadShared

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 60.0  # seconds to abort pending uploads at exit


class MountError(S3mpfsError):
    """A problem that stops the mount; its message is the one line the user sees."""


def bucket_problem(config: MountConfig, exc: BaseException) -> str:
    """One line saying why the bucket cannot be used and what to do about it."""
    code = s3_error_code(exc)
    name = config.bucket
    if code in ("404", "NoSuchBucket", "NotFound"):
        return f"bucket {name!r} does not exist; check its name (and region=)"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return (f"access to bucket {name!r} denied; check your AWS credentials "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and permissions")
    if code in ("301", "PermanentRedirect", "AuthorizationHeaderMalformed"):
        return f"bucket {name!r} is in another region; pass -o region=THE_REGION"
    text = describe(exc)
    if "credentials" in text.lower():
        return ("no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or use an instance role")
    if "connect" in text.lower() or "endpoint" in text.lower():
        where = config.endpoint_url or "the S3 endpoint"
        return f"cannot reach {where}; check endpoint_url= and the network ({text})"
    return f"cannot use bucket {name!r}: {text}"


async def check_bucket(config: MountConfig, session: Any = None) -> None:
    """Fail within seconds, with one clear line, if the bucket cannot be used (with a
    client of `session`, the mount's boto3 session, if given)."""
    store = S3Store(config, check_mode=True, session=session)
    try:
        await store.check_bucket()
    except Exception as exc:
        raise MountError(bucket_problem(config, exc)) from None


async def probe_server(store: S3Store, config: MountConfig) -> Gaps:
    """Learn what the server verifies, honours and lacks before the first file is
    written, and refuse a mount whose options the server refuses (every file would
    fail)."""
    try:
        await check_options(store, config)
    except OptionRefused as exc:
        raise MountError(str(exc)) from None
    except Exception as exc:
        log.warning("could not check whether this server takes the options of new objects "
                    "(%s)", describe(exc))
    found: list[Gaps] = []

    async def gaps_probe() -> None:
        found.append(await find_gaps(store, config))

    try:
        await store.probe(config.prefix, alongside=gaps_probe)
    except ChecksumIgnored as exc:
        raise MountError(str(exc)) from None
    except Exception as exc:
        log.warning("could not check what this server verifies (%s); sending %s checksums "
                    "and falling back to Content-MD5 if they are ignored", describe(exc),
                    store.integrity.name)
    return found[0] if found else await find_gaps(store, config)


FUSE_DEVICE = "/dev/fuse"


def check_fuse_device() -> None:
    """libfuse opens /dev/fuse itself (fusermount3 only mounts), and says why it could not
    on a line of its own before a vague error: say it here, once."""
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC))
    except FileNotFoundError:
        raise MountError(f"{FUSE_DEVICE} does not exist: load the fuse module (modprobe fuse)"
                         ", or in a container pass --device /dev/fuse") from None
    except OSError as exc:
        raise MountError(f"cannot open {FUSE_DEVICE}: {exc.strerror}; this user needs read "
                         f"and write access to it (usually crw-rw-rw-: chmod 0666 "
                         f"{FUSE_DEVICE})") from None


def mount_type(mountpoint: str) -> str | None:
    """The type of the file system mounted at `mountpoint` (`fuse.s3mpfs`, ...), or None."""
    target = control.mountpoint_path(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields, _, rest = line.partition(" - ")
            point = fields.split(" ")[4].replace("\\040", " ").replace("\\011", "\t") \
                .replace("\\134", "\\")
            if point == target and rest:
                return rest.split(" ")[0]
    return None


def check_mountpoint(config: MountConfig) -> None:
    """Refuse a directory FUSE already serves (a second daemon would stack on the first)
    and, without `nonempty`, one with entries (the mount would hide them)."""
    path = config.mountpoint
    kind = mount_type(path)
    if kind is not None and kind.startswith("fuse"):
        try:
            who = f"s3mpfs pid {control.request_status(path)['mount']['pid']}"
        except (control.ControlError, OSError, KeyError, ValueError):
            who = "s3mpfs" if kind == "fuse.s3mpfs" else kind
        raise MountError(f"{path} is already mounted by {who}; unmount it first with: "
                         f"s3mpfs unmount {path}")
    if not config.nonempty:
        try:
            entries = len(os.listdir(path))
        except OSError as exc:
            raise MountError(f"cannot list mount point {path}: {exc.strerror}") from None
        if entries:
            raise MountError(f"{path} is not empty ({entries} entries would be hidden while "
                             "mounted); use an empty directory, or -o nonempty")


async def find_gaps(store: S3Store, config: MountConfig) -> Gaps:
    """Which optional multipart operations the server lacks (s3/gaps.py)."""
    try:
        return await probe_gaps(store, config.prefix)
    except Exception as exc:
        log.warning("could not check whether this server copies parts (%s); assuming it "
                    "does", describe(exc))
        return Gaps()


async def serve(config: MountConfig, ready: Callable[[], None] = lambda: None) -> None:
    """Check the bucket, mount, serve FUSE requests until unmounted or signalled."""
    check_fuse_device()  # what is wrong here is found before any request is sent
    check_mountpoint(config)
    spool = SpoolSpace(config.cache_dir, config.cache_size)
    try:
        spool.prepare()
    except OSError as exc:
        raise MountError(f"cannot use cache_dir={config.cache_dir}: {exc.strerror}; "
                         "choose another with -o cache_dir=... or cache_size=0") from None
    check_metrics_address(config)
    session = new_session(config)
    await check_bucket(config, session)
    stats = MountStats()
    store = S3Store(config, stats=stats, session=session)
    gaps = Gaps()
    if not config.read_only:
        gaps = await probe_server(store, config)
    async with trio.open_nursery() as nursery:
        registry = UploadRegistry(store, config.prefix)
        nursery.start_soon(registry.keep_renewed)
        shared = UploadShared(
            store, nursery, MemoryBudget(config.memory_limit),
            trio.CapacityLimiter(config.upload_concurrency), config.part_size,
            registry=registry, expected_sse=config.sse,
            spool=spool, read_ahead=config.read_ahead, stats=stats,
            part_copy=gaps.copies_parts)
        namespace = Namespace(config, store, shared)
        await _start_reporting(nursery, config, control.MountReport(
            config, stats, shared, lambda: sum(
                1 for node in namespace.names.table.nodes() if node.meta_dirty),
            namespace.names.cache_sizes))
        options = set(pyfuse3.default_options)
        options |= {f"fsname=s3mpfs:{config.prefix_display}", "subtype=s3mpfs"}
        options |= set(config.fuse_options)
        options |= {"suid" if config.allow_suid else "nosuid",
                    "dev" if config.allow_dev else "nodev"}
        operations = S3Operations(namespace)
        # The kernel sets the mount's read-ahead window from the answer to INIT, to at
        # most what it was when it sent INIT (128 KiB): widened once that answer is in.
        operations.after_init = lambda: nursery.start_soon(_widen_read_ahead, config.mountpoint)
        try:
            pyfuse3.init(operations, config.mountpoint, options)
        except RuntimeError as exc:
            raise MountError(f"cannot mount on {config.mountpoint}: {exc}; is it already a "
                             "mount point, and is /dev/fuse usable?") from None
        nursery.start_soon(_stop_on_signal)
        nursery.start_soon(_sweep, registry)
        nursery.start_soon(memory.return_freed_memory)
        log.info("mounted %s on %s", config.prefix_display, config.mountpoint)
        _freeze_startup_objects()
        ready()
        try:
            await pyfuse3.main()
        finally:
            await _abort_unfinished(shared)
            with trio.move_on_after(SHUTDOWN_TIMEOUT, shield=True):
                await namespace.write_pending_metadata()
            pyfuse3.close(unmount=True)  # harmless when the kernel already unmounted
            nursery.cancel_scope.cancel()
    log.info("unmounted %s", config.mountpoint)


def _freeze_startup_objects() -> None:
    """Leave what start-up made (boto3's clients and service models: some 80,000 objects)
    out of the garbage collector's full collections. Without this, the first full
    collection of a fresh mount, due after a few thousand new objects (a listing of 1,000
    files), scanned them all: 60 to 110 ms, a quarter of the daemon's CPU for a cold
    `ls -l` of 1,000 files. Start-up leaves about 600 objects of garbage (its one boto3
    session serves both of its clients): frozen with the rest rather than found by a
    collection that would scan all 85,000 first (50 ms of every mount's start)."""
    gc.freeze()


def check_metrics_address(config: MountConfig) -> None:
    """Bind the metrics address once, before the bucket is asked anything: taken or not
    ours, the mount is refused with one line (serving it later binds it again)."""
    if config.metrics is None:
        return
    host, port = config.metrics
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos[:1]:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as trio does
                probe.bind(address)
    except OSError as exc:
        raise MountError(f"metrics={host}:{port}: cannot listen there: "
                         f"{exc.strerror or exc}") from None


async def _start_reporting(nursery: trio.Nursery, config: MountConfig,
                           report: control.MountReport) -> None:
    """The control socket (`s3mpfs status`) and, if asked for, the metrics endpoint."""
    await nursery.start(control.serve, report)
    if config.metrics is not None:
        host, port = config.metrics
        try:
            report.metrics_address = await nursery.start(metrics.serve, config.metrics, report)
        except OSError as exc:
            raise MountError(f"metrics={host}:{port}: cannot listen there: "
                             f"{exc.strerror or exc}") from None


async def _sweep(registry: UploadRegistry) -> None:
    """Abort uploads an earlier s3mpfs left behind (crash, kill -9, power loss)."""
    try:
        aborted = await registry.sweep()
    except Exception as exc:
        log.warning("could not check for abandoned uploads: %s", describe(exc))
        return
    where = registry.prefix or "the bucket root"
    if aborted:
        log.warning("aborted %d abandoned s3mpfs upload(s) under %s", aborted, where)
    else:
        log.info("no abandoned s3mpfs upload under %s", where)


async def _widen_read_ahead(mountpoint: str) -> None:
    tune_read_ahead(mountpoint)  # 1 MiB READ requests, several in flight


async def _stop_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.warning("received %s: stopping", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


async def _abort_unfinished(shared: UploadShared) -> None:
    """Abort the upload of every file still open for writing, logging each one."""
    with trio.move_on_after(SHUTDOWN_TIMEOUT, shield=True):
        async with trio.open_nursery() as nursery:
            for upload in list(shared.uploads):
                log.warning("%s was still open for writing at exit: aborting its upload "
                            "(the previous version, if any, is intact)", upload.key)
                nursery.start_soon(upload.cancel, "filesystem stopped before close()")
