"""The two benchmark runs, start to report: on the null server (default) and on moto."""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .base import KEY, REPO, BenchError, MiB, Unavailable, check_stop, log
from .commits import CommitResult, run_commits
from .facts import machine_facts, versions
from .moto_report import NOTE, write_report
from .null_report import write_null_report
from .peers import all_tools
from .plots import make_plots
from .procs import Cleanup
from .server import Bench
from .stats import fmt
from .steps import SmallResult, measure_big, run_small
from .tools import ToolResult

NULL_TOOLS = "s3mpfs,s3fs,rclone-mount,awscrt"


def command_line() -> str:
    """How this run was started, for the report's header: `scripts/bench.py ...` or
    `-m benchkit ...`, after the interpreter, paths relative to the repository."""
    python = (os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO))
              else sys.executable)
    script = Path(sys.argv[0]).resolve()
    entry = ["-m", "benchkit"] if script.name == "__main__.py" else [
        os.path.relpath(script, REPO)]
    return shlex.join([python, *entry, *sys.argv[1:]])


def run_null(args: argparse.Namespace, cleanup: Cleanup) -> int:
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    load_start = f"{os.getloadavg()[0]:.2f}"
    bench = Bench(args, cleanup)
    bench.make_source()
    bench.start_nulls3(args.delay_ms)
    tools = all_tools(bench)
    wanted = (args.tools or NULL_TOOLS).split(",")
    unknown = set(wanted) - {t.name for t in tools}
    if unknown:
        raise SystemExit(f"unknown tool(s): {', '.join(sorted(unknown))}")
    tools = [t for t in tools if t.name in wanted]
    small: dict[str, SmallResult] = {}
    big: dict[str, dict[str, ToolResult]] = {}
    if args.small_files:
        run_small(bench, tools, "http", args.small_files, args.runs, small, "loopback")
    if args.small_files_delay:
        run_small(bench, tools, "delay", args.small_files_delay, args.runs, small,
                  f"{args.delay_ms} ms round trip")
    commits: CommitResult | None = None
    if args.transactions:
        commits = run_commits(bench, tools, args.transactions, args.git_files, args.runs)
    for proto in args.protocols.split(","):
        if proto:
            bench.use(proto)
            big[proto] = {}
            measure_big(bench, tools, args, big[proto], proto)
    facts = machine_facts()
    command = command_line()
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    plots = make_plots(out.parent / "bench", bench.size, big, small)
    text = write_null_report(out, bench, big, small, facts, versions(), command, started,
                             time.monotonic() - t0, (load_start, f"{os.getloadavg()[0]:.2f}"),
                             plots, commits)
    print(text)
    log(f"wrote {out}")
    failed = [r for results in big.values() for r in results.values() if r.failed]
    return 1 if failed or any(r.failed and r.copies for r in small.values()) else 0



def run(args: argparse.Namespace, cleanup: Cleanup) -> int:
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    load_start = f"{os.getloadavg()[0]:.2f}"
    bench = Bench(args, cleanup)
    bench.make_source()
    bench.start_moto()

    tools = all_tools(bench)
    if args.tools:
        wanted = set(args.tools.split(","))
        unknown = wanted - {t.name for t in tools}
        if unknown:
            raise SystemExit(f"unknown tool(s): {', '.join(sorted(unknown))}; known: "
                             + ", ".join(t.name for t in tools))
        tools = [t for t in tools if t.name in wanted]
    results: dict[str, ToolResult] = {}
    for tool in tools:
        check_stop()
        result = results[tool.name] = ToolResult(tool.name, tool.label, tool.how(),
                                                 tool.measure_read)
        try:
            tool.prepare()
        except Unavailable as exc:
            result.unavailable = str(exc)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            result.unavailable = f"{type(exc).__name__}: {exc}"
        if result.unavailable:
            log(f"{tool.label}: not available: {result.unavailable}")

    for run_index in range(1, args.runs + 1):
        for tool in tools:
            check_stop()
            result = results[tool.name]
            if result.unavailable or result.failed:
                continue
            last = run_index == args.runs
            try:
                w = tool.write()
                result.writes.append(w)
                msg = (f"run {run_index}/{args.runs} {tool.label}: write "
                       f"{args.size / MiB / w.seconds:.1f} MiB/s, {w.parts} parts, "
                       f"peak RSS {fmt(w.rss_kib and w.rss_kib / 1024, '.0f')} MiB")
                if tool.measure_read or (last and args.verify):
                    r, verdict = tool.read(verify=last and args.verify)
                    if tool.measure_read:
                        result.reads.append(r)
                        msg += (f"; read {args.size / MiB / r.seconds:.1f} MiB/s, peak RSS "
                                f"{fmt(r.rss_kib and r.rss_kib / 1024, '.0f')} MiB")
                    if verdict:
                        result.verified = verdict
                        msg += f"; read-back {verdict}"
                log(msg)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                result.failed = f"run {run_index}: {exc}"
                log(f"{tool.label}: FAILED: {exc}")
            finally:
                try:
                    bench.delete_object(tool.bucket)
                except Exception as exc:  # the next write creates the object afresh anyway
                    log(f"could not delete s3://{tool.bucket}/{KEY}: {exc!r}")

    facts = machine_facts()
    moto_patch = ("This run used stock moto (--stock-moto): read figures are distorted."
                  if args.stock_moto else
                  "The server started by the script therefore serves a plain `Range: "
                  "bytes=A-B` GET by reading only that range from the stored object (a "
                  "small patch in the server process, `_patch_moto_ranges`), as S3 does.")
    note = NOTE.format(nproc=facts.get("nproc"), moto_patch=moto_patch)
    command = command_line()
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    text = write_report(out, bench, list(results.values()), facts, versions(), command,
                        started, time.monotonic() - t0, (load_start, f"{os.getloadavg()[0]:.2f}"),
                        note)
    print(text)
    log(f"wrote {out}")
    return 1 if any(r.failed for r in results.values()) else 0
