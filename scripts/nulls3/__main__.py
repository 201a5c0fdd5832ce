"""The command line: `python -m nulls3` (with scripts/ on the path) starts the listeners
and prints their ports."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from . import __doc__ as package_doc
from .server import NullS3
from .store import Bucket


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m nulls3",
                                     description=package_doc.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--also", action="append", default=[], metavar="KIND",
                        help="another listener on the same buckets: https (needs --tls) "
                        "or http+DELAY_MS; its port is printed after the first")
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket")
    parser.add_argument("--populate", action="append", default=[],
                        metavar="BUCKET/PREFIX:COUNT[:distinct]",
                        help="create COUNT empty objects PREFIXf0000000... (and the bucket); "
                        "with :distinct, each with its own size, ETag and times")
    parser.add_argument("--forever", action="store_true", help="do not watch stdin")
    args = parser.parse_args()
    tls = (args.tls[0], args.tls[1]) if args.tls else None
    server = NullS3(args.host, args.port, None if args.also else tls, args.delay_ms)
    servers = [server]
    for kind in args.also:
        if kind == "https":
            servers.append(NullS3(args.host, 0, tls, 0.0, server.state))
        else:
            servers.append(NullS3(args.host, 0, None, float(kind.partition("+")[2] or 0),
                                  server.state))
    for name in args.bucket:
        server.state.buckets[name] = Bucket(time.time())
    for spec in args.populate:
        distinct = spec.endswith(":distinct")
        where, _, count = spec.removesuffix(":distinct").rpartition(":")
        name, _, prefix = where.partition("/")
        bucket = server.state.buckets.setdefault(name, Bucket(time.time()))
        bucket.populate(prefix, int(count), time.time(), distinct)
    for s in servers:
        s.start()
    print(" ".join(str(s.port) for s in servers), flush=True)
    if args.forever:
        threading.Event().wait()
    else:
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
