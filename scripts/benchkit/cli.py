"""The command line: options, signal handling and cleanup around a run, and the child modes
(`_moto`, `_boto3`, `_crt`) the benchmark starts itself in."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from . import __doc__ as package_doc
from .base import STOP, log, parse_size
from .million import parse_shape, run_million
from .motoserver import serve_moto
from .procs import Cleanup
from .runs import run, run_null
from .transfers import boto3_transfer, crt_transfer


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_moto"]:
        return serve_moto(stock="--stock-moto" in argv)
    if argv[:1] == ["_boto3"]:
        return boto3_transfer(*argv[1:6])
    if argv[:1] == ["_crt"]:
        return crt_transfer(*argv[1:6])
    prog = "python -m benchkit" if os.path.basename(sys.argv[0]) == "__main__.py" else None
    parser = argparse.ArgumentParser(prog=prog, description=package_doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"),
                        help="size of the test file (default 1G; K/M/G suffixes)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool (default 3)")
    parser.add_argument("--out", default="docs/BENCHMARKS.md",
                        help="report to write (default docs/BENCHMARKS.md)")
    parser.add_argument("--tools", help="comma-separated subset: s3mpfs, s3mpfs-c8, "
                        "s3mpfs-p16, boto3, s3fs, rclone, rclone-mount")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the untimed cmp of the read-back after the last run")
    parser.add_argument("--note", help="a sentence to print in the report's header, e.g. "
                        "why this size was chosen")
    parser.add_argument("--stock-moto", action="store_true",
                        help="do not patch moto's ranged GETs (read figures get distorted)")
    parser.add_argument("--server", choices=("null", "moto"), default="null",
                        help="null (default): scripts/nulls3/, http and https, small-file "
                        "steps too; moto: the earlier big-file-only comparison on moto")
    parser.add_argument("--protocols", default="http,https",
                        help="null server: big-file phases to run (default http,https)")
    parser.add_argument("--small-files", type=int, default=1000,
                        help="null server: files in the loopback cp -r / ls -l steps (0: skip)")
    parser.add_argument("--small-files-delay", type=int, default=200,
                        help="null server: files in the delayed steps (0: skip)")
    parser.add_argument("--transactions", type=int, default=200,
                        help="null server: one-row SQLite transactions on the mount and on "
                        "local disk, beside `git add` (0: skip both)")
    parser.add_argument("--git-files", type=int, default=600,
                        help="null server: files in the `git init; git add .` step")
    parser.add_argument("--delay-ms", type=int, default=20,
                        help="null server: the delayed listener's round trip (default 20)")
    parser.add_argument("--million", action="store_true",
                        help="instead of the usual run: the million-entry listing (ls -lR "
                        "twice, ls -f of one directory) with the daemon's peak RSS and "
                        "requests; s3mpfs unless --tools names others")
    parser.add_argument("--million-shape", type=parse_shape, default=(10, 100_000),
                        metavar="DIRSxFILES", help="--million: directories and objects "
                        "in each (default 10x100000)")
    parser.add_argument("--million-distinct", action="store_true",
                        help="--million: each object its own size, ETag and times "
                        "(else all alike and empty)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        log("warning: not root; peak RSS needs /proc/PID/clear_refs, mounts need /dev/fuse")

    cleanup = Cleanup()

    def terminate(signum: int, frame: object) -> None:
        STOP.set()
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT even if ignored
        signal.signal(signum, terminate)
    try:
        if args.million:
            return run_million(args, cleanup)
        return run_null(args, cleanup) if args.server == "null" else run(args, cleanup)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        cleanup.run_all()


if __name__ == "__main__":
    sys.exit(main())
