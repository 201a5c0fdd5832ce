"""What is measured: the big file written and read by every tool, and the small-file steps
(`cp -r` of many small files, then a cold `ls -l`), runs interleaved across tools."""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import KEY, BenchError, MiB, Unavailable, check_stop, log
from .procs import check, cpu_seconds, delta, reset_hwm, run_timed, vm_hwm_kib
from .server import Bench
from .tools import FuseTool, Tool, ToolResult

SMALL_SIZE = 4096


@dataclass
class SmallSample:
    seconds: float
    daemon_cpu: float | None
    requests: dict[str, int]
    rss_kib: int | None = None


@dataclass
class SmallResult:
    label: str
    tool: str
    files: int
    copies: list[SmallSample] = field(default_factory=list)
    listings: list[SmallSample] = field(default_factory=list)
    names: list[SmallSample] = field(default_factory=list)  # cold `ls -f`: names only
    failed: str | None = None
    checked: str = ""


def make_small_tree(bench: Bench, files: int) -> Path:
    tree = bench.data_dir / f"small-{files}"
    if not tree.exists():
        tree.mkdir()
        for i in range(files):
            (tree / f"f{i:05d}").write_bytes(os.urandom(SMALL_SIZE))
    return tree


def requests_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def small_step(tool: FuseTool, argv: list[str], stdout: Any = subprocess.DEVNULL,
               settle: float = 1.0) -> SmallSample:
    """One command on a fresh mount: its wall time, the daemon's CPU and the requests the
    server saw (counted until `settle` s after the command: deferred writes included)."""
    bench = tool.bench
    with tool.mount() as m:
        before = bench.requests()
        exact = reset_hwm(m.pid)
        cpu0 = cpu_seconds(m.pid)
        done = check(run_timed([a.replace("MNT", str(m.mountpoint)) for a in argv],
                               stdout=stdout), f"{argv[0]} ({tool.name})")
        cpu1 = cpu_seconds(m.pid)
        time.sleep(settle)
        counted = requests_delta(bench.requests(), before)
        hwm = vm_hwm_kib(m.pid) if exact else None
    return SmallSample(done.seconds, delta(cpu1, cpu0), counted, hwm)


def run_small(bench: Bench, tools: list[Tool], where: str, files: int, runs: int,
              results: dict[str, SmallResult], label: str) -> None:
    """`cp -r` of `files` small files into a new directory, then a cold `ls -f` (names
    only) and a cold `ls -l` of it (each on a fresh mount), for every FUSE tool,
    interleaved."""
    bench.use(where)
    tree = make_small_tree(bench, files)
    expected = sorted((p.name, stat.filemode(p.stat().st_mode)) for p in tree.iterdir())
    mounts = [t for t in tools if isinstance(t, FuseTool)]
    for tool in mounts:
        key = f"{label}/{tool.name}"
        results[key] = SmallResult(label, tool.name, files)
        try:
            tool.prepare()
        except (Unavailable, BenchError, OSError, subprocess.SubprocessError) as exc:
            results[key].failed = f"not available: {exc}"
    for run_index in range(1, runs + 1):
        for tool in mounts:
            check_stop()
            result = results[f"{label}/{tool.name}"]
            if result.failed:
                continue
            name = f"tree-{re.sub(r'[^a-z0-9]+', '-', label)}-{run_index}"
            try:
                result.copies.append(small_step(tool, ["cp", "-r", str(tree), f"MNT/{name}"]))
                result.names.append(small_step(tool, ["ls", "-f", f"MNT/{name}"],
                                               settle=0.2))
                listing = tempfile.TemporaryFile()
                result.listings.append(small_step(tool, ["ls", "-l", f"MNT/{name}"],
                                                  stdout=listing, settle=0.2))
                listing.seek(0)
                lines = listing.read().decode().splitlines()[1:]
                listing.close()
                seen = sorted((line.split()[-1], line.split()[0]) for line in lines)
                result.checked = ("names and modes as copied" if seen == expected else
                                  f"DIFFERENT ({len(seen)} entries listed)")
                c, ls = result.copies[-1], result.listings[-1]
                f = result.names[-1]
                log(f"{label} run {run_index}/{runs} {tool.label}: cp -r {c.seconds:.2f} s "
                    f"({sum(c.requests.values())} requests), ls -f {f.seconds:.2f} s "
                    f"({sum(f.requests.values())} requests), ls -l {ls.seconds:.2f} s "
                    f"({sum(ls.requests.values())} requests)")
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                result.failed = f"run {run_index}: {exc}"
                log(f"{label} {tool.label}: FAILED: {exc}")



def measure_big(bench: Bench, tools: list[Tool], args: argparse.Namespace,
                results: dict[str, ToolResult], label: str) -> None:
    """Write then read the big file with every tool, `--runs` times, interleaved."""
    for tool in tools:
        result = results[tool.name] = ToolResult(tool.name, tool.label, tool.how(),
                                                 tool.measure_read)
        try:
            tool.prepare()
        except (Unavailable, BenchError, OSError, subprocess.SubprocessError) as exc:
            result.unavailable = str(exc)
            log(f"{label} {tool.label}: not available: {exc}")
    for run_index in range(1, args.runs + 1):
        for tool in tools:
            check_stop()
            result = results[tool.name]
            if result.unavailable or result.failed:
                continue
            try:
                w = tool.write()
                result.writes.append(w)
                r, _ = tool.read(verify=False)
                result.reads.append(r)
                log(f"{label} run {run_index}/{args.runs} {tool.label}: write "
                    f"{args.size / MiB / w.seconds:.1f} MiB/s ({w.parts} parts), read "
                    f"{args.size / MiB / r.seconds:.1f} MiB/s")
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                result.failed = f"run {run_index}: {exc}"
                log(f"{label} {tool.label}: FAILED: {exc}")
            finally:
                try:
                    bench.delete_object(tool.bucket)
                except Exception as exc:
                    log(f"could not delete s3://{tool.bucket}/{KEY}: {exc!r}")
