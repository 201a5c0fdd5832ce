#!/usr/bin/env python3
"""Daemon CPU per small file and per listed entry, s3mpfs on the null S3 server.

    .venv/bin/python scripts/small_cpu.py [--runs 3] [--files 1000] [--roots DIR,DIR]
                                          [--profile DIR]

Starts the null S3 server (scripts/nulls3/), then `--runs` times: `cp -r` of FILES files of
4 KiB into a new directory of a fresh mount, and a cold `ls -l` of that directory on another
fresh mount.
For each step, the CPU of the FUSE daemon (utime + stime of all its threads, from
/proc/PID/stat) from just before the command to its end, 0.5 s after mounting (so that
start-up work is not counted). CPU time moves much less than wall time with the load of
a shared machine; the medians are printed at the end.

`--roots A,B`: directories holding an `s3mpfs` package (e.g. `git archive REV s3mpfs |
tar -x -C A`), measured in turn, run by run, to compare two versions under the same load.
`--profile DIR`: py-spy (`record --native`, raw collapsed stacks) for every step.
Uses the benchmark's server and mount helpers (scripts/benchkit/); everything is cleaned up
at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit.base import BenchError, MiB  # noqa: E402
from benchkit.peers import S3mpfs  # noqa: E402
from benchkit.procs import Cleanup, cpu_seconds  # noqa: E402
from benchkit.server import Bench  # noqa: E402
from benchkit.steps import make_small_tree  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--roots", default=str(REPO),
                        help="comma-separated directories holding the s3mpfs to measure")
    parser.add_argument("--profile", help="directory for py-spy profiles of every step")
    args = parser.parse_args()
    cleanup = Cleanup()
    options = argparse.Namespace(stock_moto=False, size=16 * MiB)
    server = Bench(options, cleanup)
    try:
        server.start_nulls3(20)
        tool = S3mpfs(server, "s3mpfs", "s3mpfs")
        tool.prepare()
        tool.env = lambda: dict(server.env)  # type: ignore[method-assign]
        # `python -m s3mpfs` looks in its working directory first: not in a checkout.
        os.chdir(server.scratch)
        tree = make_small_tree(server, args.files)

        walls: dict[str, list[float]] = {"cp": [], "ls": []}  # the command's wall time

        def step(argv: list[str], what: str, stdout: object = subprocess.DEVNULL) -> float:
            with tool.mount() as m:
                time.sleep(0.5)
                profiler = None
                if args.profile:
                    os.makedirs(args.profile, exist_ok=True)
                    out = f"{args.profile}/{what}-{time.time():.0f}.txt"
                    profiler = subprocess.Popen(
                        ["py-spy", "record", "--native", "-r", "500", "-f", "raw", "-p",
                         str(m.pid), "-o", out], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
                    time.sleep(1.0)
                cpu0 = cpu_seconds(m.pid)
                wall0 = time.monotonic()
                subprocess.run([a.replace("MNT", str(m.mountpoint)) for a in argv],
                               stdout=stdout, check=True)  # type: ignore[arg-type]
                cpu1 = cpu_seconds(m.pid)
                walls[what].append(time.monotonic() - wall0)
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait()
            assert cpu0 is not None and cpu1 is not None
            return cpu1 - cpu0

        roots = args.roots.split(",")
        copies: dict[str, list[float]] = {root: [] for root in roots}
        listings: dict[str, list[float]] = {root: [] for root in roots}
        for run in range(1, args.runs + 1):
            for index, root in enumerate(roots):
                server.env["PYTHONPATH"] = root
                if run == 1:
                    found = subprocess.run(
                        [sys.executable, "-c", "import s3mpfs; print(s3mpfs.__file__)"],
                        env=tool.env(), capture_output=True, text=True, check=True)
                    print(f"{root}: the daemon runs {found.stdout.strip()}", flush=True)
                name = f"tree-{run}-{index}"
                cp = step(["cp", "-r", str(tree), f"MNT/{name}"], "cp")
                with tempfile.TemporaryFile() as listing:
                    ls = step(["ls", "-l", f"MNT/{name}"], "ls", stdout=listing)
                    listing.seek(0)
                    entries = len(listing.read().splitlines()) - 1
                if entries != args.files:
                    raise BenchError(f"ls -l listed {entries} entries")
                copies[root].append(cp)
                listings[root].append(ls)
                print(f"run {run} {root}: cp -r {cp * 1e3 / args.files:.3f} ms per file, "
                      f"ls -l {ls * 1e3 / args.files:.3f} ms per entry (wall: cp -r "
                      f"{walls['cp'][-1]:.2f} s, ls -l {walls['ls'][-1]:.2f} s)", flush=True)
        for root in roots:
            print(f"median {root}: cp -r "
                  f"{statistics.median(copies[root]) * 1e3 / args.files:.3f} ms per file, "
                  f"ls -l {statistics.median(listings[root]) * 1e3 / args.files:.3f} ms "
                  f"per entry (load {os.getloadavg()[0]:.1f})")
    finally:
        cleanup.run_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
