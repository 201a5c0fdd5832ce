"""The million-entry listing (`--million`): the daemon's memory and requests for `ls -lR` of
DIRS directories of FILES empty objects each (10 x 100,000 by default), made by nulls3 at
start-up (`--populate`), not by a million PutObjects; with `--million-distinct`, each object
has its own size, ETag and times, as a real tree has.

For each FUSE tool (s3mpfs unless `--tools` names others; s3fs and rclone mount HEAD or
stat every entry too, so they take as long or longer), on one fresh mount: a cold
`ls -lR`, then the same again (what a second walk costs where nothing changed), and on
another fresh mount `ls -f` of one directory (names only). Each step reports its wall
time, the requests the server saw, the daemon's peak RSS during the step (VmHWM, reset
before it) and its RSS after, and, for s3mpfs, the inodes and cached listing names it
holds (`s3mpfs status --json`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass

from .base import BenchError, Unavailable, check_stop, log
from .peers import all_tools
from .procs import Cleanup, check, reset_hwm, run_timed, vm_hwm_kib
from .server import Bench
from .steps import requests_delta
from .tools import FuseMount, FuseTool

LS_TIMEOUT = 6 * 3600.0


@dataclass
class MillionStep:
    tool: str
    step: str
    seconds: float
    entries: int
    requests: dict[str, int]
    hwm_mib: float | None
    rss_mib: float | None
    caches: str


def parse_shape(text: str) -> tuple[int, int]:
    dirs, _, files = text.partition("x")
    try:
        shape = int(dirs), int(files)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected DIRSxFILES, e.g. 10x100000") from None
    if min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both must be at least 1")
    return shape


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _caches(tool: FuseTool, m: FuseMount) -> str:
    """What the s3mpfs mount holds (its status), else nothing."""
    if tool.name != "s3mpfs":
        return ""
    done = subprocess.run([*tool.argv(str(m.mountpoint))[:3], "status", str(m.mountpoint),
                           "--json"], capture_output=True, env=tool.env(), timeout=60)
    try:
        mount = json.loads(done.stdout)["mount"]
    except (ValueError, KeyError):
        return ""
    return f"{mount.get('inodes', '?'):,} inodes, {mount.get('listed_names', '?'):,} names"


def _step(bench: Bench, tool: FuseTool, m: FuseMount, step: str, argv: list[str]) -> MillionStep:
    check_stop()
    before = bench.requests()
    exact = reset_hwm(m.pid)
    with tempfile.TemporaryFile() as out:
        done = check(run_timed(argv, stdout=out, timeout=LS_TIMEOUT), f"{step} ({tool.name})")
        out.seek(0)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: out.read(1 << 20), b""))
    time.sleep(0.2)  # the last answers counted
    counted = requests_delta(bench.requests(), before)
    hwm = vm_hwm_kib(m.pid) if exact else None
    result = MillionStep(tool.name, step, done.seconds, lines, counted,
                         hwm / 1024 if hwm else None, _rss_mib(m.pid), _caches(tool, m))
    log(f"million {tool.label} {step}: {result.seconds:.1f} s, {lines:,} lines, "
        f"{sum(counted.values()):,} requests {counted}, VmHWM {result.hwm_mib or 0:.0f} MiB, "
        f"VmRSS {result.rss_mib or 0:.0f} MiB {result.caches}")
    return result


def table(steps: list[MillionStep], dirs: int, files: int, distinct: bool = False) -> str:
    rows = [f"`ls -lR` of {dirs} directories of {files:,} objects ({dirs * files:,} entries) "
            f"on nulls3, loopback{', each its own' if distinct else ''}", "",
            "| tool | step | seconds | lines | requests | peak RSS (MiB) | RSS after (MiB) "
            "| held |", "|---|---|---:|---:|---|---:|---:|---|"]
    for s in steps:
        requests = ", ".join(f"{op} {n:,}" for op, n in sorted(s.requests.items()))
        rows.append(f"| {s.tool} | {s.step} | {s.seconds:.1f} | {s.entries:,} | {requests} | "
                    f"{s.hwm_mib or 0:.0f} | {s.rss_mib or 0:.0f} | {s.caches} |")
    return "\n".join(rows)


def run_million(args: argparse.Namespace, cleanup: Cleanup) -> int:
    dirs, files = args.million_shape
    bench = Bench(args, cleanup)
    wanted = (args.tools or "s3mpfs").split(",")
    tools = [t for t in all_tools(bench) if t.name in wanted and isinstance(t, FuseTool)]
    if not tools:
        raise SystemExit("--million measures FUSE tools: s3mpfs, s3fs, rclone-mount")
    kind = ":distinct" if args.million_distinct else ""
    populate = [f"bench-{t.name}/d{j}/:{files}{kind}" for t in tools for j in range(dirs)]
    log(f"nulls3 with {dirs} x {files:,} keys per tool ({len(tools)} tools){kind}")
    bench.start_nulls3(args.delay_ms, populate)
    steps: list[MillionStep] = []
    failed = False
    for tool in tools:
        try:
            tool.prepare()
            with tool.mount() as m:
                for step in ("ls -lR (cold)", "ls -lR (again)"):
                    steps.append(_step(bench, tool, m, step, ["ls", "-lR", str(m.mountpoint)]))
            with tool.mount() as m:
                steps.append(_step(bench, tool, m, "ls -f d0 (cold)",
                                   ["ls", "-f", str(m.mountpoint / "d0")]))
        except (Unavailable, BenchError, OSError, subprocess.SubprocessError) as exc:
            log(f"million {tool.label}: FAILED: {exc}")
            failed = True
    print(table(steps, dirs, files, args.million_distinct))
    return 1 if failed else 0
