"""Command line: `s3mpfs BUCKET[:PREFIX] MOUNTPOINT [-f] [-o OPT[,OPT...]]`.

Every error ends the command with exit code 1 (2 for usage errors) and one line on
stderr that names the problem. Without -f the command forks, and the parent returns
only once the child has mounted (or reports the child's error).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
from collections.abc import Sequence

import trio

from .config import MountConfig, build_config
from .errors import ConfigError, S3mpfsError

log = logging.getLogger("s3mpfs")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"s3mpfs: {message} (see s3mpfs --help)", file=sys.stderr)
        sys.exit(2)


def _mount_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="s3mpfs",
        description="Mount an S3 bucket; files written are streamed as multipart uploads.",
        epilog="Subcommands: s3mpfs uploads BUCKET[:PREFIX]; s3mpfs cleanup BUCKET[:PREFIX]")
    parser.add_argument("target", metavar="BUCKET[:PREFIX]")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="stay in the foreground and log to stderr")
    parser.add_argument("-o", dest="options", action="append", default=[],
                        metavar="OPT[,OPT...]", help="mount options (see README)")
    return parser


def setup_logging(config: MountConfig) -> None:
    level = logging.DEBUG if config.debug else logging.INFO
    handler: logging.Handler
    if config.log_file:
        handler = logging.FileHandler(config.log_file)
    elif config.foreground:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(level)  # our own loggers; botocore's stay quiet (they could log secrets)


def _fail(message: str, code: int = 1) -> int:
    print(f"s3mpfs: {message}", file=sys.stderr)
    return code


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def _reexec_with_huge_pages(args: list[str]) -> None:
    """Run the mount in a process whose malloc puts its large blocks (parts being cut,
    2 MiB and up) on transparent huge pages: joining an 8 MiB part then costs 4 page
    faults instead of 2,048 (3.4 ms instead of 12.7 ms here). glibc reads the tunable
    only at start-up, hence the exec (same pid; glibc >= 2.35, ignored by older ones)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables or os.environ.get("S3MPFS_NO_REEXEC"):
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables \
        else HUGE_PAGES_TUNABLE
    env["S3MPFS_NO_REEXEC"] = "1"
    try:
        os.execve(sys.executable, [sys.executable, "-m", "s3mpfs", *args], env)
    except OSError:
        pass  # go on without


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("uploads", "cleanup"):
        from .maintenance import main as maintenance_main

        return maintenance_main(args)
    if argv is None and "-h" not in args and "--help" not in args:
        _reexec_with_huge_pages(args)
    parsed = _mount_parser().parse_args(args)
    try:
        config = build_config(parsed.target, parsed.mountpoint, parsed.options,
                              foreground=parsed.foreground)
    except ConfigError as exc:
        return _fail(str(exc))
    setup_logging(config)
    if config.foreground:
        return _run(config)
    return _daemonize(config)


def _release_freed_parts() -> None:
    """Make glibc give freed part buffers back to the OS at once. By default it raises
    its mmap threshold after the first big free and then keeps 8-16 MiB parts on the
    heap, where fragmentation across worker threads grows the resident size.

    The threshold sits just above FUSE's 1 MiB WRITE requests: their buffers (one per
    request, 1,024 per GiB) are recycled on the heap instead of being mapped, faulted in
    and unmapped every time; parts (5 MiB and up) are still mapped and returned at once.
    The trim threshold keeps glibc from returning and re-faulting the heap's top."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 2 << 20)  # M_MMAP_THRESHOLD = 2 MiB, fixed
        libc.mallopt(-1, 16 << 20)  # M_TRIM_THRESHOLD = 16 MiB
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def _run(config: MountConfig, ready_fd: int | None = None) -> int:
    from .mount import serve

    _release_freed_parts()

    pending = [ready_fd] if ready_fd is not None else []

    def tell_parent(message: str) -> None:
        while pending:
            fd = pending.pop()
            os.write(fd, message.encode() + b"\n")
            os.close(fd)

    try:
        trio.run(serve, config, lambda: tell_parent("OK"))
    except S3mpfsError as exc:
        tell_parent(f"ERR {exc}")
        return _fail(str(exc))
    except BaseException as exc:
        tell_parent(f"ERR unexpected error: {exc!r}")
        raise
    except KeyboardInterrupt:
        return 130
    return 0


def _daemonize(config: MountConfig) -> int:
    """Fork; the child mounts and tells the parent through a pipe how it went."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read().decode(errors="replace").strip()
        if answer.startswith("OK"):
            return 0
        return _fail(answer.removeprefix("ERR ") or "the mount process exited unexpectedly")
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os._exit(_run(config, write_fd))


if __name__ == "__main__":
    sys.exit(main())
