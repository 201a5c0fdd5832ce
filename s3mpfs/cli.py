"""Command line: `s3mpfs BUCKET[:PREFIX] MOUNTPOINT [-f] [-o OPT[,OPT...]]`.

Every error ends the command with exit code 1 (2 for usage errors) and one line on
stderr that names the problem. Without -f the command forks, and the parent returns
only once the child has mounted (or reports the child's error).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import logging.handlers
import os
import socket
import sys
from collections.abc import Sequence

import trio

from . import __version__
from .argv import asks_for_option_help
from .config import MountConfig, build_config, options_help
from .errors import ConfigError, S3mpfsError, describe
from .run import memory

log = logging.getLogger("s3mpfs")

# Where background mounts log when no log_file= is given. The variable exists for the
# tests, which cannot read the machine's journal: they point it at a socket of their own.
SYSLOG_ENV = "S3MPFS_SYSLOG_SOCKET"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"s3mpfs: {message} (see s3mpfs --help)", file=sys.stderr)
        sys.exit(2)


def _mount_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="s3mpfs",
        description="Mount an S3 bucket; files written are streamed as multipart uploads.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Subcommands (see s3mpfs SUBCOMMAND --help):\n"
               "  s3mpfs status MOUNTPOINT [--watch] [--json]\n"
               "  s3mpfs unmount MOUNTPOINT [--wait] [--if-dead]\n"
               "  s3mpfs uploads BUCKET[:PREFIX]\n"
               "  s3mpfs cleanup BUCKET[:PREFIX]\n\n" + options_help())
    parser.add_argument("--version", action="version", version=f"s3mpfs {__version__}")
    parser.add_argument("target", metavar="BUCKET[:PREFIX]")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="stay in the foreground and log to stderr")
    parser.add_argument("-o", dest="options", action="append", default=[],
                        metavar="OPT[,OPT...]",
                        help="mount options (listed below, and by: s3mpfs -o help)")
    return parser


def _syslog_handler() -> logging.Handler | None:
    """Syslog (journald reads /dev/log), tagged `s3mpfs[PID]` so that `journalctl -t s3mpfs`
    finds the lines; None if there is no syslog to talk to."""
    address = os.environ.get(SYSLOG_ENV) or "/dev/log"
    try:  # SysLogHandler ignores a socket it cannot reach, then drops every line
        _probe_unix_socket(address)
        handler = logging.handlers.SysLogHandler(
            address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    except OSError:
        return None
    handler.ident = f"s3mpfs[{os.getpid()}]: "
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


def _probe_unix_socket(address: str) -> None:
    """Connect to a syslog socket (datagram, else stream) or raise OSError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
    except OSError as exc:
        if exc.errno != errno.EPROTOTYPE:
            raise
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(address)


def fallback_log_file(config: MountConfig) -> str:
    """Where a background mount logs when there is no syslog (containers, minimal hosts):
    $XDG_STATE_HOME/s3mpfs, else /var/log/s3mpfs for root, else ~/.local/state/s3mpfs; one
    file per mount point, so that nothing, errors least of all, is dropped."""
    state = os.environ.get("XDG_STATE_HOME")
    if state:
        base = os.path.join(os.path.abspath(state), "s3mpfs")
    elif os.geteuid() == 0:
        base = "/var/log/s3mpfs"
    else:
        base = os.path.join(os.path.expanduser("~"), ".local", "state", "s3mpfs")
    name = config.mountpoint.strip("/").replace("/", "-") or "root"
    return os.path.join(base, f"{name}.log")


def _log_file_handler(path: str, create_dir: bool = False) -> logging.Handler:
    try:
        if create_dir:
            os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        return logging.FileHandler(path)
    except OSError as exc:
        raise ConfigError(f"log_file={path}: cannot write there: {exc.strerror or exc}; "
                          "choose another with -o log_file=...") from None


def setup_logging(config: MountConfig) -> None:
    """A log file if given, else stderr in the foreground, else syslog. Call it again in a
    forked child: the syslog tag names the process."""
    level = logging.DEBUG if config.debug else logging.INFO
    handler: logging.Handler | None
    if config.log_file:
        handler = _log_file_handler(config.log_file)
    elif config.foreground:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = _syslog_handler() or _log_file_handler(fallback_log_file(config), True)
    if not isinstance(handler, logging.handlers.SysLogHandler):
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(level)  # our own loggers; botocore's stay quiet (they could log secrets)


def _fail(message: str, code: int = 1) -> int:
    print(f"s3mpfs: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("uploads", "cleanup"):
        from .run.maintenance import main as maintenance_main

        return maintenance_main(args)
    if args and args[0] in ("status", "unmount"):
        from .run.status import main as status_main

        return status_main(args)
    if asks_for_option_help(args):
        print(options_help())
        return 0
    parsed = _mount_parser().parse_args(args)
    try:
        config = build_config(parsed.target, parsed.mountpoint, parsed.options,
                              foreground=parsed.foreground)
        notice = ""
        if not config.foreground and not config.log_file and _syslog_handler() is None:
            config = dataclasses.replace(config, log_file=fallback_log_file(config))
            _log_file_handler(config.log_file, create_dir=True).close()
            notice = (f"s3mpfs: no syslog ({os.environ.get(SYSLOG_ENV) or '/dev/log'}): "
                      f"logging to {config.log_file}")
        setup_logging(config)
    except ConfigError as exc:
        return _fail(str(exc))
    if config.foreground:
        return _run(config)
    return _daemonize(config, notice)


def _run(config: MountConfig, ready_fd: int | None = None) -> int:
    from .mount import serve

    memory.tune(config.endpoint_url)

    pending = [ready_fd] if ready_fd is not None else []

    def tell_parent(message: str) -> None:
        while pending:
            fd = pending.pop()
            os.write(fd, message.encode() + b"\n")
            os.close(fd)

    def mounted() -> None:
        tell_parent("OK")
        notify_systemd(f"READY=1\nSTATUS=mounted {config.prefix_display} on "
                       f"{config.mountpoint}")

    try:
        trio.run(serve, config, mounted)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # one line for the user, the traceback in the log
        known = _s3mpfs_error(exc)
        if known is not None:
            message = str(known)
        elif config.foreground and not config.log_file:  # the log is stderr: one line there
            log.debug("unexpected error", exc_info=exc)
            message = f"unexpected error: {describe(exc)} (-o debug shows where)"
        else:
            log.error("unexpected error", exc_info=exc)
            message = f"unexpected error: {describe(exc)} (the log has the traceback)"
        tell_parent(f"ERR {message}")
        return _fail(message)
    return 0


def _s3mpfs_error(exc: BaseException) -> S3mpfsError | None:
    """The S3mpfsError that stopped the mount, also from inside trio's exception groups
    (a MountError raised in the mount's nursery arrives wrapped in one)."""
    if isinstance(exc, S3mpfsError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _s3mpfs_error(inner)
            if found is not None:
                return found
    return None


def notify_systemd(message: str) -> None:
    """sd_notify(3), for Type=notify services: a datagram to $NOTIFY_SOCKET, if set."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as exc:
            log.warning("could not tell systemd the mount is ready: %s", exc)


def _daemonize(config: MountConfig, notice: str = "") -> int:
    """Fork; the child mounts and tells the parent through a pipe how it went. `notice`
    (where the log goes) is printed once mounted: an error stays the only line."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read().decode(errors="replace").strip()
        if answer.startswith("OK"):
            if notice:
                print(notice, file=sys.stderr)
            return 0
        return _fail(answer.removeprefix("ERR ") or "the mount process exited unexpectedly")
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    setup_logging(config)  # again: the syslog tag names this process
    os._exit(_run(config, write_fd))


if __name__ == "__main__":
    sys.exit(main())
